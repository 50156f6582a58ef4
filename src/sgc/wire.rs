//! The sgc wire format: parsing client messages and encoding server ones.
//!
//! Pure functions over text and bytes. Each encoder builds the exact shape
//! the spec fixes (method names, field names and order), so a client
//! written for the original server reads ours unchanged.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// JSON-RPC error codes the protocol uses.
pub mod code {
    /// Not JSON, or JSON but not an object.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid JSON-RPC request (version, method, id shape).
    pub const INVALID_REQUEST: i64 = -32600;
    /// Unknown or refused RPC method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// A built-in method with a missing or invalid parameter.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Something failed inside the server.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Refused by the application (a hook said no).
    pub const APPLICATION_ERROR: i64 = -32000;
}

/// A parsed client message.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The method name.
    pub method: String,
    /// `params`, as sent (an object for built-ins, anything for RPC).
    pub params: Value,
    /// The sender's id (string or number), if any.
    pub id: Option<Value>,
    /// The top-level `qos`, if any.
    pub qos: Option<String>,
}

impl Request {
    /// A string field of `params`, if present and a string.
    pub fn param_str(&self, key: &str) -> Option<&str> {
        self.params.get(key).and_then(Value::as_str)
    }

    /// A field of `params`, if present.
    pub fn param(&self, key: &str) -> Option<&Value> {
        self.params.get(key)
    }

    /// The id as a string key (numbers in their JSON spelling).
    pub fn id_key(&self) -> Option<String> {
        self.id.as_ref().map(|id| match id {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        })
    }
}

/// Why a client message could not be parsed, with the answer it gets.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError {
    /// The JSON-RPC error code.
    pub code: i64,
    /// A short lowercase explanation.
    pub message: &'static str,
    /// The request's id when one could be read.
    pub id: Option<Value>,
}

/// Parses one text frame into a request, or says which error it earns.
pub fn parse(text: &str) -> Result<Request, WireError> {
    let err = |code, message, id| WireError { code, message, id };

    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Err(err(code::PARSE_ERROR, "parse error: not json", None));
    };
    let Value::Object(mut obj) = value else {
        return Err(err(code::PARSE_ERROR, "parse error: not a json object", None));
    };

    let id = match obj.remove("id") {
        None | Some(Value::Null) => None,
        Some(id @ (Value::String(_) | Value::Number(_))) => Some(id),
        Some(_) => return Err(err(code::INVALID_REQUEST, "invalid request: bad id", None)),
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err(err(code::INVALID_REQUEST, "invalid request: jsonrpc must be \"2.0\"", id));
    }
    let Some(Value::String(method)) = obj.remove("method") else {
        return Err(err(code::INVALID_REQUEST, "invalid request: method missing", id));
    };

    let params = obj.remove("params").unwrap_or(Value::Null);
    let qos = obj.remove("qos").and_then(|q| q.as_str().map(str::to_owned));
    Ok(Request { method, params, id, qos })
}

#[derive(Serialize)]
struct ResultEnvelope<'a, R: Serialize> {
    jsonrpc: &'static str,
    result: R,
    #[serde(skip_serializing_if = "Option::is_none")]
    qos: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a Value>,
}

#[derive(Serialize)]
struct MethodResult<'a> {
    method: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    channel: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    message: Option<&'a Value>,
}

fn encode<T: Serialize>(value: &T) -> Bytes {
    // Serialising these plain structs cannot fail: every key is a string.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}

fn result<'a>(result: MethodResult<'a>, id: Option<&'a Value>, qos: Option<&'a str>) -> Bytes {
    encode(&ResultEnvelope { jsonrpc: "2.0", result, qos, id })
}

/// The session message sent right after the handshake.
pub fn session(session_id: &str) -> Bytes {
    let sid = Value::String(session_id.to_owned());
    let body = MethodResult { method: "sgc@session", channel: None, message: Some(&sid) };
    result(body, Some(&sid), Some("qosLevel0"))
}

/// The acknowledgement of a client message with an id.
pub fn ack(id: &Value) -> Bytes {
    let body = MethodResult { method: "sgc@acknowledgment", channel: None, message: None };
    result(body, Some(id), None)
}

/// A direct reply naming `method` (subscribe, unsubscribe, pubrec...).
pub fn reply(method: &str, channel: Option<&str>, req: &Request) -> Bytes {
    let body = MethodResult { method, channel, message: None };
    result(body, req.id.as_ref(), req.qos.as_deref())
}

/// An `sgc@event` (publication) or `sgc@message` (broadcast), with the id
/// the client must acknowledge when server-to-client QoS is on.
pub fn event(method: &str, channel: &str, message: &Value, ack_id: Option<&Arc<str>>) -> Bytes {
    let id = ack_id.map(|id| Value::String(id.to_string()));
    let body = MethodResult { method, channel: Some(channel), message: Some(message) };
    result(body, id.as_ref(), None)
}

/// The message inside a frame made by [`event`]; `None` for any other
/// frame.
pub fn event_message(frame: &[u8]) -> Option<Value> {
    #[derive(Deserialize)]
    struct Frame {
        result: Body,
    }
    #[derive(Deserialize)]
    struct Body {
        message: Value,
    }
    serde_json::from_slice::<Frame>(frame).ok().map(|f| f.result.message)
}

