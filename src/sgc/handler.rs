//! What the server does with each client message of the sgc protocol.
//!
//! Everything here works on a [`Session`] and the hub; replies are pushed
//! into the connection's outbox like any event, so a client sees them in
//! the order they were decided. No sockets, no clock: tests drive it with
//! text in and bytes out.

use bytes::Bytes;
use serde_json::{Value, json};

use super::hooks::PublishDecision;
use super::publication::{Kind, Publication};
use super::session::{Hold, Session};
use super::wire::{self, Request, code};
use super::{SUBPROTOCOL, SgcProtocol, new_id};
use crate::hub::kept::QueueLevel;
use crate::hub::outbox::Outgoing;

/// A refusal to send back to the client as a JSON-RPC error.
struct Refusal {
    code: i64,
    message: String,
    data: Option<Value>,
}

impl Refusal {
    fn params(message: impl Into<String>) -> Self {
        Self { code: code::INVALID_PARAMS, message: message.into(), data: None }
    }
}

type Outcome = Result<(), Refusal>;

impl SgcProtocol {
    /// Sends the session message (on connect and on `sgc@session`).
    pub fn send_session(&self, s: &Session) {
        self.send(s, wire::session(&s.client.session_id));
    }

    /// Handles one text frame from the client.
    pub fn handle_text(&self, s: &mut Session, text: &str) {
        metrics::counter!("wscluster_bytes_in_total", "protocol" => "sgc")
            .increment(text.len() as u64);
        match wire::parse(text) {
            Ok(req) => {
                metrics::counter!("wscluster_messages_in_total", "protocol" => "sgc", "kind" => kind(&req))
                    .increment(1);
                self.handle(s, req);
            }
            Err(e) => {
                metrics::counter!("wscluster_messages_in_total", "protocol" => "sgc", "kind" => "invalid")
                    .increment(1);
                metrics::counter!("wscluster_bad_input_total", "code" => e.code.to_string())
                    .increment(1);
                self.send(s, wire::error(e.code, e.message, None, e.id.as_ref()));
            }
        }
    }

    /// Answers a binary frame, which the protocol does not use.
    pub fn handle_binary(&self, s: &Session) {
        metrics::counter!("wscluster_bad_input_total", "code" => "-32600").increment(1);
        let message = "invalid request: binary frames are not part of the protocol";
        self.send(s, wire::error(code::INVALID_REQUEST, message, None, None));
    }

    /// Handles one parsed request: acknowledge, then act.
    pub fn handle(&self, s: &mut Session, req: Request) {
        if let Some(id) = &req.id
            && req.method != "sgc@acknowledgment"
        {
            self.send(s, wire::ack(id));
        }
        if let Err(r) = self.dispatch(s, &req) {
            self.send(s, wire::error_reply(r.code, &r.message, r.data, &req));
        }
    }

    fn dispatch(&self, s: &mut Session, req: &Request) -> Outcome {
        match req.method.as_str() {
            "sgc@subscribe" => self.subscribe(s, req),
            "sgc@unsubscribe" => self.unsubscribe(s, req),
            "sgc@unsubscribe_all" => {
                let changes = self.hub().unsubscribe_all(s.conn);
                let _ = self.interest_changed(&changes);
                self.send(s, wire::reply("sgc@unsubscribe_all", Some(""), req));
                Ok(())
            }
            "sgc@publish" => self.publish_request(s, req),
            "sgc@broadcast" => self.broadcast_request(s, req),
            "sgc@message" => {
                let message = message_param(req)?;
                if let Some(hook) = &self.hooks().message {
                    hook(&s.client, message);
                }
                Ok(())
            }
            "sgc@acknowledgment" => {
                if let Some(id) = req.id_key() {
                    s.acknowledge(&id);
                }
                Ok(())
            }
            "sgc@pubrel" => self.pubrel(s, req),
            "sgc@transaction" => {
                s.begin(self.channel_param(req, false)?);
                Ok(())
            }
            "sgc@commit" => {
                let held = s.end(self.channel_param(req, false)?);
                for held_req in held {
                    self.handle_held(s, &held_req);
                }
                Ok(())
            }
            "sgc@rollback" => {
                s.end(self.channel_param(req, false)?);
                Ok(())
            }
            "sgc@session" => {
                self.send_session(s);
                Ok(())
            }
            "sgc@protocol" => {
                self.send(s, Bytes::from_static(SUBPROTOCOL.as_bytes()));
                Ok(())
            }
            _ => self.application(s, req),
        }
    }

