//! The sgc protocol (sub-protocol `esegece.com`): channels, publish and
//! subscribe, broadcast, acknowledgements, QoS, kept queues, transactions
//! and RPC.
//!
//! [`SgcProtocol`] is the shared, cloneable handle: it owns this node's hub
//! and hooks, turns client messages into hub operations ([`handler`]), and
//! lets server code publish and broadcast. When a cluster is attached it
//! also hands every local publication to a [`Relay`] and accepts remote
//! ones through [`SgcProtocol::deliver`]; nothing else here knows about
//! clustering.

pub mod channel;
pub mod handler;
pub mod hooks;
pub mod publication;
pub mod session;
pub mod settings;
pub mod wire;

use crate::sync;
use std::sync::{Arc, RwLock};

use serde_json::Value;

use crate::hub::Hub;
use crate::hub::kept::{KeptCursor, KeptEntry, KeptMeta, QueueLevel};
use crate::hub::outbox::Outgoing;
use crate::hub::subscriptions::InterestChange;
pub use hooks::{Client, PublishDecision, RpcError, SgcHooks};
pub use publication::{Barrier, KeptRecord, Kind, Publication, Relay};
pub use settings::{Qos, SgcSettings};

/// The sub-protocol token of the sgc protocol.
pub const SUBPROTOCOL: &str = "esegece.com";

/// A cheap, cloneable handle to the sgc protocol of one node.
#[derive(Clone)]
pub struct SgcProtocol {
    inner: Arc<Inner>,
}

struct Inner {
    settings: SgcSettings,
    hooks: SgcHooks,
    hub: Hub,
    relay: RwLock<Option<Arc<dyn Relay>>>,
}

impl SgcProtocol {
    /// A protocol with default settings and no hooks.
    pub fn new() -> Self {
        Self::with(SgcSettings::default(), SgcHooks::default())
    }

    /// A protocol with the given settings and hooks.
    pub fn with(settings: SgcSettings, hooks: SgcHooks) -> Self {
        let hub = Hub::new(settings.hub);
        let inner = Inner { settings, hooks, hub, relay: RwLock::new(None) };
        Self { inner: Arc::new(inner) }
    }

    /// The protocol's settings.
    pub fn settings(&self) -> &SgcSettings {
        &self.inner.settings
    }

