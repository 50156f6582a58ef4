//! The presence wire format: parsing client messages and encoding server
//! ones.
//!
//! Pure functions over text and bytes. Unlike the sgc protocol there is no
//! `params` or `result`: the payload sits in top-level keys (`member`,
//! `channel`, `message`, `error`, `members`, `id`), each present only when
//! the method uses it, written in that order after `jsonrpc` and `method`.
//!
//! Base64 mode is a setting of the encoder: when on, every string value
//! except the `jsonrpc` value is written as `"sgc@b64:" + base64(value)`.
//! The parser decodes any value carrying that prefix whatever the setting,
//! so both forms are read at any time.

use std::borrow::Cow;

use base64::Engine as _;
use bytes::Bytes;
use serde::ser::SerializeMap;
use serde::{Deserialize, Serialize, Serializer};
use serde_json::{Map, Value};

/// The prefix marking a Base64-encoded string value.
pub const B64_PREFIX: &str = "sgc@b64:";

/// Method names of the protocol.
pub mod method {
    /// Server → client: the session id, right after the handshake.
    pub const SESSION: &str = "sgc@presence@session";
    /// Register a member; the notice of a new member.
    pub const MEMBER_NEW: &str = "sgc@presence@member@new";
    /// Unregister a member; the notice of a member leaving.
    pub const MEMBER_REMOVE: &str = "sgc@presence@member@remove";
    /// Join a channel; the notice of a member joining it.
    pub const CHANNEL_MEMBER_NEW: &str = "sgc@presence@channel@member@new";
    /// Leave a channel; the notice of a member leaving it.
    pub const CHANNEL_MEMBER_REMOVE: &str = "sgc@presence@channel@member@remove";
    /// Send a text to a channel or to every member.
    pub const PUBLISH_MSG: &str = "sgc@presence@publish@msg";
    /// Ask for the members of a channel or of the whole server.
    pub const GET_MEMBERS: &str = "sgc@presence@get@members";
    /// Server → client: the answer to `get@members`.
    pub const SEND_MEMBERS: &str = "sgc@presence@send@members";
    /// Invite members into a channel.
    pub const CHANNEL_INVITATION: &str = "sgc@presence@channel@invitation";
    /// Server → client: any refusal.
    pub const ERROR: &str = "sgc@presence@error@member@channel";
    /// Both ways: acknowledges a message by its id.
    pub const ACKNOWLEDGMENT: &str = "sgc@presence@acknowledgment";
}

/// Error codes of the protocol.
pub mod code {
    /// The member id is already known.
    pub const MEMBER_EXISTS: i64 = 1;
    /// The application refused the new member.
    pub const MEMBER_REFUSED: i64 = 2;
    /// No such member (on this connection, for acting as it).
    pub const MEMBER_NOT_FOUND: i64 = 3;
    /// The channel does not exist.
    pub const CHANNEL_NOT_FOUND: i64 = 5;
    /// The application refused to create the channel.
    pub const CHANNEL_REFUSED: i64 = 6;
    /// The application refused the channel membership.
    pub const CHANNEL_MEMBER_REFUSED: i64 = 10;
    /// Already a member of that channel.
    pub const ALREADY_IN_CHANNEL: i64 = 11;
    /// Not a member of that channel.
    pub const NOT_IN_CHANNEL: i64 = 12;
    /// The application refused the publication.
    pub const PUBLISH_REFUSED: i64 = 20;
    /// The application refused the member list.
    pub const MEMBERS_REFUSED: i64 = 30;
    /// Not JSON, or JSON but not an object.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid request: `jsonrpc`, `method` or `id` is wrong.
    pub const INVALID_REQUEST: i64 = -32600;
    /// A method this protocol does not accept from clients.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// A key the method needs is missing or has the wrong shape.
    pub const INVALID_PARAMS: i64 = -32602;
}

/// A presence member: who a connection says it is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Member {
    /// The member id, unique in the cluster.
    pub id: String,
    /// A display name.
    pub name: String,
    /// Free text, often JSON encoded as a string.
    pub info: String,
}

/// A member as a client sent it: any field may be missing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MemberIn {
    /// `member.id`; clients default it to their session id.
    pub id: Option<String>,
    /// `member.name`.
    pub name: Option<String>,
    /// `member.info`.
    pub info: Option<String>,
}

impl MemberIn {
    /// The id, or `default` when missing or empty.
    pub fn id_or<'a>(&'a self, default: &'a str) -> &'a str {
        self.id.as_deref().filter(|id| !id.is_empty()).unwrap_or(default)
    }

