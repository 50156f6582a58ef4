//! Shared helpers for the presence integration tests.
//!
//! A server runs in-process on `127.0.0.1:0` through the library API, with
//! the presence protocol served beside sgc ([`Server`]). [`Client`] is a
//! `tokio-websockets` client offering `presence.esegece.com` that speaks
//! JSON and fails the test, saying what it waited for, instead of hanging:
//! every wait is bounded by [`TIMEOUT`].

// Each test crate compiles this module and uses a different subset of it.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, header};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};
use wscluster::presence::{PresenceHooks, PresenceProtocol, PresenceSettings};
use wscluster::server::{Server as WsServer, ServerConfig, ServerHandle};
use wscluster::sgc::SgcProtocol;

/// The longest any single wait may take before the test fails.
pub const TIMEOUT: Duration = Duration::from_secs(5);

/// How long "nothing arrives" is watched for: long enough for a message
/// already decided to cross loopback, short enough to keep the suite fast.
pub const SILENCE: Duration = Duration::from_millis(150);

/// The presence sub-protocol token.
pub const PRESENCE: &str = "presence.esegece.com";

/// A server serving sgc and presence, in-process on an OS-chosen port.
pub struct Server {
    handle: ServerHandle,
}

impl Server {
    /// Default settings, no hooks.
    pub async fn start() -> Self {
        Self::with(PresenceSettings::default(), PresenceHooks::default()).await
    }

    /// The given presence settings and hooks.
    pub async fn with(settings: PresenceSettings, hooks: PresenceHooks) -> Self {
        Self::serving(PresenceProtocol::with(settings, hooks)).await
    }

    /// Serves an existing protocol handle (to drive it from the test too).
    pub async fn serving(presence: PresenceProtocol) -> Self {
        let config = ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            drain_timeout: Duration::from_secs(2),
            ..ServerConfig::default()
        };
        let handle = WsServer::new(config, SgcProtocol::new())
            .with_presence(presence)
            .start()
            .await
            .expect("server starts on port 0");
        Self { handle }
    }

    /// The bound address.
    pub fn addr(&self) -> SocketAddr {
        self.handle.local_addr()
    }

    /// The presence protocol served.
    pub fn presence(&self) -> &PresenceProtocol {
        self.handle.presence().expect("presence is served")
    }

    /// A connected client whose session message was read.
    pub async fn client(&self) -> Client {
        Client::connect(self.addr()).await
    }

    /// A connected client registered as member `id` (its own `member@new`
    /// notice already read).
    pub async fn member(&self, id: &str) -> Client {
        let mut c = self.client().await;
        c.register(id).await;
        c
    }

    /// Shuts the server down (clients are closed with 1001).
    pub async fn shutdown(self) {
        self.handle.shutdown().await;
    }
}

/// The handshake response of a WebSocket connection.
pub type Handshake = tokio_websockets::upgrade::Response;

/// A WebSocket client speaking presence JSON.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// The session id from the session message (empty until read).
    pub session_id: String,
}

impl Client {
    /// Connects offering `presence.esegece.com` and reads the session.
    pub async fn connect(addr: SocketAddr) -> Self {
        let (mut c, response) = Self::open(addr, Some(PRESENCE)).await.expect("handshake");
        let chosen = response.headers().get(header::SEC_WEBSOCKET_PROTOCOL);
        assert_eq!(chosen.and_then(|v| v.to_str().ok()), Some(PRESENCE));
        c.read_session().await;
        c
    }

    /// Opens a connection offering `protocols`, reading nothing.
    ///
    /// # Errors
    /// The client's error when the handshake fails.
    pub async fn open(
        addr: SocketAddr,
        protocols: Option<&'static str>,
    ) -> Result<(Self, Handshake), tokio_websockets::Error> {
        let tcp = TcpStream::connect(addr).await?;
        let mut builder = ClientBuilder::new().uri(&format!("ws://{addr}/")).expect("valid uri");
        if let Some(p) = protocols {
            let value = HeaderValue::from_static(p);
            builder = builder.add_header(header::SEC_WEBSOCKET_PROTOCOL, value)?;
        }
        let (ws, response) =
            timeout(TIMEOUT, builder.connect_on(tcp)).await.expect("handshake in time")?;
        Ok((Self { ws, session_id: String::new() }, response))
    }

    /// Reads the session message and keeps its id.
    pub async fn read_session(&mut self) -> Value {
        let v = self.expect("sgc@presence@session").await;
        self.session_id = v["message"]["text"].as_str().expect("session id").to_owned();
        v
    }

    /// Sends one frame.
    pub async fn send_frame(&mut self, msg: Message) {
        timeout(TIMEOUT, self.ws.send(msg)).await.expect("send in time").expect("send");
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send_frame(Message::text(text.to_owned())).await;
    }

    /// Sends a JSON value.
    pub async fn send(&mut self, v: Value) {
        self.send_text(&v.to_string()).await;
    }

