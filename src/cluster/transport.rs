//! The backplane abstraction: how encoded envelopes reach other nodes.
//!
//! The cluster core decides what to send and to whom; a transport (Mesh or
//! Redis) only moves bytes and reports who is reachable. Protocol code never
//! sees a transport.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;

/// Which nodes an envelope is for.
#[derive(Debug, Clone, Copy)]
pub enum Target<'a> {
    /// Every other node.
    All,
    /// Only these nodes (a transport that cannot address nodes sends to all,
    /// and receivers ignore what they have no interest in).
    Nodes(&'a [Arc<str>]),
}

/// One peer as shown in `/cluster`.
#[derive(Debug, Clone, Serialize)]
pub struct PeerStatus {
    /// The peer's node id, once known.
    pub id: Option<Arc<str>>,
    /// The peer's link address (Mesh) or `redis` (Redis).
    pub address: String,
    /// `connected`, `connecting` or `refused`.
    pub state: &'static str,
}

/// A running backplane engine.
pub trait Transport: Send + Sync {
    /// Sends one encoded envelope.
    fn send(&self, target: Target<'_>, frame: Bytes);
    /// Peers and their states.
    fn peers(&self) -> Vec<PeerStatus>;
    /// Peers currently linked or heard from.
    fn connected_peer_count(&self) -> usize;
    /// Whether the engine is up and relaying.
    fn ready(&self) -> bool;
    /// Gossip: the origin knows these peers (Mesh dials the new ones).
    fn learn_peers(&self, _peers: &[(Arc<str>, String)]) {}
}