    fn subscribe(&self, s: &mut Session, req: &Request) -> Outcome {
        let channel = self.channel_param(req, true)?;
        let limit = self.settings().max_subscriptions;
        // Subscribing again adds nothing, so the limit does not refuse it.
        if self.hub().subscription_count(s.conn) >= limit && !self.hub().holds(s.conn, channel) {
            metrics::counter!("wscluster_refused_total", "reason" => "subscription_limit")
                .increment(1);
            return Err(Refusal {
                code: code::APPLICATION_ERROR,
                message: format!("subscription limit of {limit} reached"),
                data: Some(json!({ "channel": channel })),
            });
        }
        if let Some(hook) = &self.hooks().before_subscribe
            && !hook(&s.client, channel)
        {
            return Err(Refusal {
                code: code::APPLICATION_ERROR,
                message: format!("subscription to channel {channel:?} refused"),
                data: Some(json!({ "channel": channel })),
            });
        }

        let reply = Outgoing::new(wire::reply("sgc@subscribe", Some(channel), req));
        let change = self.hub().subscribe(s.conn, channel, reply);
        s.barrier = self.interest_changed(change.as_slice());
        Ok(())
    }

    fn unsubscribe(&self, s: &mut Session, req: &Request) -> Outcome {
        let channel = self.channel_param(req, true)?;
        let change = self.hub().unsubscribe(s.conn, channel);
        let _ = self.interest_changed(change.as_slice());
        self.send(s, wire::reply("sgc@unsubscribe", Some(channel), req));
        Ok(())
    }

    fn publish_request(&self, s: &mut Session, req: &Request) -> Outcome {
        let channel = self.channel_param(req, false)?;
        message_param(req)?;
        queue_param(req)?;

        let qos = req.qos.as_deref().or_else(|| req.param_str("qos"));
        if let (Some("qosLevel2"), Some(id)) = (qos, req.id_key()) {
            if !s.store_qos2(id, req.clone()) {
                return Err(Refusal {
                    code: code::APPLICATION_ERROR,
                    message: "qos 2 message refused: id already used or too many pending".into(),
                    data: None,
                });
            }
            self.send(s, wire::reply("sgc@pubrec", None, req));
            return Ok(());
        }
        self.hold_or_run(s, channel, req)
    }

    fn broadcast_request(&self, s: &mut Session, req: &Request) -> Outcome {
        message_param(req)?;
        // sgc clients send `"channel": ""` for a broadcast to everyone.
        match req.param("channel") {
            None | Some(Value::Null) => self.run(s, req),
            Some(Value::String(c)) if c.is_empty() => self.run(s, req),
            Some(_) => {
                let channel = self.channel_param(req, false)?;
                self.hold_or_run(s, channel, req)
            }
        }
    }

    fn pubrel(&self, s: &mut Session, req: &Request) -> Outcome {
        let Some(held) = req.id_key().and_then(|id| s.release_qos2(&id)) else {
            return Ok(());
        };
        let channel = self.channel_param(&held, false)?.to_owned();
        self.hold_or_run(s, &channel, &held)
    }

    /// Holds `req` in an open transaction on `channel`, or runs it now.
    fn hold_or_run(&self, s: &mut Session, channel: &str, req: &Request) -> Outcome {
        match s.hold(channel, req) {
            Hold::NotHeld => self.run(s, req),
            Hold::Held => Ok(()),
            Hold::Full => Err(Refusal {
                code: code::APPLICATION_ERROR,
                message: "transaction is full".into(),
                data: Some(json!({ "channel": channel })),
            }),
        }
    }

