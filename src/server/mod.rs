//! The WebSocket and HTTP server of one node.
//!
//! [`Server::start`] binds the listen address and serves, on that one
//! address, the WebSocket protocols and the HTTP endpoints (`/healthz`,
//! `/readyz`, `/cluster`). [`ServerHandle::shutdown`] stops accepting,
//! closes every client with 1001 and waits, bounded, for them to go.

pub mod connection;
pub mod http;
pub mod metrics;
pub mod upgrade;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::hub::outbox::CloseReason;
use crate::sgc::SgcProtocol;

/// How the server listens and what it accepts.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The WebSocket and HTTP listen address (default `127.0.0.1:8080`).
    pub listen: SocketAddr,
    /// Largest WebSocket message accepted, in bytes; larger ones close the
    /// connection with 1009 (default 1 MiB).
    pub max_message_size: usize,
    /// How long shutdown waits for clients to finish closing.
    pub drain_timeout: Duration,
    /// Serve a plain echo instead of the protocols (conformance testing).
    pub echo: bool,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_message_size: 1 << 20,
            drain_timeout: Duration::from_secs(5),
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
    pub(crate) status: Arc<dyn Status>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) tasks: TaskTracker,
    pub(crate) max_message_size: usize,
    pub(crate) echo: bool,
}

/// A server about to start.
pub struct Server {
    config: ServerConfig,
    sgc: SgcProtocol,
    status: Arc<dyn Status>,
}

impl Server {
    /// A server speaking `sgc` with the given configuration.
    pub fn new(config: ServerConfig, sgc: SgcProtocol) -> Self {
        Self { config, sgc, status: Arc::new(Standalone) }
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
            status: self.status,
            shutdown: shutdown.clone(),
            tasks: tasks.clone(),
            max_message_size: self.config.max_message_size,
            echo: self.config.echo,
        };
        let app = http::router(state).into_make_service_with_connect_info::<SocketAddr>();
        let listener = listener.tap_io(|tcp| {
            // Small messages must not wait for Nagle's algorithm.
            let _ = tcp.set_nodelay(true);
        });
        let stop = shutdown.clone();
        let join = tokio::spawn(async move {
            if let Err(e) =
                axum::serve(listener, app).with_graceful_shutdown(stop.cancelled_owned()).await
            {
                warn!(error = %e, "http server stopped with an error");
            }
        });

        info!(addr = %local_addr, "listening");
        Ok(ServerHandle {
            local_addr,
            sgc: self.sgc,
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

    /// Stops accepting, closes every client with 1001 and waits for their
    /// tasks, at most the drain timeout.
    pub async fn shutdown(self) {
        info!("shutting down");
        self.shutdown.cancel();
        self.sgc.hub().close_all(CloseReason::GoingAway);
        self.tasks.close();

        if tokio::time::timeout(self.drain, self.tasks.wait()).await.is_err() {
            warn!(remaining = self.tasks.len(), "drain timeout; dropping remaining connections");
        }
        let _ = tokio::time::timeout(Duration::from_secs(1), self.join).await;
    }
}