    /// A full member, with the id defaulted and name and info empty when
    /// missing.
    pub fn complete(&self, default_id: &str) -> Member {
        Member {
            id: self.id_or(default_id).to_owned(),
            name: self.name.clone().unwrap_or_default(),
            info: self.info.clone().unwrap_or_default(),
        }
    }
}

/// A parsed client message, every string already Base64-decoded.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Request {
    /// The method name.
    pub method: String,
    /// `member`, if present.
    pub member: Option<MemberIn>,
    /// `channel.name`, if a `channel` object was sent (possibly empty).
    pub channel: Option<String>,
    /// `message.text`, if a `message` object was sent.
    pub message: Option<String>,
    /// `members`, if present.
    pub members: Option<Vec<MemberIn>>,
    /// The id to acknowledge: a string, or a number kept as sent.
    pub id: Option<Id>,
}

impl Request {
    /// The channel name when one was given: a missing `channel` and an
    /// empty name both mean "no channel" (clients send `{"name":""}`).
    pub fn channel_name(&self) -> Option<&str> {
        self.channel.as_deref().filter(|c| !c.is_empty())
    }
}

/// A message id as the client sent it.
#[derive(Debug, Clone, PartialEq)]
pub enum Id {
    /// A string id (the protocol's form).
    Text(String),
    /// A number, answered as the same number.
    Number(serde_json::Number),
}

impl Id {
    /// The id as a lookup key (numbers in their JSON spelling).
    pub fn key(&self) -> Cow<'_, str> {
        match self {
            Self::Text(s) => Cow::Borrowed(s),
            Self::Number(n) => Cow::Owned(n.to_string()),
        }
    }
}

/// Why a client message could not be parsed, with the answer it gets.
#[derive(Debug, Clone, PartialEq)]
pub struct WireError {
    /// The error code.
    pub code: i64,
    /// A short lowercase explanation.
    pub text: String,
    /// The request's id when one could be read.
    pub id: Option<Id>,
}

impl WireError {
    fn new(code: i64, text: impl Into<String>) -> Self {
        Self { code, text: text.into(), id: None }
    }
}

/// Parses one text frame into a request, or says which error it earns.
pub fn parse(text: &str) -> Result<Request, WireError> {
    let Ok(value) = serde_json::from_str::<Value>(text) else {
        return Err(WireError::new(code::PARSE_ERROR, "parse error: not json"));
    };
    let Value::Object(mut obj) = value else {
        return Err(WireError::new(code::PARSE_ERROR, "parse error: not a json object"));
    };

    let id = parse_id(obj.remove("id"))?;
    let with_id = |mut e: WireError| {
        e.id.clone_from(&id);
        e
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        let e = WireError::new(code::INVALID_REQUEST, "invalid request: jsonrpc must be \"2.0\"");
        return Err(with_id(e));
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => decode(m).map_err(|_| {
            with_id(WireError::new(code::INVALID_REQUEST, "invalid request: bad base64 method"))
        })?,
        _ => {
            let e = WireError::new(code::INVALID_REQUEST, "invalid request: method missing");
            return Err(with_id(e));
        }
    };

    let fields = parse_fields(&mut obj).map_err(with_id)?;
    Ok(Request { method, id, ..fields })
}

fn parse_id(raw: Option<Value>) -> Result<Option<Id>, WireError> {
    let bad = || WireError::new(code::INVALID_REQUEST, "invalid request: bad id");
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(Id::Text(decode(s).map_err(|_| bad())?))),
        Some(Value::Number(n)) => Ok(Some(Id::Number(n))),
        Some(_) => Err(bad()),
    }
}

/// Reads `member`, `channel`, `message` and `members`.
fn parse_fields(obj: &mut Map<String, Value>) -> Result<Request, WireError> {
    let member = obj.remove("member").map(|m| member_in(m, "member")).transpose()?;
    let channel = object_field(obj.remove("channel"), "channel", "name")?;
    let message = object_field(obj.remove("message"), "message", "text")?;
    let members = match obj.remove("members") {
        None | Some(Value::Null) => None,
        Some(Value::Array(items)) => {
            Some(items.into_iter().map(|m| member_in(m, "members")).collect::<Result<_, _>>()?)
        }
        Some(_) => return Err(invalid("members must be an array")),
    };
    Ok(Request { member, channel, message, members, ..Request::default() })
}

