//! The WebSocket test client.

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, header};
use serde_json::{Value, json};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::timeout;
use tokio_websockets::{ClientBuilder, Config, Message, WebSocketStream};

use super::{TIMEOUT, event, publish, request};

/// The handshake response of a WebSocket connection.
pub type Handshake = tokio_websockets::upgrade::Response;

/// A WebSocket test client speaking JSON text frames.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// The session id the server sent on connect (empty until read).
    pub session_id: String,
}

/// How to open a [`Client`] when the defaults do not fit.
#[derive(Default)]
pub struct Connect {
    /// Sub-protocols to offer in `Sec-WebSocket-Protocol`.
    pub protocols: Option<&'static str>,
    /// Frame size for outgoing messages (to send fragments).
    pub frame_size: Option<usize>,
    /// Socket receive buffer, to make a non-reading client back up fast.
    pub recv_buffer: Option<u32>,
}

impl Client {
    /// Connects offering no sub-protocol and reads the session message.
    pub async fn connect(addr: SocketAddr) -> Self {
        let (mut client, _) =
            Self::open(addr, Connect::default()).await.expect("websocket handshake succeeds");
        client.read_session().await;
        client
    }

    /// Opens a connection without reading anything from it.
    ///
    /// # Errors
    /// Returns the client's error when the handshake fails.
    pub async fn open(
        addr: SocketAddr,
        how: Connect,
    ) -> Result<(Self, Handshake), tokio_websockets::Error> {
        let socket = TcpSocket::new_v4()?;
        if let Some(size) = how.recv_buffer {
            socket.set_recv_buffer_size(size)?;
        }
        let tcp = socket.connect(addr).await?;

        let mut builder = ClientBuilder::new().uri(&format!("ws://{addr}/")).expect("valid uri");
        if let Some(p) = how.protocols {
            let value = HeaderValue::from_static(p);
            builder = builder.add_header(header::SEC_WEBSOCKET_PROTOCOL, value)?;
        }
        if let Some(size) = how.frame_size {
            builder = builder.config(Config::default().frame_size(size));
        }
        let (ws, response) = timeout(TIMEOUT, builder.connect_on(tcp))
            .await
            .expect("handshake within the timeout")?;
        let client = Self { ws, session_id: String::new() };
        Ok((client, response))
    }

    /// Reads the session message sent right after the handshake.
    pub async fn read_session(&mut self) -> Value {
        let v = self.recv_json().await;
        assert_eq!(v["result"]["method"], "sgc@session", "session first: {v}");
        self.session_id = v["id"].as_str().expect("session id").to_owned();
        v
    }

    /// Sends one frame.
    pub async fn send(&mut self, msg: Message) {
        timeout(TIMEOUT, self.ws.send(msg))
            .await
            .expect("send within the timeout")
            .expect("send succeeds");
    }

    /// Sends a text frame.
    pub async fn send_text(&mut self, text: &str) {
        self.send(Message::text(text.to_owned())).await;
    }

    /// Sends a JSON value as a text frame.
    pub async fn send_json(&mut self, value: Value) {
        self.send_text(&value.to_string()).await;
    }

    /// The next data frame (pings and pongs are skipped). Panics on close,
    /// error or timeout.
    pub async fn recv(&mut self) -> Message {
        loop {
            let next =
                timeout(TIMEOUT, self.ws.next()).await.expect("a message within the timeout");
            let msg = match next {
                Some(Ok(msg)) => msg,
                Some(Err(e)) => panic!("connection failed while waiting for a message: {e}"),
                None => panic!("connection ended while waiting for a message"),
            };
            if let Some((code, reason)) = msg.as_close() {
                panic!("closed with {} {reason:?} while waiting for a message", u16::from(code));
            }
            if msg.is_text() || msg.is_binary() {
                return msg;
            }
        }
    }

    /// The next text frame.
    pub async fn recv_text(&mut self) -> String {
        let msg = self.recv().await;
        msg.as_text().expect("a text frame").to_owned()
    }

