//! Duplicate and echo suppression for sequenced envelopes.
//!
//! Each origin's sequence numbers rise by one per envelope it makes; a
//! receiver sees a rising subsequence (routing skips envelopes it does not
//! need). So an envelope whose number is not above the last one seen from
//! the same incarnation is a duplicate. A new incarnation starts afresh.

use std::collections::HashMap;
use std::sync::Arc;

/// The verdict on one received envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Deliver it.
    Fresh,
    /// This node made it; drop it (loop prevention).
    Own,
    /// Already seen, or from an incarnation older than the current one.
    Duplicate,
}

/// Last sequence seen per origin.
pub struct Dedup {
    me: Arc<str>,
    seen: HashMap<Arc<str>, (u64, u64)>,
}

impl Dedup {
    /// A tracker for node `me`.
    pub fn new(me: Arc<str>) -> Self {
        Self { me, seen: HashMap::new() }
    }

    /// Judges an envelope from `origin`/`incarnation` numbered `seq`.
    /// Incarnations are start times, so a larger one is a newer process.
    pub fn check(&mut self, origin: &Arc<str>, incarnation: u64, seq: u64) -> Verdict {
        if **origin == *self.me {
            return Verdict::Own;
        }
        if seq == 0 {
            return Verdict::Fresh;
        }
        let entry = self.seen.entry(origin.clone()).or_insert((incarnation, 0));
        if incarnation < entry.0 {
            return Verdict::Duplicate;
        }
        if incarnation > entry.0 {
            *entry = (incarnation, 0);
        }
        if seq <= entry.1 {
            return Verdict::Duplicate;
        }
        entry.1 = seq;
        Verdict::Fresh
    }

    /// Forgets an origin that left.
    pub fn forget(&mut self, origin: &str) {
        self.seen.remove(origin);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_messages_and_repeats_are_dropped() {
        let mut d = Dedup::new("a".into());
        let b: Arc<str> = "b".into();
        assert_eq!(d.check(&"a".into(), 1, 1), Verdict::Own);
        assert_eq!(d.check(&b, 1, 1), Verdict::Fresh);
        assert_eq!(d.check(&b, 1, 5), Verdict::Fresh, "gaps are normal with routing");
        assert_eq!(d.check(&b, 1, 5), Verdict::Duplicate);
        assert_eq!(d.check(&b, 1, 3), Verdict::Duplicate);
    }

    #[test]
    fn a_restarted_node_is_fresh_and_its_old_self_is_stale() {
        let mut d = Dedup::new("a".into());
        let b: Arc<str> = "b".into();
        assert_eq!(d.check(&b, 1, 100), Verdict::Fresh);
        assert_eq!(d.check(&b, 2, 1), Verdict::Fresh);
        assert_eq!(d.check(&b, 1, 101), Verdict::Duplicate);
    }
}