/// A JSON-RPC error answer.
pub fn error(code: i64, message: &str, data: Option<Value>, id: Option<&Value>) -> Bytes {
    error_envelope(code, message, data, id, None)
}

/// A JSON-RPC error answering `req`: like any direct reply it carries the
/// request's id and top-level qos.
pub fn error_reply(code: i64, message: &str, data: Option<Value>, req: &Request) -> Bytes {
    error_envelope(code, message, data, req.id.as_ref(), req.qos.as_deref())
}

fn error_envelope(
    code: i64,
    message: &str,
    data: Option<Value>,
    id: Option<&Value>,
    qos: Option<&str>,
) -> Bytes {
    #[derive(Serialize)]
    struct ErrorBody<'a> {
        code: i64,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<Value>,
    }
    #[derive(Serialize)]
    struct ErrorEnvelope<'a> {
        jsonrpc: &'static str,
        error: ErrorBody<'a>,
        #[serde(skip_serializing_if = "Option::is_none")]
        qos: Option<&'a str>,
        id: Option<&'a Value>,
    }
    encode(&ErrorEnvelope { jsonrpc: "2.0", error: ErrorBody { code, message, data }, qos, id })
}

/// An RPC result carrying the application's value.
pub fn rpc_result(value: &Value, req: &Request) -> Bytes {
    encode(&ResultEnvelope {
        jsonrpc: "2.0",
        result: value,
        qos: req.qos.as_deref(),
        id: req.id.as_ref(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn as_json(b: Bytes) -> Value {
        serde_json::from_slice(&b).expect("valid json")
    }

    #[test]
    fn parse_sorts_bad_input_into_the_spec_codes() {
        assert_eq!(parse("nope").unwrap_err().code, code::PARSE_ERROR);
        assert_eq!(parse("[1]").unwrap_err().code, code::PARSE_ERROR);
        assert_eq!(parse(r#"{"method":"x"}"#).unwrap_err().code, code::INVALID_REQUEST);
        assert_eq!(
            parse(r#"{"jsonrpc":"1.0","method":"x"}"#).unwrap_err().code,
            code::INVALID_REQUEST
        );
        let e = parse(r#"{"jsonrpc":"2.0","method":5,"id":"7"}"#).unwrap_err();
        assert_eq!((e.code, e.id), (code::INVALID_REQUEST, Some(json!("7"))));
    }

    #[test]
    fn numeric_ids_are_kept_as_sent() {
        let r = parse(r#"{"jsonrpc":"2.0","method":"m","id":42}"#).unwrap();
        assert_eq!(
            as_json(ack(r.id.as_ref().unwrap())),
            json!({"jsonrpc":"2.0","result":{"method":"sgc@acknowledgment"},"id":42})
        );
    }

    #[test]
    fn event_has_the_exact_wire_shape() {
        let b = event("sgc@event", "news", &json!("hello"), None);
        assert_eq!(
            std::str::from_utf8(&b).unwrap(),
            r#"{"jsonrpc":"2.0","result":{"method":"sgc@event","channel":"news","message":"hello"}}"#
        );
    }

    #[test]
    fn the_message_of_an_event_frame_reads_back_as_it_went_in() {
        let message = json!({"text": "héllo", "n": [1, 2.5, null]});
        let id: Arc<str> = "guid".into();
        let b = event("sgc@event", "news", &message, Some(&id));
        assert_eq!(event_message(&b), Some(message));
        assert_eq!(event_message(&ack(&json!("1"))), None);
    }

    #[test]
    fn session_message_matches_the_spec() {
        let v = as_json(session("abc"));
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","result":{"method":"sgc@session","message":"abc"},"qos":"qosLevel0","id":"abc"})
        );
    }

    #[test]
    fn replies_carry_the_request_id_and_qos() {
        let r = parse(r#"{"jsonrpc":"2.0","method":"sgc@subscribe","params":{"channel":"a"},"id":"1","qos":"qosLevel1"}"#).unwrap();
        let v = as_json(reply("sgc@subscribe", Some("a"), &r));
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","result":{"method":"sgc@subscribe","channel":"a"},"qos":"qosLevel1","id":"1"})
        );
    }

    #[test]
    fn errors_without_an_id_carry_null() {
        let v = as_json(error(code::PARSE_ERROR, "parse error", None, None));
        assert_eq!(v["id"], Value::Null);
        assert_eq!(v["error"]["code"], json!(-32700));
    }

    #[test]
    fn error_replies_carry_the_request_id_and_qos() {
        let r = parse(r#"{"jsonrpc":"2.0","method":"m","id":"1","qos":"qosLevel1"}"#).unwrap();
        let v = as_json(error_reply(code::METHOD_NOT_FOUND, "no", None, &r));
        assert_eq!(
            v,
            json!({"jsonrpc":"2.0","error":{"code":-32601,"message":"no"},"qos":"qosLevel1","id":"1"})
        );
    }
}