/// `{"<key>": "<string>"}` objects: `channel` and `message`. Null or absent
/// means not sent; an object without the key reads as an empty string.
fn object_field(raw: Option<Value>, what: &str, key: &str) -> Result<Option<String>, WireError> {
    match raw {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(mut o)) => {
            Ok(Some(string_field(&mut o, what, key)?.unwrap_or_default()))
        }
        Some(_) => Err(invalid(&format!("{what} must be an object"))),
    }
}

fn member_in(raw: Value, what: &str) -> Result<MemberIn, WireError> {
    let Value::Object(mut o) = raw else {
        return Err(invalid(&format!("{what} must be an object")));
    };
    Ok(MemberIn {
        id: string_field(&mut o, what, "id")?,
        name: string_field(&mut o, what, "name")?,
        info: string_field(&mut o, what, "info")?,
    })
}

fn string_field(
    o: &mut Map<String, Value>,
    what: &str,
    key: &str,
) -> Result<Option<String>, WireError> {
    match o.remove(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => {
            decode(s).map(Some).map_err(|_| invalid(&format!("bad base64 in {what}.{key}")))
        }
        Some(_) => Err(invalid(&format!("{what}.{key} must be a string"))),
    }
}

fn invalid(what: &str) -> WireError {
    WireError::new(code::INVALID_PARAMS, format!("invalid params: {what}"))
}

/// Decodes a string carrying the Base64 prefix; others pass unchanged.
fn decode(s: String) -> Result<String, ()> {
    let Some(encoded) = s.strip_prefix(B64_PREFIX) else {
        return Ok(s);
    };
    let bytes = base64::engine::general_purpose::STANDARD.decode(encoded).map_err(|_| ())?;
    String::from_utf8(bytes).map_err(|_| ())
}

/// How server messages are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Encoder {
    /// Write every string value (except `jsonrpc`) Base64-encoded.
    pub base64: bool,
}

/// The `error` object of a refusal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ErrorBody<'a> {
    /// The code.
    pub code: i64,
    /// A short explanation.
    pub text: &'a str,
}

/// One server message, before encoding. Absent keys are not written.
#[derive(Debug, Clone, Default)]
pub struct Outbound<'a> {
    /// The method.
    pub method: &'a str,
    /// `member`.
    pub member: Option<&'a Member>,
    /// `channel.name`.
    pub channel: Option<&'a str>,
    /// `message.text`.
    pub message: Option<&'a str>,
    /// `error`.
    pub error: Option<ErrorBody<'a>>,
    /// `members`.
    pub members: Option<&'a [Member]>,
    /// `id`, as text.
    pub id: Option<&'a str>,
    /// `id`, as a number (an acknowledgement of a numeric id).
    pub numeric_id: Option<&'a serde_json::Number>,
}

impl Encoder {
    /// Encodes `out` in the exact key order of the protocol.
    pub fn encode(self, out: &Outbound<'_>) -> Bytes {
        // Serialising maps of strings and numbers cannot fail.
        Bytes::from(serde_json::to_vec(&Shaped { enc: self, out }).unwrap_or_default())
    }

    /// The session message: `message.text` is the session id.
    pub fn session(self, session_id: &str, ack_id: Option<&str>) -> Bytes {
        let out = Outbound {
            method: method::SESSION,
            message: Some(session_id),
            id: ack_id,
            ..default()
        };
        self.encode(&out)
    }

    /// The acknowledgement of a client message with `id`.
    pub fn ack(self, id: &Id) -> Bytes {
        let mut out = Outbound { method: method::ACKNOWLEDGMENT, ..default() };
        match id {
            Id::Text(s) => out.id = Some(s),
            Id::Number(n) => out.numeric_id = Some(n),
        }
        self.encode(&out)
    }

    fn text<'s>(self, s: &'s str) -> Cow<'s, str> {
        if self.base64 {
            let encoded = base64::engine::general_purpose::STANDARD.encode(s);
            Cow::Owned(format!("{B64_PREFIX}{encoded}"))
        } else {
            Cow::Borrowed(s)
        }
    }
}

fn default<'a>() -> Outbound<'a> {
    Outbound::default()
}

/// Serialises an [`Outbound`] with the encoder's string rule.
struct Shaped<'a, 'b> {
    enc: Encoder,
    out: &'b Outbound<'a>,
}

/// One string value, written plain or Base64 by the encoder.
struct Text<'s>(Encoder, &'s str);

impl Serialize for Text<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.text(self.1))
    }
}

