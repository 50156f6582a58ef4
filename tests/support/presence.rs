//! A WebSocket client speaking the presence protocol to a node process,
//! for the multi-process tests.
//!
//! It keeps every message it ever received, with the time it was read, so
//! a test can wait for one message, count notices afterwards ("exactly
//! once"), replay them in order, or measure when they arrived. Waiting for
//! a message takes the first *unclaimed* one that matches, so a reply and
//! the notices around it can be picked in any order without losing any.
//! A connection the server ends is recorded, not a panic: a test that
//! expects it can say so ([`Presence::wait_closed`]).

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use http::{HeaderValue, header};
use serde_json::{Value, json};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

use super::STEP;

/// The presence sub-protocol token.
pub const PRESENCE: &str = "presence.esegece.com";

/// How the server answered a request that can be refused.
pub type Answer = Result<Value, i64>;

/// One presence connection to one node.
pub struct Presence {
    ws: WebSocketStream<TcpStream>,
    /// Who this is, for failure messages (`"u1 on a"`).
    label: String,
    /// The session id of the session message.
    pub session_id: String,
    /// Every message received, with when it was read.
    history: Vec<(Instant, Value)>,
    /// Which of them a wait already took.
    claimed: Vec<bool>,
    /// Set once the stream ended: the close code (0 without a frame).
    closed: Option<u16>,
}

impl Presence {
    /// Connects to the node at `addr` offering the presence protocol and
    /// reads the session message. `label` names the client in failures.
    pub async fn connect(addr: SocketAddr, label: &str) -> Self {
        let open = async {
            let tcp = TcpStream::connect(addr).await?;
            tcp.set_nodelay(true)?;
            let builder = ClientBuilder::new()
                .uri(&format!("ws://{addr}/"))
                .expect("valid uri")
                .add_header(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_static(PRESENCE))?;
            builder.connect_on(tcp).await
        };
        let (ws, response) = timeout(STEP, open)
            .await
            .unwrap_or_else(|_| panic!("{label}: connecting timed out"))
            .unwrap_or_else(|e| panic!("{label}: connecting failed: {e}"));
        let chosen = response.headers().get(header::SEC_WEBSOCKET_PROTOCOL);
        assert_eq!(chosen.and_then(|v| v.to_str().ok()), Some(PRESENCE), "{label}: sub-protocol");

        let mut c = Self {
            ws,
            label: label.to_owned(),
            session_id: String::new(),
            history: Vec::new(),
            claimed: Vec::new(),
            closed: None,
        };
        let session = c.wait_for("the session message", STEP, |v| is(v, "session")).await;
        c.session_id = session["message"]["text"].as_str().expect("session id").to_owned();
        c
    }

    /// The client's label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// Sends one JSON document.
    pub async fn send(&mut self, v: &Value) {
        timeout(STEP, self.ws.send(Message::text(v.to_string())))
            .await
            .unwrap_or_else(|_| panic!("{}: sending timed out", self.label))
            .unwrap_or_else(|e| panic!("{}: sending failed: {e}", self.label));
    }

    /// Reads one message into the history; false when nothing came within
    /// `within` or the stream has ended.
    async fn read_one(&mut self, within: Duration) -> bool {
        if self.closed.is_some() {
            return false;
        }
        let next = match timeout(within, self.ws.next()).await {
            Err(_) => return false,
            Ok(next) => next,
        };
        match next {
            Some(Ok(msg)) => {
                if let Some((code, _)) = msg.as_close() {
                    self.closed = Some(u16::from(code));
                    return false;
                }
                if let Some(text) = msg.as_text() {
                    let v = serde_json::from_str(text)
                        .unwrap_or_else(|e| panic!("{}: not json ({e}): {text}", self.label));
                    self.history.push((Instant::now(), v));
                    self.claimed.push(false);
                }
                true
            }
            Some(Err(_)) | None => {
                self.closed = Some(self.closed.unwrap_or(0));
                false
            }
        }
    }

    /// Waits, at most `within`, for the first unclaimed message matching
    /// `pred`, claims it and returns it; fails the test naming `what`.
    pub async fn wait_for(
        &mut self,
        what: &str,
        within: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = Instant::now() + within;
        self.wait_for_until(what, deadline, pred).await
    }