    /// Runs a message a commit released, answering any refusal by its id.
    fn handle_held(&self, s: &mut Session, req: &Request) {
        if let Err(r) = self.run(s, req) {
            self.send(s, wire::error_reply(r.code, &r.message, r.data, req));
        }
    }

    /// Publishes or broadcasts a validated request.
    fn run(&self, s: &mut Session, req: &Request) -> Outcome {
        let mut message = message_param(req)?.clone();
        let channel = req.param_str("channel").filter(|c| !c.is_empty());

        if req.method == "sgc@publish" {
            let channel = channel.unwrap_or_default();
            if let Some(hook) = &self.hooks().before_publish {
                match hook(&s.client, channel, &message) {
                    PublishDecision::Accept => {}
                    PublishDecision::Rewrite(m) => message = m,
                    PublishDecision::Refuse(text) => {
                        return Err(Refusal {
                            code: code::APPLICATION_ERROR,
                            message: text,
                            data: Some(json!({ "channel": channel })),
                        });
                    }
                }
            }
        }

        let kind = if req.method == "sgc@publish" { Kind::Event } else { Kind::Broadcast };
        self.originate(Publication {
            id: new_id(),
            kind,
            channel: channel.map(Into::into),
            message,
            queue: queue_param(req)?,
            at_us: super::publication::now_us(),
        });
        Ok(())
    }

    /// RPC calls (with an id) and notifications (without).
    fn application(&self, s: &mut Session, req: &Request) -> Outcome {
        let Some(_) = req.id else {
            if let Some(hook) = &self.hooks().notification {
                hook(&s.client, &req.method, &req.params);
            }
            return Ok(());
        };

        let answer = match &self.hooks().rpc {
            Some(rpc) => rpc(&s.client, &req.method, &req.params),
            None => Err(super::RpcError::method_not_found(&req.method)),
        };
        match answer {
            Ok(value) => {
                self.send(s, wire::rpc_result(&value, req));
                Ok(())
            }
            Err(e) => Err(Refusal { code: e.code, message: e.message, data: e.data }),
        }
    }

    /// Validates the `channel` parameter; patterns only where allowed.
    fn channel_param<'r>(&self, req: &'r Request, allow_pattern: bool) -> Result<&'r str, Refusal> {
        let Some(channel) = req.param_str("channel") else {
            return Err(Refusal::params("invalid params: channel missing or not a string"));
        };
        super::channel::check(channel, self.settings().max_channel_len, allow_pattern)
            .map_err(|e| Refusal::params(format!("invalid params: {e}")))?;
        Ok(channel)
    }

    fn send(&self, s: &Session, bytes: Bytes) {
        self.hub().send_to(s.conn, Outgoing::new(bytes));
    }
}

/// The metric label of a request: the built-in method's short name, or
/// `rpc` / `notification` (never the client's own method name, which would
/// let clients create label values without bound).
fn kind(req: &Request) -> &'static str {
    match req.method.as_str() {
        "sgc@subscribe" => "subscribe",
        "sgc@unsubscribe" | "sgc@unsubscribe_all" => "unsubscribe",
        "sgc@publish" => "publish",
        "sgc@broadcast" => "broadcast",
        "sgc@message" => "message",
        "sgc@acknowledgment" => "acknowledgment",
        "sgc@pubrel" => "pubrel",
        "sgc@transaction" | "sgc@commit" | "sgc@rollback" => "transaction",
        "sgc@session" | "sgc@protocol" => "session",
        _ if req.id.is_some() => "rpc",
        _ => "notification",
    }
}

fn message_param(req: &Request) -> Result<&Value, Refusal> {
    match req.param("message") {
        None | Some(Value::Null) => Err(Refusal::params("invalid params: message missing")),
        Some(m) => Ok(m),
    }
}

fn queue_param(req: &Request) -> Result<QueueLevel, Refusal> {
    match req.param("queue") {
        None | Some(Value::Null) => Ok(QueueLevel::None),
        Some(Value::String(q)) => QueueLevel::parse(q)
            .ok_or_else(|| Refusal::params(format!("invalid params: unknown queue {q:?}"))),
        Some(_) => Err(Refusal::params("invalid params: queue must be a string")),
    }
}
