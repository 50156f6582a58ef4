//! Per-connection protocol state of the sgc protocol.
//!
//! Open transactions, QoS 2 messages waiting for their release, and
//! server-to-client messages waiting for an acknowledgement. All of it is
//! bounded, and all of it dies with the connection. Time is passed in, never
//! read here, so the resend rules are tested without a clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::hooks::Client;
use super::wire::Request;
use crate::hub::acks::PendingAcks;
use crate::hub::subscriptions::ConnId;

/// Bounds on one connection's protocol state.
#[derive(Debug, Clone, Copy)]
pub struct SessionLimits {
    /// Messages one transaction may hold before further ones are refused.
    pub transaction_messages: usize,
    /// QoS 2 messages awaiting `sgc@pubrel`.
    pub qos2_pending: usize,
    /// Released QoS 2 ids remembered so a repeated release is ignored.
    pub qos2_remembered: usize,
    /// Server-to-client messages awaiting acknowledgement.
    pub pending_acks: usize,
}

/// The result of holding a message in a transaction.
#[derive(Debug, PartialEq, Eq)]
pub enum Hold {
    /// No transaction is open on that channel: process it now.
    NotHeld,
    /// Held until commit or rollback.
    Held,
    /// The transaction is full; the message is refused.
    Full,
}

/// Protocol state of one connection.
pub struct Session {
    /// The connection in the hub.
    pub conn: ConnId,
    /// Who the hooks are told about.
    pub client: Client,
    /// Set by a subscribe that created new cluster interest: the connection
    /// writes nothing more until the cluster has applied it, so a client
    /// holding its subscribe reply can rely on publications from any node.
    pub barrier: Option<super::Barrier>,
    limits: SessionLimits,
    transactions: HashMap<String, Vec<Request>>,
    qos2_pending: HashMap<String, Request>,
    qos2_released: HashSet<String>,
    qos2_released_order: VecDeque<String>,
    pending_acks: PendingAcks,
}

impl Session {
    /// Fresh state for a new connection.
    pub fn new(conn: ConnId, client: Client, limits: SessionLimits) -> Self {
        Self {
            conn,
            client,
            barrier: None,
            limits,
            transactions: HashMap::new(),
            qos2_pending: HashMap::new(),
            qos2_released: HashSet::new(),
            qos2_released_order: VecDeque::new(),
            pending_acks: PendingAcks::new(limits.pending_acks),
        }
    }

    /// Opens a transaction on `channel` (reopening one keeps what it holds).
    pub fn begin(&mut self, channel: &str) {
        self.transactions.entry(channel.to_owned()).or_default();
    }

    /// Closes the transaction on `channel` and returns what it held.
    pub fn end(&mut self, channel: &str) -> Vec<Request> {
        self.transactions.remove(channel).unwrap_or_default()
    }

    /// Holds `req` if a transaction is open on `channel`.
    pub fn hold(&mut self, channel: &str, req: &Request) -> Hold {
        let Some(held) = self.transactions.get_mut(channel) else {
            return Hold::NotHeld;
        };
        if held.len() >= self.limits.transaction_messages {
            return Hold::Full;
        }
        held.push(req.clone());
        Hold::Held
    }

    /// Keeps a QoS 2 publish until its release. False when the pending set
    /// is full (the publish is refused) or the id was already used.
    pub fn store_qos2(&mut self, id: String, req: Request) -> bool {
        if self.qos2_released.contains(&id) || self.qos2_pending.len() >= self.limits.qos2_pending {
            return false;
        }
        self.qos2_pending.entry(id).or_insert(req);
        true
    }

    /// Releases a QoS 2 message: returns it the first time only.
    pub fn release_qos2(&mut self, id: &str) -> Option<Request> {
        let req = self.qos2_pending.remove(id)?;
        self.qos2_released.insert(id.to_owned());
        self.qos2_released_order.push_back(id.to_owned());
        if self.qos2_released_order.len() > self.limits.qos2_remembered
            && let Some(old) = self.qos2_released_order.pop_front()
        {
            self.qos2_released.remove(&old);
        }
        Some(req)
    }

    /// Records a message sent with an id the client must acknowledge.
    /// False when too many are already waiting (the client is not acking).
    pub fn track(&mut self, id: Arc<str>, bytes: Bytes, now: Instant) -> bool {
        self.pending_acks.track(id, bytes, now)
    }

    /// Clears a pending message on the client's acknowledgement.
    pub fn acknowledge(&mut self, id: &str) -> bool {
        self.pending_acks.acknowledge(id)
    }

    /// Messages due for a re-send at `now`; those older than `timeout` are
    /// given up (and counted by the caller).
    pub fn due(
        &mut self,
        now: Instant,
        interval: Duration,
        timeout: Duration,
    ) -> (Vec<Bytes>, usize) {
        self.pending_acks.due(now, interval, timeout)
    }

    /// True when some message awaits acknowledgement.
    pub fn has_pending_acks(&self) -> bool {
        !self.pending_acks.is_empty()
    }

    /// The messages awaiting acknowledgement (for the connection loop).
    pub fn pending_acks(&mut self) -> &mut PendingAcks {
        &mut self.pending_acks
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn session() -> Session {
        let client = Client { session_id: "s".into(), remote: None };
        let limits = SessionLimits {
            transaction_messages: 2,
            qos2_pending: 2,
            qos2_remembered: 2,
            pending_acks: 2,
        };
        Session::new(1, client, limits)
    }

    fn req(n: u8) -> Request {
        Request { method: format!("m{n}"), params: Value::Null, id: None, qos: None }
    }

    #[test]
    fn a_transaction_holds_in_order_and_is_bounded() {
        let mut s = session();
        assert_eq!(s.hold("a", &req(0)), Hold::NotHeld);
        s.begin("a");
        assert_eq!(s.hold("a", &req(1)), Hold::Held);
        assert_eq!(s.hold("a", &req(2)), Hold::Held);
        assert_eq!(s.hold("a", &req(3)), Hold::Full);
        assert_eq!(s.end("a"), vec![req(1), req(2)]);
        assert_eq!(s.hold("a", &req(4)), Hold::NotHeld);
    }

    #[test]
    fn a_qos2_message_is_released_once() {
        let mut s = session();
        assert!(s.store_qos2("x".into(), req(1)));
        assert_eq!(s.release_qos2("x"), Some(req(1)));
        assert_eq!(s.release_qos2("x"), None);
        assert!(!s.store_qos2("x".into(), req(1)), "a released id cannot be reused");
    }
}
