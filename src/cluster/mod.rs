//! The cluster component: several nodes, one publish/subscribe space.
//!
//! A [`Cluster`] is configured, given the protocols to cluster with
//! [`Cluster::attach`], and started. From then on every publication made on
//! this node is relayed to the nodes that need it, and theirs arrive here.
//! The protocols only see the [`crate::sgc::Relay`] trait; which engine
//! carries the traffic ([`mesh`] or Redis) is this module's business.

pub mod config;
pub mod core;
pub mod dedup;
pub mod envelope;
pub mod events;
pub mod interest;
pub mod kept_sync;
pub mod liveness;
pub mod mesh;
pub mod pending;
pub mod queue;
pub mod redis;
pub mod relay;
pub mod transport;

use crate::sync;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::sync::broadcast;
use tracing::info;

pub use config::{ClusterConfig, Engine};

/// How long a cluster-wide query waits for the other nodes.
const QUERY_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);
pub use events::ClusterEvent;

use self::core::Core;
use self::redis::RedisEngine;
use self::relay::{CorePresenceRelay, CoreRelay};
use crate::presence::PresenceProtocol;
use crate::server::Status;
use crate::sgc::SgcProtocol;
use mesh::Mesh;
use transport::Transport;

/// A protocol that can be clustered.
#[derive(Clone)]
pub enum Protocol {
    /// The sgc protocol.
    Sgc(SgcProtocol),
    /// The presence protocol.
    Presence(PresenceProtocol),
}

impl From<&SgcProtocol> for Protocol {
    fn from(p: &SgcProtocol) -> Self {
        Self::Sgc(p.clone())
    }
}

impl From<&PresenceProtocol> for Protocol {
    fn from(p: &PresenceProtocol) -> Self {
        Self::Presence(p.clone())
    }
}

/// Why the cluster could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// The mesh link address could not be bound.
    #[error("cannot listen for mesh links on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// The mesh TLS material could not be loaded.
    #[error(transparent)]
    Tls(#[from] mesh::tls::TlsError),
    /// The Redis URL is not valid.
    #[error("invalid redis url: {0}")]
    RedisUrl(String),
    /// `start` was called twice.
    #[error("cluster already started")]
    AlreadyStarted,
}

enum Running {
    Mesh(Arc<Mesh>),
    Redis(Arc<RedisEngine>),
}

/// One node's membership in a cluster.
pub struct Cluster {
    config: ClusterConfig,
    core: Arc<Core>,
    attached: Mutex<Vec<Protocol>>,
    running: Mutex<Option<Running>>,
}

impl Cluster {
    /// A cluster member with `config`; nothing runs until [`Cluster::start`].
    pub fn new(mut config: ClusterConfig) -> Self {
        if config.node_id.is_empty() {
            config.node_id = format!("node-{}", &uuid::Uuid::new_v4().simple().to_string()[..8]);
        }
        let core = Arc::new(Core::new(config.node_id.as_str().into(), config.max_message_size));
        Self { config, core, attached: Mutex::default(), running: Mutex::default() }
    }

    /// This node's id.
    pub fn node_id(&self) -> &str {
        &self.config.node_id
    }

    /// The engine in use.
    pub fn engine(&self) -> Engine {
        self.config.engine
    }

    /// Clusters `protocol`: its traffic reaches every node. Attaching a
    /// protocol while the cluster runs announces its state to the peers.
    pub fn attach(&self, protocol: impl Into<Protocol>) {
        let protocol = protocol.into();
        match &protocol {
            Protocol::Sgc(sgc) => {
                self.core.set_sgc(Some(sgc.clone()));
                sgc.set_relay(Some(Arc::new(CoreRelay(self.core.clone()))));
            }
            Protocol::Presence(presence) => {
                self.core.set_presence(Some(presence.clone()));
                presence.set_relay(Some(Arc::new(CorePresenceRelay(self.core.clone()))));
            }
        }
        sync::lock(&self.attached).push(protocol);
        if self.transport().is_some() {
            self.core.announce(None);
        }
    }

    /// Returns `protocol` to single-node behaviour: it stops relaying and
    /// stops receiving from the other nodes.
    pub fn detach(&self, protocol: impl Into<Protocol>) {
        let protocol = protocol.into();
        match &protocol {
            Protocol::Sgc(sgc) => {
                sgc.set_relay(None);
                self.core.set_sgc(None);
            }
            Protocol::Presence(presence) => {
                presence.set_relay(None);
                self.core.set_presence(None);
                // The other nodes' members are no longer ours to show.
                for peer in self.core.live_peers() {
                    presence.remove_node(&peer);
                }
            }
        }
        let same = |p: &Protocol| std::mem::discriminant(p) == std::mem::discriminant(&protocol);
        sync::lock(&self.attached).retain(|p| !same(p));
    }