    /// The next text frame, parsed as JSON.
    pub async fn recv_json(&mut self) -> Value {
        let text = self.recv_text().await;
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("not json ({e}): {text}"))
    }

    /// Asserts that nothing arrives for `ms` milliseconds.
    pub async fn expect_silence(&mut self, ms: u64) {
        if let Ok(next) = timeout(Duration::from_millis(ms), self.ws.next()).await {
            let shown = match next {
                Some(Ok(m)) => m.as_text().map_or_else(|| format!("{m:?}"), str::to_owned),
                Some(Err(e)) => format!("error {e}"),
                None => "end of stream".to_owned(),
            };
            panic!("expected silence, got {shown}");
        }
    }

    /// Reads until the server's close frame and asserts its code; returns
    /// the reason. Data frames still queued before the close are skipped.
    pub async fn expect_close(&mut self, code: u16) -> String {
        loop {
            let next =
                timeout(TIMEOUT, self.ws.next()).await.expect("a close frame within the timeout");
            match next {
                Some(Ok(msg)) => {
                    if let Some((got, reason)) = msg.as_close() {
                        assert_eq!(u16::from(got), code, "close code (reason {reason:?})");
                        let reason = reason.to_owned();
                        self.finish_close().await;
                        return reason;
                    }
                }
                Some(Err(e)) => panic!("expected close {code}, got error {e}"),
                None => panic!("expected close {code}, got end of stream"),
            }
        }
    }

    /// Polls the stream to its end, which sends the library's reply to the
    /// server's close frame and completes the closing handshake.
    async fn finish_close(&mut self) {
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        let _ = timeout(TIMEOUT, drain).await;
    }

    /// Sends `method` with `params` and an `id`, reads the acknowledgement,
    /// and returns the message that follows it.
    pub async fn call(&mut self, method: &str, params: Value, id: &str) -> Value {
        self.send_json(json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id}))
            .await;
        self.expect_ack(id).await;
        self.recv_json().await
    }

    /// Reads the next message and asserts it acknowledges `id`.
    pub async fn expect_ack(&mut self, id: &str) {
        let ack = self.recv_json().await;
        assert_eq!(
            ack,
            json!({"jsonrpc": "2.0", "result": {"method": "sgc@acknowledgment"}, "id": id}),
        );
    }

    /// Subscribes and waits for the reply.
    pub async fn subscribe(&mut self, channel: &str) {
        self.send_json(request("sgc@subscribe", json!({"channel": channel}))).await;
        let reply = self.recv_json().await;
        assert_eq!(
            reply["result"],
            json!({"method": "sgc@subscribe", "channel": channel}),
            "subscribe reply: {reply}"
        );
    }

    /// Unsubscribes and waits for the reply.
    pub async fn unsubscribe(&mut self, channel: &str) {
        self.send_json(request("sgc@unsubscribe", json!({"channel": channel}))).await;
        let reply = self.recv_json().await;
        assert_eq!(
            reply["result"],
            json!({"method": "sgc@unsubscribe", "channel": channel}),
            "unsubscribe reply: {reply}"
        );
    }

    /// Publishes without an id (nothing comes back to the publisher unless
    /// it is subscribed).
    pub async fn publish(&mut self, channel: &str, message: &str) {
        self.send_json(publish(channel, message)).await;
    }

    /// Reads the next message and asserts it is this `sgc@event`.
    pub async fn expect_event(&mut self, channel: &str, message: &str) {
        let v = self.recv_json().await;
        assert_eq!(v, event(channel, message), "expected an event");
    }

    /// Reads the next message and asserts it is a JSON-RPC error with
    /// `code`; returns it.
    pub async fn expect_error(&mut self, code: i64) -> Value {
        let v = self.recv_json().await;
        assert_eq!(v["jsonrpc"], "2.0", "{v}");
        assert_eq!(v["error"]["code"], code, "expected error {code}: {v}");
        assert!(v["error"]["message"].is_string(), "error message: {v}");
        v
    }

    /// Asserts the connection is open and served: asks for the session
    /// again and expects it back.
    pub async fn assert_served(&mut self) {
        self.send_json(request("sgc@session", json!({}))).await;
        let v = self.recv_json().await;
        assert_eq!(v["result"]["method"], "sgc@session", "still served: {v}");
        assert_eq!(v["result"]["message"], self.session_id.as_str());
    }
}
