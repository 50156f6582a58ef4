//! A publication: what one publish or broadcast produces.
//!
//! The same value is fanned out locally and, when a cluster is attached,
//! handed to the relay that carries it to the other nodes, where it is fanned
//! out again. It owns its message as JSON so any node can encode it.
//! A [`KeptRecord`] is a kept event as one node hands it to another that
//! (re)joined the cluster.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::hub::kept::QueueLevel;
use crate::hub::subscriptions::InterestChange;

/// Whether the publication is a channel event or a broadcast.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Kind {
    /// `sgc@publish`: subscribers of the channel get `sgc@event`.
    Event,
    /// `sgc@broadcast`: everyone (or the channel's subscribers) gets `sgc@message`.
    Broadcast,
}

/// One publish or broadcast, as fanned out and as relayed.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Publication {
    /// A GUID naming this publication cluster-wide; also the id clients
    /// acknowledge when server-to-client QoS is on.
    pub id: Arc<str>,
    /// Event or broadcast.
    pub kind: Kind,
    /// The channel; `None` only for a broadcast to everyone.
    pub channel: Option<Arc<str>>,
    /// The message, carried through unchanged.
    pub message: Value,
    /// The kept-queue level (events only).
    #[serde(with = "queue_level")]
    pub queue: QueueLevel,
    /// When it was made, in origin wall-clock microseconds ([`now_us`]):
    /// the order in which nodes merge their kept queues. 0 from a node
    /// that predates it, which merges such entries first.
    #[serde(default)]
    pub at_us: u64,
}

/// A kept event as one node sends it to another. The receiver encodes
/// it with its own settings, as if the publication had reached it live.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeptRecord {
    /// The channel it is kept on.
    pub channel: Arc<str>,
    /// The publication id.
    pub id: Arc<str>,
    /// When the publication was made (see [`Publication::at_us`]).
    pub at_us: u64,
    /// `queueLevel1` or `queueLevel2`.
    #[serde(with = "queue_level")]
    pub queue: QueueLevel,
    /// The message.
    pub message: Value,
}

/// Microseconds since the Unix epoch, for [`Publication::at_us`]; strictly
/// increasing within the process, so two publications of one node never
/// tie and merged queues keep the order in which that node made them.
pub fn now_us() -> u64 {
    static LAST: AtomicU64 = AtomicU64::new(0);
    let wall = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64);
    let previous = LAST.fetch_max(wall, Ordering::AcqRel);
    if previous < wall {
        return wall;
    }
    // The clock has not moved on (or went back): one past the last stamp.
    LAST.fetch_add(1, Ordering::AcqRel) + 1
}

/// Where publications go beyond this node. The cluster implements it; the
/// protocol never learns which engine is behind it.
pub trait Relay: Send + Sync {
    /// Sends a locally made publication to the nodes that need it.
    fn publish(&self, publication: &Publication);
    /// This node's local interest in a channel or pattern changed. For a
    /// new interest the relay may return a barrier that resolves once every
    /// linked node routes the name here; the subscriber's reply waits for it.
    fn interest_changed(&self, change: &InterestChange) -> Option<Barrier>;
}

/// Resolves when the cluster has applied an interest change.
pub type Barrier = tokio::sync::oneshot::Receiver<()>;

mod queue_level {
    use super::QueueLevel;
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(level: &QueueLevel, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(level.as_str())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<QueueLevel, D::Error> {
        let text = String::deserialize(d)?;
        QueueLevel::parse(&text).ok_or_else(|| serde::de::Error::custom("unknown queue level"))
    }
}