    /// The hub holding this node's connections and subscriptions.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub(crate) fn hooks(&self) -> &SgcHooks {
        &self.inner.hooks
    }

    /// Publishes `message` on `channel` from server code, exactly as a
    /// client's `sgc@publish` would (without the before-publish hook).
    pub fn publish(&self, channel: &str, message: Value, queue: QueueLevel) {
        self.originate(Publication {
            id: new_id(),
            kind: Kind::Event,
            channel: Some(channel.into()),
            message,
            queue,
            at_us: publication::now_us(),
        });
    }

    /// Broadcasts `message` to every client, or to `channel`'s subscribers.
    pub fn broadcast(&self, message: Value, channel: Option<&str>) {
        self.originate(Publication {
            id: new_id(),
            kind: Kind::Broadcast,
            channel: channel.map(Into::into),
            message,
            queue: QueueLevel::None,
            at_us: publication::now_us(),
        });
    }

    /// Drops the kept events of `channel` on this node. Other nodes keep
    /// theirs, and this node pulls them again when one of them becomes
    /// live, so a queue is cleared for good only when cleared everywhere.
    pub fn clear_queue(&self, channel: &str) {
        self.inner.hub.clear_kept(channel);
    }

    /// Fans a publication out to this node's clients. The cluster calls this
    /// for publications made on other nodes.
    pub fn deliver(&self, p: &Publication) -> usize {
        let out = self.encode(p);
        let kept = (p.kind == Kind::Event && p.queue != QueueLevel::None).then(|| KeptMeta {
            id: p.id.clone(),
            at_us: p.at_us,
            level: p.queue,
        });

        let delivered = match &p.channel {
            Some(ch) => self.inner.hub.fan_out(ch, kept, out),
            None => self.inner.hub.fan_out_all(&out),
        };
        let kind = if p.kind == Kind::Event { "event" } else { "message" };
        metrics::counter!("wscluster_deliveries_total", "kind" => kind).increment(delivered as u64);
        delivered
    }

    /// Merges kept events another node holds into this node's kept queues,
    /// each encoded exactly as [`SgcProtocol::deliver`] would encode it,
    /// but sent to nobody now: they are for later subscribers (see
    /// [`crate::hub::kept::KeptQueues::merge`]). Returns how many this node
    /// did not hold and holds now.
    pub fn merge_kept(&self, records: Vec<KeptRecord>) -> usize {
        let mut added = 0;
        let mut records = records.into_iter().peekable();
        while let Some(first) = records.next() {
            // A page lists each channel's records together: merge them as one.
            let channel = first.channel.clone();
            let mut entries = vec![self.kept_entry(first)];
            while let Some(r) = records.next_if(|r| r.channel == channel) {
                entries.push(self.kept_entry(r));
            }
            added += self.inner.hub.merge_kept(&channel, entries).added;
        }
        added
    }

    /// A page of this node's kept events for another node, from `from`,
    /// of about `budget` bytes, and where the next page starts.
    pub fn kept_page(
        &self,
        from: &KeptCursor,
        budget: usize,
    ) -> (Vec<KeptRecord>, Option<KeptCursor>) {
        let page = self.inner.hub.kept_page(from, budget);
        let records = page
            .entries
            .into_iter()
            .filter_map(|(channel, entry)| {
                // The message is read back out of the frame rather than kept
                // a second time beside it: a kept event costs its bytes once.
                let message = wire::event_message(&entry.event.bytes)?;
                let KeptMeta { id, at_us, level } = entry.meta;
                Some(KeptRecord { channel, id, at_us, queue: level, message })
            })
            .collect();
        (records, page.next)
    }

    /// Connects this protocol to a cluster relay (see [`crate::cluster`]).
    pub fn set_relay(&self, relay: Option<Arc<dyn Relay>>) {
        *sync::write(&self.inner.relay) = relay;
    }

    /// Delivers locally, then relays to the cluster when one is attached.
    pub(crate) fn originate(&self, p: Publication) {
        self.deliver(&p);
        if let Some(relay) = self.relay() {
            relay.publish(&p);
        }
    }

    /// Tells the cluster that local interest changed; returns the barrier
    /// of the last change that has one.
    pub(crate) fn interest_changed(&self, changes: &[InterestChange]) -> Option<Barrier> {
        if changes.is_empty() {
            return None;
        }
        let relay = self.relay()?;
        let mut barrier = None;
        for change in changes {
            barrier = relay.interest_changed(change).or(barrier);
        }
        barrier
    }

    /// Encodes a publication once, with this node's settings (with
    /// server-to-client QoS the frame carries the id to acknowledge).
    fn encode(&self, p: &Publication) -> Outgoing {
        let ack_id = (self.inner.settings.qos != Qos::AtMostOnce).then(|| p.id.clone());
        let method = match p.kind {
            Kind::Event => "sgc@event",
            Kind::Broadcast => "sgc@message",
        };
        let channel = p.channel.as_deref().unwrap_or("");
        let bytes = wire::event(method, channel, &p.message, ack_id.as_ref());
        Outgoing { bytes, ack_id }
    }

    /// A record from another node as this node keeps it.
    fn kept_entry(&self, r: KeptRecord) -> KeptEntry {
        let p = Publication {
            id: r.id,
            kind: Kind::Event,
            channel: Some(r.channel),
            message: r.message,
            queue: r.queue,
            at_us: r.at_us,
        };
        let event = self.encode(&p);
        KeptEntry { meta: KeptMeta { id: p.id, at_us: p.at_us, level: p.queue }, event }
    }

    fn relay(&self) -> Option<Arc<dyn Relay>> {
        sync::read(&self.inner.relay).clone()
    }
}

impl Default for SgcProtocol {
    fn default() -> Self {
        Self::new()
    }
}

/// A fresh GUID, as the protocol uses for sessions and publications.
pub fn new_id() -> Arc<str> {
    uuid::Uuid::new_v4().to_string().into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use serde_json::json;

    /// What a new subscriber of `channel` is replayed, as JSON.
    fn replay(sgc: &SgcProtocol, channel: &str) -> Vec<Value> {
        let (conn, _tx, mut rx) = sgc.hub().register();
        sgc.hub().subscribe(conn, channel, Outgoing::new(Bytes::from_static(b"{}")));
        let _reply = rx.try_recv();
        std::iter::from_fn(|| rx.try_recv())
            .map(|o| serde_json::from_slice(&o.bytes).expect("json"))
            .collect()
    }

    #[test]
    fn kept_events_handed_to_another_node_replay_there_as_its_own() {
        let a = SgcProtocol::new();
        let settings = SgcSettings { qos: Qos::AtLeastOnce, ..SgcSettings::default() };
        let b = SgcProtocol::with(settings, SgcHooks::default());
        a.publish("k", json!("one"), QueueLevel::All);
        a.publish("k", json!({"two": [2]}), QueueLevel::All);
        a.publish("k", json!("not kept"), QueueLevel::None);

        let (records, next) = a.kept_page(&KeptCursor::default(), 1 << 20);
        assert!(next.is_none());
        assert_eq!(b.merge_kept(records.clone()), 2);
        assert_eq!(b.merge_kept(records.clone()), 0, "merging again adds nothing");

        let on_b = replay(&b, "k");
        let messages: Vec<&Value> = on_b.iter().map(|v| &v["result"]["message"]).collect();
        assert_eq!(messages, [&json!("one"), &json!({"two": [2]})]);
        // b encodes with its own settings: its QoS asks for acknowledgement.
        assert_eq!(on_b[0]["id"].as_str(), Some(&*records[0].id));
        assert!(replay(&a, "k")[0].get("id").is_none());
    }
}
