//! Cluster events that applications can observe.

use std::sync::Arc;

/// Something that happened in the cluster, as seen from this node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClusterEvent {
    /// A peer node is now linked (Mesh) or heard from (Redis).
    PeerConnected {
        /// The peer's node id.
        node_id: Arc<str>,
    },
    /// A peer node is gone.
    PeerDisconnected {
        /// The peer's node id.
        node_id: Arc<str>,
        /// Why: `left`, `heartbeat timeout`, `link closed: ...`.
        reason: String,
    },
    /// A message arrived from another node.
    Message {
        /// The node that made it.
        origin: Arc<str>,
        /// Its kind (`publication`, `interest`, ...).
        kind: &'static str,
    },
    /// `ready()` changed.
    ReadyChanged {
        /// The new value.
        ready: bool,
    },
}
