//! The WebSocket and HTTP server of one node.
//!
//! [`Server::start`] binds the listen address and serves, on that one
//! address, the WebSocket protocols and the HTTP endpoints (`/healthz`,
//! `/readyz`, `/cluster`). [`ServerHandle::shutdown`] stops accepting,
//! closes every client with 1001 and waits, bounded, for them to go.

pub mod accept;
pub mod api;
pub mod connection;
pub mod http;
pub mod metrics;
pub mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::hub::outbox::CloseReason;
use crate::presence::PresenceProtocol;
use crate::sgc::SgcProtocol;

/// How the server listens and what it accepts.
#[derive(Clone)]
pub struct ServerConfig {
    /// The WebSocket and HTTP listen address (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Largest WebSocket message accepted, in bytes; larger ones close the
    /// connection with 1009 (default 1 MiB).
    pub max_message_size: usize,
    /// Most open WebSocket connections; more are refused with HTTP 503.
    pub max_connections: usize,
    /// How long shutdown waits for clients to finish closing.
    pub drain_timeout: Duration,
    /// Key of the HTTP API; `None` turns the API off.
    pub api_key: Option<String>,
    /// Serve a plain echo instead of the protocols (conformance testing).
    pub echo: bool,
}

impl std::fmt::Debug for ServerConfig {
    // Written by hand so the API key never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerConfig")
            .field("listen", &self.listen)
            .field("max_message_size", &self.max_message_size)
            .field("max_connections", &self.max_connections)
            .field("drain_timeout", &self.drain_timeout)
            .field("api_key", &self.api_key.as_ref().map(|_| "***"))
            .field("echo", &self.echo)
            .finish()
    }
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_message_size: 1 << 20,
            max_connections: 100_000,
            drain_timeout: Duration::from_secs(5),
            api_key: None,
            echo: false,
        }
    }
}

/// What `/readyz` and `/cluster` report. A lone node is always ready; the
/// cluster supplies its own implementation.
pub trait Status: Send + Sync {
    /// Whether this node should receive traffic.
    fn ready(&self) -> bool;
    /// The JSON body of `/cluster`.
    fn describe(&self) -> Value;
    /// Other nodes currently linked or heard from.
    fn connected_peer_count(&self) -> usize {
        0
    }
    /// Channels with subscriber counts across the cluster; `None` when
    /// not clustered (the server then counts its own).
    fn channel_counts(&self) -> BoxFuture<'_, Option<crate::cluster::core::ChannelCounts>> {
        Box::pin(async { None })
    }
}

/// The status of a node that is not clustered.
pub struct Standalone;

impl Status for Standalone {
    fn ready(&self) -> bool {
        true
    }

    fn describe(&self) -> Value {
        json!({"node_id": null, "engine": "none", "ready": true, "connected_peer_count": 0, "peers": []})
    }
}

/// Shared by every request handler and connection task.
#[derive(Clone)]
pub struct AppState {
    pub(crate) sgc: SgcProtocol,
    pub(crate) presence: Option<PresenceProtocol>,
    pub(crate) status: Arc<dyn Status>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) max_message_size: usize,
    pub(crate) max_connections: usize,
    pub(crate) api_key: Option<std::sync::Arc<str>>,
    pub(crate) echo: bool,
}

/// A server about to start.
pub struct Server {
    config: ServerConfig,
    sgc: SgcProtocol,
    presence: Option<PresenceProtocol>,
    status: Arc<dyn Status>,
}

impl Server {
    /// A server speaking `sgc` with the given configuration.
    pub fn new(config: ServerConfig, sgc: SgcProtocol) -> Self {
        Self { config, sgc, presence: None, status: Arc::new(Standalone) }
    }

    /// Also serves the presence protocol, to clients that offer
    /// `presence.esegece.com`.
    pub fn with_presence(mut self, presence: PresenceProtocol) -> Self {
        self.presence = Some(presence);
        self
    }

    /// Reports readiness and cluster state from `status` (the cluster).
    pub fn with_status(mut self, status: Arc<dyn Status>) -> Self {
        self.status = status;
        self
    }

    /// Binds the listen address and starts serving.
    ///
    /// # Errors
    /// Fails when the address cannot be bound.
    pub async fn start(self) -> std::io::Result<ServerHandle> {
        let listener = TcpListener::bind(self.config.listen).await?;
        let local_addr = listener.local_addr()?;
        let shutdown = CancellationToken::new();
        let tasks = TaskTracker::new();
        // Install the recorder before traffic so no early count is lost.
        let _ = metrics::handle();

        let state = AppState {
            sgc: self.sgc.clone(),
            presence: self.presence.clone(),
            status: self.status,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            max_message_size: self.config.max_message_size,
            max_connections: self.config.max_connections,
            api_key: self.config.api_key.as_deref().map(Into::into),
            echo: self.config.echo,
        };
        let app = http::router(state);
        let join = tokio::spawn(accept::serve(listener, app, shutdown.clone()));

        info!(addr = %local_addr, "listening");
        Ok(ServerHandle {
            local_addr,
            sgc: self.sgc,
            presence: self.presence,
            shutdown,
            tasks,
            join,
            drain: self.config.drain_timeout,
        })
    }
}

/// A running server.
pub struct ServerHandle {
    local_addr: SocketAddr,
    sgc: SgcProtocol,
    presence: Option<PresenceProtocol>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    join: JoinHandle<()>,
    drain: Duration,
}

impl ServerHandle {
    /// The bound address (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The sgc protocol served.
    pub fn sgc(&self) -> &SgcProtocol {
        &self.sgc
    }

    /// The presence protocol served, if any.
    pub fn presence(&self) -> Option<&PresenceProtocol> {
        self.presence.as_ref()
    }

    /// Stops accepting, closes every client with 1001 and waits for their
    /// tasks, at most the drain timeout.
    pub async fn shutdown(self) {
        info!("shutting down");
        self.shutdown.cancel();
        self.sgc.hub().close_all(CloseReason::GoingAway);
        if let Some(presence) = &self.presence {
            presence.hub().close_all(CloseReason::GoingAway);
        }
        self.tasks.close();

        if tokio::time::timeout(self.drain, self.tasks.wait()).await.is_err() {
            warn!(remaining = self.tasks.len(), "drain timeout; dropping remaining connections");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.join).await;
    }
}
