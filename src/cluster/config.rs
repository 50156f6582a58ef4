//! Configuration of the cluster component, with its defaults.

use std::net::SocketAddr;
use std::time::Duration;

/// Which backplane carries traffic between nodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Engine {
    /// Nodes link to each other directly over TCP (nothing to install).
    #[default]
    Mesh,
    /// Redis Pub/Sub carries the traffic.
    Redis,
}

impl Engine {
    /// The name used in configuration and in `/cluster`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Mesh => "mesh",
            Self::Redis => "redis",
        }
    }
}

/// Everything a [`super::Cluster`] is configured with before it starts.
#[derive(Clone)]
pub struct ClusterConfig {
    /// The backplane engine.
    pub engine: Engine,
    /// This node's name; unique per live node. Generated when empty.
    pub node_id: String,
    /// Mesh: where this node accepts links (default `127.0.0.1:5410`).
    pub listen: SocketAddr,
    /// Mesh: the other nodes' link addresses (`host:port`).
    pub peers: Vec<String>,
    /// Shared secret every node proves (never sends) before it is trusted.
    pub secret: Option<String>,
    /// A peer silent this long is gone (default 3 s).
    pub failure_timeout: Duration,
    /// Redis: the URL (`redis://`, `rediss://`) of the server.
    pub redis_url: String,
    /// Redis: the Pub/Sub channel all nodes share.
    pub redis_channel: String,
    /// Largest message accepted on the backplane; matches the WebSocket
    /// maximum plus room for the envelope.
    pub max_message_size: usize,
    /// Frames queued per link before the link is dropped as stalled.
    pub link_queue: usize,
    /// Bytes queued per link (mesh) or for Redis before the link is dropped
    /// (mesh) or the frame is dropped (Redis); both are counted.
    pub link_queue_bytes: usize,
    /// Mesh: TLS on links, when set.
    pub tls: Option<super::mesh::tls::TlsFiles>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        Self {
            engine: Engine::Mesh,
            node_id: String::new(),
            listen: SocketAddr::from(([127, 0, 0, 1], 5410)),
            peers: Vec::new(),
            secret: None,
            failure_timeout: Duration::from_secs(3),
            redis_url: "redis://127.0.0.1:6379/".into(),
            redis_channel: "wscluster".into(),
            max_message_size: 1 << 20,
            link_queue: 65_536,
            link_queue_bytes: 64 << 20,
            tls: None,
        }
    }
}

impl std::fmt::Debug for ClusterConfig {
    // Written by hand so the secret can never reach a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("engine", &self.engine)
            .field("node_id", &self.node_id)
            .field("listen", &self.listen)
            .field("peers", &self.peers)
            .field("secret", &self.secret.as_ref().map(|_| "***"))
            .field("failure_timeout", &self.failure_timeout)
            .field("redis_channel", &self.redis_channel)
            .field("tls", &self.tls)
            .finish_non_exhaustive()
    }
}