    /// Like [`Presence::wait_for`], with an absolute deadline.
    pub async fn wait_for_until(
        &mut self,
        what: &str,
        deadline: Instant,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        let mut scanned = 0;
        loop {
            for i in scanned..self.history.len() {
                if !self.claimed[i] && pred(&self.history[i].1) {
                    self.claimed[i] = true;
                    return self.history[i].1.clone();
                }
            }
            scanned = self.history.len();
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.read_one(left).await && (self.closed.is_some() || left.is_zero()) {
                panic!(
                    "{}: no {what} {}; received:\n{}",
                    self.label,
                    match self.closed {
                        Some(code) => format!("before the connection ended ({code})"),
                        None => "in time".to_owned(),
                    },
                    self.dump()
                );
            }
        }
    }

    /// Waits, at most until `deadline`, until `count` messages in the whole
    /// history match `pred`; returns when the last of them was read.
    pub async fn wait_count(
        &mut self,
        what: &str,
        deadline: Instant,
        count: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Instant {
        self.wait_count_since(0, what, deadline, count, pred).await
    }

    /// Like [`Presence::wait_count`], counting only what was received
    /// since `mark` ([`Presence::mark`]).
    pub async fn wait_count_since(
        &mut self,
        mark: usize,
        what: &str,
        deadline: Instant,
        count: usize,
        pred: impl Fn(&Value) -> bool,
    ) -> Instant {
        loop {
            let hits: Vec<Instant> = self.history[mark.min(self.history.len())..]
                .iter()
                .filter(|(_, v)| pred(v))
                .map(|(t, _)| *t)
                .collect();
            if hits.len() >= count {
                return hits[count - 1];
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.read_one(left).await && (self.closed.is_some() || left.is_zero()) {
                panic!(
                    "{}: expected {count} × {what}, got {}; received:\n{}",
                    self.label,
                    hits.len(),
                    self.dump()
                );
            }
        }
    }

    /// Reads whatever arrives until `deadline`.
    pub async fn drain_until(&mut self, deadline: Instant) {
        while Instant::now() < deadline {
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.read_one(left).await && self.closed.is_some() {
                return;
            }
        }
    }

    /// Reads whatever arrives until nothing has for `quiet`.
    pub async fn settle(&mut self, quiet: Duration) {
        while self.read_one(quiet).await {}
    }

    /// Every message received, in order.
    pub fn history(&self) -> impl Iterator<Item = &Value> {
        self.history.iter().map(|(_, v)| v)
    }

    /// A position in the history: everything read so far is before it.
    /// Taken right after an answer (a member list, say), it splits what
    /// the client heard before that answer from what it heard after.
    pub fn mark(&self) -> usize {
        self.history.len()
    }

    /// The messages received since `mark`, in order.
    pub fn since(&self, mark: usize) -> impl Iterator<Item = &Value> {
        self.history[mark.min(self.history.len())..].iter().map(|(_, v)| v)
    }

    /// How many messages received so far match `pred`.
    pub fn count(&self, pred: impl Fn(&Value) -> bool) -> usize {
        self.history().filter(|v| pred(v)).count()
    }

    /// How many messages received since `mark` match `pred`.
    pub fn count_since(&self, mark: usize, pred: impl Fn(&Value) -> bool) -> usize {
        self.since(mark).filter(|v| pred(v)).count()
    }

    /// The history, one message a line, for failure messages.
    pub fn dump(&self) -> String {
        let lines: Vec<String> = self.history().map(Value::to_string).collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    /// Sends `request` and waits for its answer: the first unclaimed
    /// message `answer` accepts, or a refusal. `Err(code)` when refused.
    async fn ask(
        &mut self,
        request: &Value,
        what: &str,
        answer: impl Fn(&Value) -> bool,
    ) -> Answer {
        self.send(request).await;
        let v = self.wait_for(what, STEP, |v| answer(v) || is(v, "error@member@channel")).await;
        if is(&v, "error@member@channel") {
            return Err(v["error"]["code"].as_i64().expect("error code"));
        }
        Ok(v)
    }

    /// Registers member `id` (name `<id> name`, info `<id> info`): its own
    /// `member@new`, or the refusal code.
    pub async fn register(&mut self, id: &str) -> Answer {
        let request =
            json!({"jsonrpc": "2.0", "method": "sgc@presence@member@new", "member": member(id)});
        self.ask(&request, &format!("answer to registering {id}"), |v| {
            is(v, "member@new") && v["member"]["id"] == id
        })
        .await
    }

    /// Registers `id`, which must be accepted.
    pub async fn must_register(&mut self, id: &str) {
        if let Err(code) = self.register(id).await {
            panic!("{}: registering {id} refused with code {code}", self.label);
        }
    }

    /// Unregisters member `id`: its own `member@remove`, or the refusal.
    pub async fn unregister(&mut self, id: &str) -> Answer {
        let request =
            json!({"jsonrpc": "2.0", "method": "sgc@presence@member@remove", "member": {"id": id}});
        self.ask(&request, &format!("answer to unregistering {id}"), |v| {
            is(v, "member@remove") && v["member"]["id"] == id
        })
        .await
    }

    /// Joins `channel` as member `id`: its own notice, or the refusal.
    pub async fn join(&mut self, id: &str, channel: &str) -> Answer {
        let request = json!({
            "jsonrpc": "2.0",
            "method": "sgc@presence@channel@member@new",
            "channel": {"name": channel},
            "member": {"id": id},
        });
        self.ask(&request, &format!("answer to {id} joining {channel}"), |v| {
            is(v, "channel@member@new")
                && v["member"]["id"] == id
                && v["channel"]["name"] == channel
        })
        .await
    }

    /// Registers `id` and joins `channel`; both must be accepted.
    pub async fn enter(&mut self, id: &str, channel: &str) {
        self.must_register(id).await;
        if let Err(code) = self.join(id, channel).await {
            panic!("{}: {id} joining {channel} refused with code {code}", self.label);
        }
    }

    /// Leaves `channel` as member `id`: its own notice, or the refusal.
    pub async fn leave(&mut self, id: &str, channel: &str) -> Answer {
        let request = json!({
            "jsonrpc": "2.0",
            "method": "sgc@presence@channel@member@remove",
            "channel": {"name": channel},
            "member": {"id": id},
        });
        self.ask(&request, &format!("answer to {id} leaving {channel}"), |v| {
            is(v, "channel@member@remove")
                && v["member"]["id"] == id
                && v["channel"]["name"] == channel
        })
        .await
    }

    /// The member ids `get@members` lists for `channel` (every member when
    /// `None`), in the order sent; `Err(code)` when refused (5: no such
    /// channel).
    pub async fn members(&mut self, channel: Option<&str>) -> Result<Vec<String>, i64> {
        let mut request = json!({"jsonrpc": "2.0", "method": "sgc@presence@get@members"});
        if let Some(c) = channel {
            request["channel"] = json!({"name": c});
        }
        let v = self.ask(&request, "the member list", |v| is(v, "send@members")).await?;
        let list = v["members"].as_array().expect("members array");
        Ok(list.iter().map(|m| m["id"].as_str().expect("member id").to_owned()).collect())
    }

    /// The member ids of `channel`, sorted; empty when it does not exist.
    pub async fn channel_ids(&mut self, channel: &str) -> Vec<String> {
        match self.members(Some(channel)).await {
            Ok(mut ids) => {
                ids.sort();
                ids
            }
            Err(5) => Vec::new(),
            Err(code) => panic!("{}: get@members {channel} refused with {code}", self.label),
        }
    }

    /// Closes from the client side and waits for the closing handshake, so
    /// the server has forgotten the connection when this returns.
    pub async fn close(mut self) {
        let _ = timeout(STEP, self.ws.close()).await;
        let drain = async { while let Some(Ok(_)) = self.ws.next().await {} };
        timeout(STEP, drain)
            .await
            .unwrap_or_else(|_| panic!("{}: close handshake timed out", self.label));
    }

    /// Drops the TCP connection without a closing handshake.
    pub fn abort(self) {
        drop(self);
    }

    /// Reads until the server ends the connection; its close code (0 when
    /// it ended without a close frame).
    pub async fn wait_closed(&mut self, within: Duration) -> u16 {
        let deadline = Instant::now() + within;
        while self.closed.is_none() {
            let left = deadline.saturating_duration_since(Instant::now());
            if !self.read_one(left).await && self.closed.is_none() && left.is_zero() {
                panic!("{}: still open after {within:?}", self.label);
            }
        }
        self.closed.unwrap_or(0)
    }
}

/// Whether `v` is the presence message `sgc@presence@<method>`.
pub fn is(v: &Value, method: &str) -> bool {
    v["method"].as_str().and_then(|m| m.strip_prefix("sgc@presence@")) == Some(method)
}

/// The member object [`Presence::register`] sends for `id`.
pub fn member(id: &str) -> Value {
    json!({"id": id, "name": format!("{id} name"), "info": format!("{id} info")})
}