    /// Brings the backplane up.
    ///
    /// # Errors
    /// When the engine cannot start (address in use, engine unavailable).
    pub async fn start(&self) -> Result<(), ClusterError> {
        if sync::lock(&self.running).is_some() {
            return Err(ClusterError::AlreadyStarted);
        }
        let running = match self.config.engine {
            Engine::Mesh => {
                let tls = match &self.config.tls {
                    Some(files) => Some(mesh::tls::LinkTls::load(files)?),
                    None => None,
                };
                let mesh = Mesh::start(self.core.clone(), self.config.clone(), tls)
                    .await
                    .map_err(|source| ClusterError::Listen { addr: self.config.listen, source })?;
                let mesh = Arc::new(mesh);
                self.core.set_transport(Some(mesh.clone()));
                Running::Mesh(mesh)
            }
            Engine::Redis => {
                let engine = RedisEngine::start(self.core.clone(), self.config.clone())
                    .map_err(|e| ClusterError::RedisUrl(e.to_string()))?;
                let engine = Arc::new(engine);
                self.core.set_transport(Some(engine.clone()));
                Running::Redis(engine)
            }
        };
        *sync::lock(&self.running) = Some(running);
        info!(node = %self.config.node_id, engine = self.config.engine.as_str(), "cluster started");
        Ok(())
    }

    /// Leaves the cluster because the process is exiting: like
    /// [`Cluster::stop`], but this node's own presence clients, about to be
    /// closed, are not sent removal notices for the other nodes' members
    /// (who have not gone anywhere).
    pub async fn shutdown(&self) {
        self.core.set_quiet_exit();
        self.stop().await;
    }

    /// Tells the other nodes this node is leaving and brings the backplane
    /// down; the WebSocket server keeps running, and presence falls back to
    /// this node's own members (the others' are removed, with notices).
    pub async fn stop(&self) {
        let running = sync::lock(&self.running).take();
        match running {
            Some(Running::Mesh(mesh)) => mesh.stop().await,
            Some(Running::Redis(engine)) => engine.stop().await,
            None => return,
        }
        self.core.set_transport(None);
        info!(node = %self.config.node_id, "cluster stopped");
    }

    /// The mesh link address actually bound (useful with port 0).
    pub fn mesh_addr(&self) -> Option<SocketAddr> {
        match &*sync::lock(&self.running) {
            Some(Running::Mesh(m)) => Some(m.local_addr()),
            _ => None,
        }
    }

    /// True when the backplane is up and relaying.
    pub fn ready(&self) -> bool {
        self.transport().is_some_and(|t| t.ready())
    }

    /// Other nodes currently linked or heard from.
    pub fn connected_peer_count(&self) -> usize {
        self.transport().map_or(0, |t| t.connected_peer_count())
    }

    /// A stream of cluster events; every call gets its own receiver. A
    /// receiver that falls more than 1,024 events behind loses the oldest
    /// (`RecvError::Lagged` tells it so).
    pub fn events(&self) -> broadcast::Receiver<ClusterEvent> {
        self.core.subscribe_events()
    }

    fn transport(&self) -> Option<Arc<dyn Transport>> {
        match &*sync::lock(&self.running) {
            Some(Running::Mesh(m)) => Some(m.clone() as Arc<dyn Transport>),
            Some(Running::Redis(r)) => Some(r.clone() as Arc<dyn Transport>),
            None => None,
        }
    }
}

impl Status for Cluster {
    fn ready(&self) -> bool {
        Cluster::ready(self)
    }

    fn connected_peer_count(&self) -> usize {
        Cluster::connected_peer_count(self)
    }

    fn channel_counts(&self) -> BoxFuture<'_, Option<crate::cluster::core::ChannelCounts>> {
        Box::pin(async { Some(self.core.channel_counts(QUERY_TIMEOUT).await) })
    }

    fn describe(&self) -> Value {
        let peers: Vec<Value> = self
            .transport()
            .map(|t| t.peers())
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let interest = p.id.as_deref().map_or(0, |id| self.core.interest_count(id));
                json!({"id": p.id, "address": p.address, "state": p.state, "interest": interest})
            })
            .collect();
        json!({
            "node_id": self.config.node_id,
            "engine": self.config.engine.as_str(),
            "ready": self.ready(),
            "connected_peer_count": self.connected_peer_count(),
            "peers": peers,
        })
    }
}
