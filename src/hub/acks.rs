//! Server-to-client messages waiting for the client's acknowledgement.
//!
//! Both protocols can ask a client to acknowledge what it is sent (sgc QoS
//! 1/2, presence acknowledgements): the message carries an id, the client
//! answers with it, and until then the connection re-sends the message
//! every interval, giving up after a timeout. The set is bounded; a client
//! that lets it fill is not reading its acknowledgements and is closed as a
//! slow consumer by the caller. Time is passed in, never read here, so the
//! rules are tested without a clock.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

/// A message the client has not acknowledged yet.
struct Pending {
    bytes: Bytes,
    first_sent: Instant,
    last_sent: Instant,
}

/// The unacknowledged messages of one connection.
pub struct PendingAcks {
    limit: usize,
    pending: HashMap<Arc<str>, Pending>,
}

impl PendingAcks {
    /// An empty set holding at most `limit` messages.
    pub fn new(limit: usize) -> Self {
        Self { limit, pending: HashMap::new() }
    }

    /// Records a message sent with an id the client must acknowledge.
    /// False when too many are already waiting (the client is not acking).
    pub fn track(&mut self, id: Arc<str>, bytes: Bytes, now: Instant) -> bool {
        if !self.pending.contains_key(&id) && self.pending.len() >= self.limit {
            return false;
        }
        let entry = Pending { bytes, first_sent: now, last_sent: now };
        self.pending.entry(id).or_insert(entry);
        true
    }

    /// Clears a pending message on the client's acknowledgement.
    pub fn acknowledge(&mut self, id: &str) -> bool {
        self.pending.remove(id).is_some()
    }

    /// Messages due for a re-send at `now`, and how many older than
    /// `timeout` were given up (the caller counts them).
    pub fn due(
        &mut self,
        now: Instant,
        interval: Duration,
        timeout: Duration,
    ) -> (Vec<Bytes>, usize) {
        let before = self.pending.len();
        self.pending.retain(|_, p| now.duration_since(p.first_sent) < timeout);
        let expired = before - self.pending.len();

        let mut resend = Vec::new();
        for p in self.pending.values_mut() {
            if now.duration_since(p.last_sent) >= interval {
                p.last_sent = now;
                resend.push(p.bytes.clone());
            }
        }
        (resend, expired)
    }

    /// True when some message awaits acknowledgement.
    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unacknowledged_messages_are_resent_until_the_timeout() {
        let mut acks = PendingAcks::new(2);
        let t0 = Instant::now();
        let (i, to) = (Duration::from_secs(1), Duration::from_secs(3));
        assert!(acks.track("a".into(), Bytes::from_static(b"A"), t0));
        assert_eq!(acks.due(t0, i, to).0.len(), 0);
        assert_eq!(acks.due(t0 + i, i, to).0, vec![Bytes::from_static(b"A")]);
        assert_eq!(acks.due(t0 + to, i, to), (vec![], 1));
        assert!(acks.is_empty());
    }

    #[test]
    fn acknowledged_messages_are_not_resent_and_the_set_is_bounded() {
        let mut acks = PendingAcks::new(2);
        let t0 = Instant::now();
        assert!(acks.track("a".into(), Bytes::new(), t0));
        assert!(acks.track("b".into(), Bytes::new(), t0));
        assert!(!acks.track("c".into(), Bytes::new(), t0));
        assert!(acks.acknowledge("a"));
        assert!(acks.track("c".into(), Bytes::new(), t0));
    }
}