/// A member object, its strings written by the encoder.
struct MemberOut<'m>(Encoder, &'m Member);

impl Serialize for MemberOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (enc, m) = (self.0, self.1);
        let mut map = s.serialize_map(Some(3))?;
        map.serialize_entry("id", &Text(enc, &m.id))?;
        map.serialize_entry("name", &Text(enc, &m.name))?;
        map.serialize_entry("info", &Text(enc, &m.info))?;
        map.end()
    }
}

/// A one-key object such as `{"name": ...}` or `{"text": ...}`.
struct Single<'s>(&'static str, Text<'s>);

impl Serialize for Single<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(1))?;
        map.serialize_entry(self.0, &self.1)?;
        map.end()
    }
}

struct MembersOut<'m>(Encoder, &'m [Member]);

impl Serialize for MembersOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.1.iter().map(|m| MemberOut(self.0, m)))
    }
}

impl Serialize for Shaped<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let (enc, out) = (self.enc, self.out);
        let mut map = s.serialize_map(None)?;
        map.serialize_entry("jsonrpc", "2.0")?;
        map.serialize_entry("method", &Text(enc, out.method))?;
        if let Some(m) = out.member {
            map.serialize_entry("member", &MemberOut(enc, m))?;
        }
        if let Some(c) = out.channel {
            map.serialize_entry("channel", &Single("name", Text(enc, c)))?;
        }
        if let Some(t) = out.message {
            map.serialize_entry("message", &Single("text", Text(enc, t)))?;
        }
        if let Some(e) = &out.error {
            map.serialize_entry("error", &ErrorOut(enc, e))?;
        }
        if let Some(ms) = out.members {
            map.serialize_entry("members", &MembersOut(enc, ms))?;
        }
        if let Some(id) = out.id {
            map.serialize_entry("id", &Text(enc, id))?;
        } else if let Some(n) = out.numeric_id {
            map.serialize_entry("id", n)?;
        }
        map.end()
    }
}

struct ErrorOut<'e, 'a>(Encoder, &'e ErrorBody<'a>);

