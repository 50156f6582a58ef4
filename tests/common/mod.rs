//! Shared helpers for the sgc integration tests.
//!
//! A server runs in-process on `127.0.0.1:0` through the library API
//! ([`TestServer`]), or as the real binary ([`Binary`]). [`Client`] is a
//! thin wrapper over a `tokio-websockets` client that speaks JSON and fails
//! the test, with a message saying what it waited for, instead of hanging:
//! every wait is bounded by [`TIMEOUT`]. Raw TCP helpers cover what a
//! well-behaved client cannot send (plain HTTP requests, refused handshakes).

// Each test crate compiles this module and uses a different subset of it.
#![allow(dead_code)]

mod binary;
mod client;
mod plain_http;

// Re-exported for the test crates, each of which uses only some of them.
#[allow(unused_imports)]
pub use binary::Binary;
#[allow(unused_imports)]
pub use client::{Client, Connect, Handshake};
#[allow(unused_imports)]
pub use plain_http::{HttpResponse, http_request};

use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};
use wscluster::server::{Server, ServerConfig, ServerHandle};
use wscluster::sgc::{SgcHooks, SgcProtocol, SgcSettings};

/// The longest any single wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How long "nothing arrives" is watched for. Long enough for a message
/// already decided to cross loopback, short enough to keep the suite fast.
pub const SILENCE_MS: u64 = 150;

/// A server started in-process on an OS-chosen port.
pub struct TestServer {
    handle: ServerHandle,
}

impl TestServer {
    /// A server with default settings and no hooks.
    pub async fn start() -> Self {
        Self::with(SgcSettings::default(), SgcHooks::default()).await
    }

    /// A server with the given protocol settings and hooks.
    pub async fn with(settings: SgcSettings, hooks: SgcHooks) -> Self {
        Self::with_config(config(), settings, hooks).await
    }

    /// A server with a custom server configuration (its `listen` is
    /// replaced by `127.0.0.1:0`).
    pub async fn with_config(config: ServerConfig, settings: SgcSettings, hooks: SgcHooks) -> Self {
        let config = ServerConfig { listen: SocketAddr::from(([127, 0, 0, 1], 0)), ..config };
        let handle = Server::new(config, SgcProtocol::with(settings, hooks))
            .start()
            .await
            .expect("server starts on port 0");
        Self { handle }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The protocol, for server-side publishing.
    pub fn sgc(&self) -> &SgcProtocol {
        self.handle.sgc()
    }

    /// A connected client whose session message was already read.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr()).await
    }

    /// Shuts the server down (clients are closed with 1001).
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}

/// The server configuration tests start from: short drain, default limits.
pub fn config() -> ServerConfig {
    ServerConfig { drain_timeout: Duration::from_secs(2), ..ServerConfig::default() }
}

/// A request without an id.
pub fn request(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// An `sgc@publish` without an id.
pub fn publish(channel: &str, message: &str) -> Value {
    request("sgc@publish", json!({"channel": channel, "message": message}))
}

/// The exact `sgc@event` a subscriber receives (server QoS 0).
pub fn event(channel: &str, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "result": {"method": "sgc@event", "channel": channel, "message": message}})
}

/// The exact `sgc@message` a broadcast delivers (server QoS 0).
pub fn broadcast_message(channel: &str, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "result": {"method": "sgc@message", "channel": channel, "message": message}})
}
