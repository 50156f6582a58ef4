//! A WebSocket client speaking the sgc protocol, for tests.
//!
//! Every wait is bounded by [`STEP`] and fails the test naming the node the
//! client is on. Messages read while looking for a particular reply (a
//! subscribe answer) are kept and handed out, in order, by the next
//! [`Client::recv`], so nothing is lost when replies and events interleave.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

use super::{SILENCE, STEP};

/// One client connection to one node.
pub struct Client {
    ws: WebSocketStream<TcpStream>,
    /// The node it is connected to, for failure messages.
    node: String,
    /// The session id the server sent on connect.
    pub session_id: String,
    pending: VecDeque<Value>,
}

impl Client {
    /// Connects to the node at `addr` (named `node`) and reads the session
    /// message.
    pub async fn connect(addr: SocketAddr, node: &str) -> Self {
        let open = async {
            let tcp = TcpStream::connect(addr).await?;
            // Like any interactive client: small frames must not wait for
            // Nagle's algorithm, or latencies measure the test's socket.
            tcp.set_nodelay(true)?;
            let builder = ClientBuilder::new().uri(&format!("ws://{addr}/")).expect("valid uri");
            builder.connect_on(tcp).await
        };
        let (ws, _) = timeout(STEP, open)
            .await
            .unwrap_or_else(|_| panic!("connecting to node {node} timed out"))
            .unwrap_or_else(|e| panic!("connecting to node {node} failed: {e}"));
        let mut client =
            Self { ws, node: node.to_owned(), session_id: String::new(), pending: VecDeque::new() };

        let session = client.recv().await;
        assert_eq!(session["result"]["method"], "sgc@session", "first message: {session}");
        client.session_id = session["id"].as_str().expect("session id").to_owned();
        client
    }

    /// Sends one JSON document as a text frame.
    pub async fn send(&mut self, value: &Value) {
        timeout(STEP, self.ws.send(Message::text(value.to_string())))
            .await
            .unwrap_or_else(|_| panic!("sending to node {} timed out", self.node))
            .unwrap_or_else(|e| panic!("sending to node {} failed: {e}", self.node));
    }

    /// Sends a text frame exactly as given (for frames of an exact size).
    pub async fn send_text(&mut self, text: String) {
        timeout(STEP, self.ws.send(Message::text(text)))
            .await
            .unwrap_or_else(|_| panic!("sending to node {} timed out", self.node))
            .unwrap_or_else(|e| panic!("sending to node {} failed: {e}", self.node));
    }

    /// The next message, or the server's close (code and reason; 1006 when
    /// the connection ended without one); `None` when nothing arrives
    /// within `within`. For clients that may legitimately be closed.
    pub async fn recv_or_close(
        &mut self,
        within: Duration,
    ) -> Option<Result<Value, (u16, String)>> {
        if let Some(v) = self.pending.pop_front() {
            return Some(Ok(v));
        }
        let read = async {
            loop {
                let msg = match self.ws.next().await {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => return Err((1006, e.to_string())),
                    None => return Err((1006, "end of stream".to_owned())),
                };
                if let Some((code, reason)) = msg.as_close() {
                    return Err((u16::from(code), reason.to_owned()));
                }
                if let Some(text) = msg.as_text() {
                    return Ok(serde_json::from_str(text).unwrap_or_else(|e| {
                        panic!("not json from node {} ({e}): {text}", self.node)
                    }));
                }
            }
        };
        timeout(within, read).await.ok()
    }

    /// The next message; fails the test on close, error or timeout.
    pub async fn recv(&mut self) -> Value {
        match self.recv_within(STEP).await {
            Some(v) => v,
            None => panic!("no message from node {} within {STEP:?}", self.node),
        }
    }

    /// The next message, or `None` when nothing arrives within `within`.
    pub async fn recv_within(&mut self, within: Duration) -> Option<Value> {
        if let Some(v) = self.pending.pop_front() {
            return Some(v);
        }
        let read = async {
            loop {
                let msg = match self.ws.next().await {
                    Some(Ok(msg)) => msg,
                    Some(Err(e)) => panic!("connection to node {} failed: {e}", self.node),
                    None => panic!("connection to node {} ended", self.node),
                };
                if let Some((code, reason)) = msg.as_close() {
                    let code = u16::from(code);
                    panic!("node {} closed the connection: {code} {reason:?}", self.node);
                }
                if let Some(text) = msg.as_text() {
                    return serde_json::from_str(text).unwrap_or_else(|e| {
                        panic!("not json from node {} ({e}): {text}", self.node)
                    });
                }
            }
        };
        timeout(within, read).await.ok()
    }

    /// Asserts that the next message is exactly `expected`.
    pub async fn expect(&mut self, expected: &Value) {
        let got = self.recv().await;
        assert_eq!(&got, expected, "message on node {}", self.node);
    }

    /// Asserts that nothing arrives for `within`.
    pub async fn expect_silence(&mut self, within: Duration) {
        if let Some(v) = self.recv_within(within).await {
            panic!("expected silence on node {}, got {v}", self.node);
        }
    }