impl Serialize for ErrorOut<'_, '_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(2))?;
        map.serialize_entry("code", &self.1.code)?;
        map.serialize_entry("text", &Text(self.0, self.1.text))?;
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const PLAIN: Encoder = Encoder { base64: false };
    const B64: Encoder = Encoder { base64: true };

    fn text(b: &Bytes) -> &str {
        std::str::from_utf8(b).unwrap()
    }

    fn member() -> Member {
        Member { id: "u1".into(), name: "Ann".into(), info: "{\"a\":1}".into() }
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
        let e = parse(r#"{"jsonrpc":"2.0","id":"7"}"#).unwrap_err();
        assert_eq!((e.code, e.id), (code::INVALID_REQUEST, Some(Id::Text("7".into()))));
        assert_eq!(
            parse(r#"{"jsonrpc":"2.0","method":"m","id":[1]}"#).unwrap_err().code,
            code::INVALID_REQUEST
        );
    }

    #[test]
    fn wrong_shapes_are_invalid_params() {
        for bad in [
            r#"{"jsonrpc":"2.0","method":"m","member":"u1"}"#,
            r#"{"jsonrpc":"2.0","method":"m","member":{"id":5}}"#,
            r#"{"jsonrpc":"2.0","method":"m","channel":"c"}"#,
            r#"{"jsonrpc":"2.0","method":"m","message":{"text":1}}"#,
            r#"{"jsonrpc":"2.0","method":"m","members":{}}"#,
            r#"{"jsonrpc":"2.0","method":"m","channel":{"name":"sgc@b64:***"}}"#,
        ] {
            assert_eq!(parse(bad).unwrap_err().code, code::INVALID_PARAMS, "{bad}");
        }
    }

    #[test]
    fn parse_reads_every_top_level_key() {
        let r = parse(
            r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@invitation",
                "member":{"id":"u1","name":"Ann"},"channel":{"name":"room"},
                "message":{"text":"hi"},"members":[{"id":"u2"}],"id":"9"}"#,
        )
        .unwrap();
        assert_eq!(r.method, method::CHANNEL_INVITATION);
        let m = r.member.as_ref().unwrap();
        assert_eq!(
            m.complete("sid"),
            Member { id: "u1".into(), name: "Ann".into(), info: "".into() }
        );
        assert_eq!(r.channel_name(), Some("room"));
        assert_eq!(r.message.as_deref(), Some("hi"));
        assert_eq!(r.members.unwrap()[0].id.as_deref(), Some("u2"));
        assert_eq!(r.id, Some(Id::Text("9".into())));
    }

    #[test]
    fn an_empty_channel_name_means_no_channel_and_ids_default() {
        let r = parse(r#"{"jsonrpc":"2.0","method":"m","channel":{"name":""},"member":{"id":""}}"#)
            .unwrap();
        assert_eq!(r.channel.as_deref(), Some(""));
        assert_eq!(r.channel_name(), None);
        assert_eq!(r.member.unwrap().id_or("sid"), "sid");
    }

    #[test]
    fn prefixed_values_are_decoded_whatever_the_setting() {
        let r = parse(
            r#"{"jsonrpc":"2.0","method":"sgc@b64:c2djQHByZXNlbmNlQG1lbWJlckBuZXc=",
                "member":{"id":"sgc@b64:dTE=","name":"plain"},"id":"sgc@b64:Nw=="}"#,
        )
        .unwrap();
        assert_eq!(r.method, method::MEMBER_NEW);
        assert_eq!(r.member.unwrap().id.as_deref(), Some("u1"));
        assert_eq!(r.id, Some(Id::Text("7".into())));
    }

    #[test]
    fn a_notice_has_the_exact_key_order() {
        let m = member();
        let out = Outbound {
            method: method::CHANNEL_MEMBER_NEW,
            member: Some(&m),
            channel: Some("room"),
            ..Outbound::default()
        };
        assert_eq!(
            text(&PLAIN.encode(&out)),
            r#"{"jsonrpc":"2.0","method":"sgc@presence@channel@member@new","member":{"id":"u1","name":"Ann","info":"{\"a\":1}"},"channel":{"name":"room"}}"#
        );
    }

    #[test]
    fn every_key_in_order_with_an_id() {
        let m = member();
        let list = [m.clone()];
        let out = Outbound {
            method: method::ERROR,
            member: Some(&m),
            channel: Some("c"),
            message: Some("t"),
            error: Some(ErrorBody { code: 20, text: "no" }),
            members: Some(&list),
            id: Some("x"),
            numeric_id: None,
        };
        assert_eq!(
            text(&PLAIN.encode(&out)),
            concat!(
                r#"{"jsonrpc":"2.0","method":"sgc@presence@error@member@channel","#,
                r#""member":{"id":"u1","name":"Ann","info":"{\"a\":1}"},"channel":{"name":"c"},"#,
                r#""message":{"text":"t"},"error":{"code":20,"text":"no"},"#,
                r#""members":[{"id":"u1","name":"Ann","info":"{\"a\":1}"}],"id":"x"}"#
            )
        );
    }

    #[test]
    fn base64_mode_encodes_every_string_but_jsonrpc() {
        let m = member();
        let out = Outbound {
            method: method::MEMBER_NEW,
            member: Some(&m),
            error: Some(ErrorBody { code: 1, text: "x" }),
            id: Some("7"),
            ..Outbound::default()
        };
        let v: Value = serde_json::from_slice(&B64.encode(&out)).unwrap();
        assert_eq!(
            v,
            json!({
                "jsonrpc": "2.0",
                "method": "sgc@b64:c2djQHByZXNlbmNlQG1lbWJlckBuZXc=",
                "member": {"id": "sgc@b64:dTE=", "name": "sgc@b64:QW5u", "info": "sgc@b64:eyJhIjoxfQ=="},
                "error": {"code": 1, "text": "sgc@b64:eA=="},
                "id": "sgc@b64:Nw=="
            })
        );
        // What we write, we read back.
        let back = parse(text(&B64.encode(&out))).unwrap();
        assert_eq!(back.member.unwrap().complete(""), m);
    }

    #[test]
    fn session_and_acknowledgement_shapes() {
        assert_eq!(
            text(&PLAIN.session("abc", None)),
            r#"{"jsonrpc":"2.0","method":"sgc@presence@session","message":{"text":"abc"}}"#
        );
        assert_eq!(
            text(&PLAIN.ack(&Id::Text("5".into()))),
            r#"{"jsonrpc":"2.0","method":"sgc@presence@acknowledgment","id":"5"}"#
        );
        let n = Id::Number(serde_json::Number::from(42));
        assert_eq!(
            text(&PLAIN.ack(&n)),
            r#"{"jsonrpc":"2.0","method":"sgc@presence@acknowledgment","id":42}"#
        );
    }
}
