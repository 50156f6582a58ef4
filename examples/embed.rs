//! Embedding wscluster as a library: an sgc server with application hooks.
//!
//! Run `cargo run --example embed [PORT]` (without a port the OS picks one;
//! the address is printed), connect any sgc client, and try:
//!
//! ```text
//! {"jsonrpc":"2.0","method":"sgc@subscribe","params":{"channel":"clock"}}
//! {"jsonrpc":"2.0","method":"time","id":"1"}
//! {"jsonrpc":"2.0","method":"sgc@subscribe","params":{"channel":"chat"}}
//! {"jsonrpc":"2.0","method":"sgc@publish","params":{"channel":"chat","message":"hi"}}
//! ```
//!
//! The server publishes the time on `clock` every few seconds (kept at
//! `queueLevel1`, so a new subscriber gets the latest tick at once), answers
//! the RPC method `time`, and wraps every `chat` message with its sender's
//! session id. Ctrl-C closes the clients with 1001 and exits.

use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::json;
use wscluster::hub::kept::QueueLevel;
use wscluster::server::{Server, ServerConfig};
use wscluster::sgc::{PublishDecision, RpcError, SgcHooks, SgcProtocol, SgcSettings};

/// How often the server publishes on `clock`.
const TICK: Duration = Duration::from_secs(5);

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let port: u16 = match std::env::args().nth(1) {
        Some(text) => text.parse().map_err(|e| format!("bad port {text:?}: {e}"))?,
        None => 0,
    };

    let sgc = SgcProtocol::with(SgcSettings::default(), hooks());
    let config =
        ServerConfig { listen: SocketAddr::from(([127, 0, 0, 1], port)), ..Default::default() };
    let handle = Server::new(config, sgc.clone()).start().await?;
    println!("listening ws://{}/", handle.local_addr());

    // Server-side publishing uses the same protocol handle as the clients.
    let clock = tokio::spawn(async move {
        let mut every = tokio::time::interval(TICK);
        loop {
            every.tick().await;
            sgc.publish("clock", json!(unix_seconds()), QueueLevel::Last);
        }
    });

    tokio::signal::ctrl_c().await?;
    clock.abort();
    handle.shutdown().await;
    Ok(())
}

/// The application's side of the protocol.
fn hooks() -> SgcHooks {
    SgcHooks::default()
        .rpc(|_client, method, _params| match method {
            "time" => Ok(json!(unix_seconds())),
            other => Err(RpcError::method_not_found(other)),
        })
        .before_publish(|client, channel, message| match channel {
            "chat" => PublishDecision::Rewrite(json!({
                "from": client.session_id.as_ref(),
                "text": message,
            })),
            _ => PublishDecision::Accept,
        })
        .on_connect(|client| println!("connected {} from {:?}", client.session_id, client.remote))
}

/// Seconds since the Unix epoch (0 if the clock is before it).
fn unix_seconds() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}
