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
use crate::hub::kept::QueueLevel;
use crate::hub::outbox::Outgoing;
use crate::hub::subscriptions::InterestChange;
pub use hooks::{Client, PublishDecision, RpcError, SgcHooks};
pub use publication::{Barrier, Kind, Publication, Relay};
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
        });
    }

    /// Drops the kept events of `channel` on this node.
    pub fn clear_queue(&self, channel: &str) {
        self.inner.hub.clear_kept(channel);
    }

    /// Fans a publication out to this node's clients. The cluster calls this
    /// for publications made on other nodes.
    pub fn deliver(&self, p: &Publication) -> usize {
        let ack_id = (self.inner.settings.qos != Qos::AtMostOnce).then(|| p.id.clone());
        let (method, channel) = match p.kind {
            Kind::Event => ("sgc@event", p.channel.as_deref().unwrap_or("")),
            Kind::Broadcast => ("sgc@message", p.channel.as_deref().unwrap_or("")),
        };
        let bytes = wire::event(method, channel, &p.message, ack_id.as_ref());
        let out = Outgoing { bytes, ack_id };

        let delivered = match (&p.kind, &p.channel) {
            (Kind::Event, Some(ch)) => self.inner.hub.fan_out(ch, p.queue, out),
            (Kind::Broadcast, Some(ch)) => self.inner.hub.fan_out(ch, QueueLevel::None, out),
            (_, None) => self.inner.hub.fan_out_all(&out),
        };
        let kind = if p.kind == Kind::Event { "event" } else { "message" };
        metrics::counter!("wscluster_deliveries_total", "kind" => kind).increment(delivered as u64);
        delivered
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
