//! Application hooks of the sgc protocol.
//!
//! Hooks are plain synchronous callbacks run on the connection's task, in
//! the order the client's messages arrive. They should be quick: a hook
//! that blocks holds up only its own connection, but it does hold it up.
//! Work that needs I/O belongs in a task the hook spawns.

use std::net::SocketAddr;
use std::sync::Arc;

use serde_json::Value;

/// Who a hook is being asked about.
#[derive(Debug, Clone)]
pub struct Client {
    /// The session id sent to the client (a GUID).
    pub session_id: Arc<str>,
    /// The peer address of the TCP connection.
    pub remote: Option<SocketAddr>,
}

/// What the before-publish hook decided.
#[derive(Debug, Clone, PartialEq)]
pub enum PublishDecision {
    /// Publish as sent.
    Accept,
    /// Do not publish; the client gets error -32000 with this text.
    Refuse(String),
    /// Publish this message instead of the one sent.
    Rewrite(Value),
}

/// An error answer from the RPC handler.
#[derive(Debug, Clone, PartialEq)]
pub struct RpcError {
    /// The JSON-RPC error code (`-32000` for application errors).
    pub code: i64,
    /// A short explanation for the client.
    pub message: String,
    /// Optional structured detail.
    pub data: Option<Value>,
}

impl RpcError {
    /// An application error (-32000).
    pub fn application(message: impl Into<String>) -> Self {
        Self { code: super::wire::code::APPLICATION_ERROR, message: message.into(), data: None }
    }

    /// The method is unknown or not allowed (-32601).
    pub fn method_not_found(method: &str) -> Self {
        Self {
            code: super::wire::code::METHOD_NOT_FOUND,
            message: format!("method not found: {method}"),
            data: None,
        }
    }
}

type Subscribe = dyn Fn(&Client, &str) -> bool + Send + Sync;
type Publish = dyn Fn(&Client, &str, &Value) -> PublishDecision + Send + Sync;
type Rpc = dyn Fn(&Client, &str, &Value) -> Result<Value, RpcError> + Send + Sync;
type Notify = dyn Fn(&Client, &str, &Value) + Send + Sync;
type OnMessage = dyn Fn(&Client, &Value) + Send + Sync;
type Lifecycle = dyn Fn(&Client) + Send + Sync;

/// The set of hooks; every one is optional.
#[derive(Default, Clone)]
pub struct SgcHooks {
    pub(crate) before_subscribe: Option<Arc<Subscribe>>,
    pub(crate) before_publish: Option<Arc<Publish>>,
    pub(crate) rpc: Option<Arc<Rpc>>,
    pub(crate) notification: Option<Arc<Notify>>,
    pub(crate) message: Option<Arc<OnMessage>>,
    pub(crate) connect: Option<Arc<Lifecycle>>,
    pub(crate) disconnect: Option<Arc<Lifecycle>>,
}

impl SgcHooks {
    /// Decides whether a client may subscribe to a channel or pattern;
    /// a refusal answers error -32000 naming the channel.
    pub fn before_subscribe(
        mut self,
        f: impl Fn(&Client, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.before_subscribe = Some(Arc::new(f));
        self
    }

    /// Accepts, refuses or rewrites a publication before it is fanned out.
    pub fn before_publish(
        mut self,
        f: impl Fn(&Client, &str, &Value) -> PublishDecision + Send + Sync + 'static,
    ) -> Self {
        self.before_publish = Some(Arc::new(f));
        self
    }

    /// Answers RPC calls (any non-built-in method sent with an id). Without
    /// it every call is answered -32601.
    pub fn rpc(
        mut self,
        f: impl Fn(&Client, &str, &Value) -> Result<Value, RpcError> + Send + Sync + 'static,
    ) -> Self {
        self.rpc = Some(Arc::new(f));
        self
    }

    /// Receives notifications (non-built-in methods sent without an id).
    pub fn on_notification(
        mut self,
        f: impl Fn(&Client, &str, &Value) + Send + Sync + 'static,
    ) -> Self {
        self.notification = Some(Arc::new(f));
        self
    }

    /// Receives `sgc@message` payloads.
    pub fn on_message(mut self, f: impl Fn(&Client, &Value) + Send + Sync + 'static) -> Self {
        self.message = Some(Arc::new(f));
        self
    }

    /// Runs when a client has connected (after its session message).
    pub fn on_connect(mut self, f: impl Fn(&Client) + Send + Sync + 'static) -> Self {
        self.connect = Some(Arc::new(f));
        self
    }

    /// Runs when a client's connection has closed, for any reason.
    pub fn on_disconnect(mut self, f: impl Fn(&Client) + Send + Sync + 'static) -> Self {
        self.disconnect = Some(Arc::new(f));
        self
    }
}