    /// Subscribes and waits for the acknowledgement and the reply; kept
    /// events that follow the reply are left for [`Client::recv`].
    pub async fn subscribe(&mut self, channel: &str) {
        let id = new_id();
        let request = json!({
            "jsonrpc": "2.0",
            "method": "sgc@subscribe",
            "params": {"channel": channel},
            "id": id,
        });
        self.send(&request).await;
        let expected = json!({
            "jsonrpc": "2.0",
            "result": {"method": "sgc@subscribe", "channel": channel},
            "id": id,
        });
        self.await_reply(&id, &expected).await;
    }

    /// Publishes without an id, so nothing comes back to the publisher
    /// unless it is subscribed.
    pub async fn publish(&mut self, channel: &str, message: &str) {
        self.send(&publish(channel, message, None)).await;
    }

    /// Publishes at a queue level (`queueLevel1`, `queueLevel2`).
    pub async fn publish_kept(&mut self, channel: &str, message: &str, queue: &str) {
        self.send(&publish(channel, message, Some(queue))).await;
    }

    /// Broadcasts to everyone, or to `channel`'s subscribers.
    pub async fn broadcast(&mut self, message: &str, channel: Option<&str>) {
        let mut params = json!({"message": message});
        if let Some(ch) = channel {
            params["channel"] = json!(ch);
        }
        let request = json!({"jsonrpc": "2.0", "method": "sgc@broadcast", "params": params});
        self.send(&request).await;
    }

    /// Asserts the connection is still served: asks for the session again.
    pub async fn assert_served(&mut self) {
        let request = json!({"jsonrpc": "2.0", "method": "sgc@session", "params": {}});
        self.send(&request).await;
        let v = self.recv().await;
        assert_eq!(v["result"]["method"], "sgc@session", "still served: {v}");
        assert_eq!(v["result"]["message"], self.session_id.as_str());
    }

    /// Reads until the server's close frame (skipping data still queued
    /// before it), answers it, and returns its code and reason.
    pub async fn expect_close(&mut self) -> (u16, String) {
        let node = self.node.clone();
        let read = async {
            loop {
                match self.ws.next().await {
                    Some(Ok(msg)) => {
                        if let Some((code, reason)) = msg.as_close() {
                            return (u16::from(code), reason.to_owned());
                        }
                    }
                    Some(Err(e)) => panic!("expected a close frame from node {node}, got {e}"),
                    None => panic!("expected a close frame from node {node}, got end of stream"),
                }
            }
        };
        let closed = timeout(STEP, read)
            .await
            .unwrap_or_else(|_| panic!("no close frame from node {} within {STEP:?}", self.node));
        // Polling on lets the library send its close reply.
        let _ = timeout(Duration::from_secs(1), async {
            while let Some(Ok(_)) = self.ws.next().await {}
        })
        .await;
        closed
    }

    /// Reads until the reply `expected` (which carries `id`), checking that
    /// the acknowledgement of `id` came first; other messages are kept.
    async fn await_reply(&mut self, id: &str, expected: &Value) {
        let ack = json!({"jsonrpc": "2.0", "result": {"method": "sgc@acknowledgment"}, "id": id});
        let mut acked = false;
        let mut others = Vec::new();
        loop {
            let v = self.recv().await;
            if v == ack {
                acked = true;
            } else if v.get("id").and_then(Value::as_str) == Some(id) {
                assert!(acked, "reply before acknowledgement on node {}: {v}", self.node);
                assert_eq!(&v, expected, "reply on node {}", self.node);
                break;
            } else {
                others.push(v);
            }
        }
        // Messages read on the way go back in front, in the order they came.
        for v in others.into_iter().rev() {
            self.pending.push_front(v);
        }
    }
}

/// Asserts that none of `clients` receives anything for [`SILENCE`],
/// watching all of them at once.
pub async fn expect_all_silent<'a>(clients: impl IntoIterator<Item = &'a mut Client>) {
    let watches = clients.into_iter().map(|c| c.expect_silence(SILENCE));
    futures_util::future::join_all(watches).await;
}

/// An `sgc@publish` without an id, at an optional queue level.
pub fn publish(channel: &str, message: &str, queue: Option<&str>) -> Value {
    let mut params = json!({"channel": channel, "message": message});
    if let Some(q) = queue {
        params["queue"] = json!(q);
    }
    json!({"jsonrpc": "2.0", "method": "sgc@publish", "params": params})
}

/// The exact `sgc@event` a subscriber receives (server QoS 0).
pub fn event(channel: &str, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "result": {"method": "sgc@event", "channel": channel, "message": message},
    })
}

/// The exact `sgc@message` a broadcast delivers (server QoS 0); `channel`
/// is empty for a broadcast to everyone.
pub fn broadcast_message(channel: &str, message: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "result": {"method": "sgc@message", "channel": channel, "message": message},
    })
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