    /// The next text frame, parsed. Panics on close, error or timeout.
    pub async fn recv(&mut self) -> Value {
        loop {
            let next = timeout(TIMEOUT, self.ws.next()).await.expect("a message in time");
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => panic!("connection failed while waiting: {e}"),
                None => panic!("connection ended while waiting for a message"),
            };
            if let Some((code, reason)) = msg.as_close() {
                panic!("closed with {} {reason:?} while waiting", u16::from(code));
            }
            if let Some(text) = msg.as_text() {
                return serde_json::from_str(text)
                    .unwrap_or_else(|e| panic!("not json ({e}): {text}"));
            }
        }
    }

    /// The next message, asserting its method.
    pub async fn expect(&mut self, method: &str) -> Value {
        let v = self.recv().await;
        assert_eq!(v["method"], method, "expected {method}: {v}");
        assert_eq!(v["jsonrpc"], "2.0", "{v}");
        v
    }

    /// The next message, asserting it is a refusal with `code`.
    pub async fn expect_error(&mut self, code: i64) -> Value {
        let v = self.expect("sgc@presence@error@member@channel").await;
        assert_eq!(v["error"]["code"], code, "expected error {code}: {v}");
        assert!(v["error"]["text"].as_str().is_some_and(|t| !t.is_empty()), "{v}");
        v
    }

    /// Asserts that nothing arrives for [`SILENCE`].
    pub async fn expect_silence(&mut self) {
        if let Ok(next) = timeout(SILENCE, self.ws.next()).await {
            let shown = match next {
                Some(Ok(m)) => m.as_text().map_or_else(|| format!("{m:?}"), str::to_owned),
                Some(Err(e)) => format!("error {e}"),
                None => "end of stream".to_owned(),
            };
            panic!("expected silence, got {shown}");
        }
    }

    /// Reads until the server's close frame and asserts its code.
    pub async fn expect_close(&mut self, code: u16) {
        loop {
            let next = timeout(TIMEOUT, self.ws.next()).await.expect("a close frame in time");
            match next {
                Some(Ok(msg)) => {
                    if let Some((got, reason)) = msg.as_close() {
                        assert_eq!(u16::from(got), code, "close code (reason {reason:?})");
                        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
                        let _ = timeout(TIMEOUT, drain).await;
                        return;
                    }
                }
                Some(Err(e)) => panic!("expected close {code}, got error {e}"),
                None => panic!("expected close {code}, got end of stream"),
            }
        }
    }

    /// Closes cleanly and waits for the closing handshake to finish.
    pub async fn close(mut self) {
        let _ = timeout(TIMEOUT, self.ws.close()).await;
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        timeout(TIMEOUT, drain).await.expect("close handshake in time");
    }

    /// Registers as member `id` (name `<id> name`, info `<id> info`) and
    /// reads its own `member@new`.
    pub async fn register(&mut self, id: &str) -> Value {
        self.send(request("sgc@presence@member@new", json!({"member": member(id)}))).await;
        let v = self.expect("sgc@presence@member@new").await;
        assert_eq!(v["member"], member(id), "{v}");
        v
    }

    /// Joins `channel` as member `id` and reads its own notice.
    pub async fn join(&mut self, id: &str, channel: &str) -> Value {
        self.send(join(id, channel)).await;
        let v = self.expect("sgc@presence@channel@member@new").await;
        assert_eq!(v["channel"], json!({"name": channel}), "{v}");
        assert_eq!(v["member"]["id"], id, "{v}");
        v
    }

    /// Asks for the members of `channel` (every member when `None`) and
    /// returns their ids in the order sent.
    pub async fn member_ids(&mut self, channel: Option<&str>) -> Vec<String> {
        let mut fields = json!({});
        if let Some(c) = channel {
            fields["channel"] = json!({"name": c});
        }
        self.send(request("sgc@presence@get@members", fields)).await;
        let v = self.expect("sgc@presence@send@members").await;
        let list = v["members"].as_array().expect("members array");
        list.iter().map(|m| m["id"].as_str().expect("id").to_owned()).collect()
    }
}

/// A presence message: `method` plus the top-level keys of `fields`.
pub fn request(method: &str, fields: Value) -> Value {
    let mut v = json!({"jsonrpc": "2.0", "method": method});
    if let Value::Object(extra) = fields {
        for (k, val) in extra {
            v[k] = val;
        }
    }
    v
}

/// The member object the helpers register for `id`.
pub fn member(id: &str) -> Value {
    json!({"id": id, "name": format!("{id} name"), "info": format!("{id} info")})
}

/// A `channel@member@new` for member `id`.
pub fn join(id: &str, channel: &str) -> Value {
    request(
        "sgc@presence@channel@member@new",
        json!({"member": {"id": id}, "channel": {"name": channel}}),
    )
}

/// A `channel@member@remove` for member `id`.
pub fn leave(id: &str, channel: &str) -> Value {
    request(
        "sgc@presence@channel@member@remove",
        json!({"member": {"id": id}, "channel": {"name": channel}}),
    )
}
