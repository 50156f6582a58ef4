//! The WebSocket opening handshake (RFC 6455 section 4.2) on top of hyper.
//!
//! hyper parses the HTTP request and hands over the upgraded stream; this
//! module decides whether to accept it and which sub-protocol to speak.
//! The decision is a pure function of the request headers.

use base64::Engine as _;
use http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use sha1::{Digest, Sha1};

use crate::{presence, sgc};

/// The protocol a connection will speak.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Speaks {
    /// The sgc protocol; `echo_header` says whether to name it in the reply
    /// (only when the client offered it).
    Sgc {
        /// Whether the client offered `esegece.com`.
        echo_header: bool,
    },
    /// The presence protocol (always named in the reply: it is only chosen
    /// when offered).
    Presence,
}

/// Why an upgrade request was refused, with the HTTP answer it gets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The HTTP status.
    pub status: StatusCode,
    /// A short explanation for the body.
    pub reason: String,
}

/// Sub-protocols a server serves when it runs only the sgc protocol.
pub const SERVED: &[&str] = &[sgc::SUBPROTOCOL];

/// Sub-protocols a server serves when it runs the presence protocol too.
pub const SERVED_WITH_PRESENCE: &[&str] = &[sgc::SUBPROTOCOL, presence::SUBPROTOCOL];

/// True when the request asks for a WebSocket upgrade at all.
pub fn is_upgrade(method: &Method, headers: &HeaderMap) -> bool {
    let has_token = |name: header::HeaderName, token: &str| {
        headers.get_all(name).iter().any(|v| {
            v.to_str()
                .map(|s| s.split(',').any(|t| t.trim().eq_ignore_ascii_case(token)))
                .unwrap_or(false)
        })
    };
    method == Method::GET
        && has_token(header::UPGRADE, "websocket")
        && has_token(header::CONNECTION, "upgrade")
}

/// Checks the handshake headers and picks the sub-protocol: the first one
/// the client offered that is in `served`. A client that offers none gets
/// the sgc protocol.
pub fn negotiate(headers: &HeaderMap, served: &[&str]) -> Result<(Speaks, String), Refused> {
    let refuse = |status, reason: String| Err(Refused { status, reason });

    let version = headers.get(header::SEC_WEBSOCKET_VERSION).and_then(|v| v.to_str().ok());
    if version.map(str::trim) != Some("13") {
        return refuse(
            StatusCode::UPGRADE_REQUIRED,
            "unsupported websocket version; use 13".into(),
        );
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY).and_then(|v| v.to_str().ok()) else {
        return refuse(StatusCode::BAD_REQUEST, "missing sec-websocket-key".into());
    };

    // A header that is not visible ASCII offers something, just nothing we
    // can read: it is refused like any unknown sub-protocol.
    let values = headers.get_all(header::SEC_WEBSOCKET_PROTOCOL);
    let Ok(values) = values.iter().map(|v| v.to_str()).collect::<Result<Vec<_>, _>>() else {
        let reason =
            format!("unreadable sub-protocol header; this server speaks: {}", served.join(", "));
        return refuse(StatusCode::BAD_REQUEST, reason);
    };
    let offered: Vec<&str> = values
        .into_iter()
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .collect();

    let chosen = offered.iter().find(|token| served.contains(token));
    let speaks = match chosen {
        None if offered.is_empty() => Speaks::Sgc { echo_header: false },
        Some(&token) if token == presence::SUBPROTOCOL => Speaks::Presence,
        Some(_) => Speaks::Sgc { echo_header: true },
        None => {
            // Echo a bounded part of what was offered, never the whole header.
            let mut shown = offered.join(", ");
            if shown.len() > 120 {
                let cut = (0..=120).rev().find(|&i| shown.is_char_boundary(i)).unwrap_or(0);
                shown.truncate(cut);
                shown.push_str("...");
            }
            let reason = format!(
                "unsupported sub-protocol {shown}; this server speaks: {}",
                served.join(", ")
            );
            return refuse(StatusCode::BAD_REQUEST, reason);
        }
    };
    Ok((speaks, accept_key(key.trim())))
}

/// `Sec-WebSocket-Accept` for a client key (RFC 6455 section 4.2.2).
pub fn accept_key(key: &str) -> String {
    // The GUID is fixed by RFC 6455; it proves the server read the key.
    const GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    let mut sha = Sha1::new();
    sha.update(key.as_bytes());
    sha.update(GUID);
    base64::engine::general_purpose::STANDARD.encode(sha.finalize())
}

/// The header value naming the chosen sub-protocol, if any is echoed.
pub fn protocol_header(speaks: Speaks) -> Option<HeaderValue> {
    match speaks {
        Speaks::Sgc { echo_header: true } => Some(HeaderValue::from_static(sgc::SUBPROTOCOL)),
        Speaks::Sgc { echo_header: false } => None,
        Speaks::Presence => Some(HeaderValue::from_static(presence::SUBPROTOCOL)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(protocols: Option<&str>) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::SEC_WEBSOCKET_VERSION, HeaderValue::from_static("13"));
        h.insert(header::SEC_WEBSOCKET_KEY, HeaderValue::from_static("dGhlIHNhbXBsZSBub25jZQ=="));
        if let Some(p) = protocols {
            h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_str(p).unwrap());
        }
        h
    }

    #[test]
    fn accept_key_matches_the_rfc_example() {
        assert_eq!(accept_key("dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
    }

    #[test]
    fn no_subprotocol_gets_sgc_without_echo() {
        let (speaks, _) = negotiate(&headers(None), SERVED).unwrap();
        assert_eq!(speaks, Speaks::Sgc { echo_header: false });
    }

    #[test]
    fn offering_sgc_among_others_gets_it_echoed() {
        let (speaks, _) = negotiate(&headers(Some("chat, esegece.com")), SERVED).unwrap();
        assert_eq!(speaks, Speaks::Sgc { echo_header: true });
    }

    #[test]
    fn an_unreadable_or_huge_offer_is_refused_briefly() {
        let mut h = headers(None);
        h.insert(header::SEC_WEBSOCKET_PROTOCOL, HeaderValue::from_bytes("é".as_bytes()).unwrap());
        assert_eq!(negotiate(&h, SERVED).unwrap_err().status, StatusCode::BAD_REQUEST);

        let long = "x".repeat(60_000);
        let r = negotiate(&headers(Some(&long)), SERVED).unwrap_err();
        assert!(r.reason.len() < 300, "{}", r.reason.len());
    }

    #[test]
    fn only_unknown_subprotocols_are_refused_naming_ours() {
        let r = negotiate(&headers(Some("chat, mqtt")), SERVED).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        assert!(r.reason.contains("esegece.com"), "{}", r.reason);
    }

    #[test]
    fn presence_is_chosen_when_offered_and_served() {
        let (speaks, _) =
            negotiate(&headers(Some("chat, presence.esegece.com")), SERVED_WITH_PRESENCE).unwrap();
        assert_eq!(speaks, Speaks::Presence);
        assert_eq!(protocol_header(speaks), Some(HeaderValue::from_static("presence.esegece.com")));
    }

    #[test]
    fn a_client_offering_both_gets_the_first_it_listed() {
        let both = SERVED_WITH_PRESENCE;
        let (first, _) =
            negotiate(&headers(Some("presence.esegece.com, esegece.com")), both).unwrap();
        assert_eq!(first, Speaks::Presence);
        let (first, _) =
            negotiate(&headers(Some("esegece.com, presence.esegece.com")), both).unwrap();
        assert_eq!(first, Speaks::Sgc { echo_header: true });
        let (none, _) = negotiate(&headers(None), both).unwrap();
        assert_eq!(none, Speaks::Sgc { echo_header: false }, "no sub-protocol still means sgc");
    }

    #[test]
    fn presence_is_refused_where_it_is_not_served() {
        let r = negotiate(&headers(Some("presence.esegece.com")), SERVED).unwrap_err();
        assert_eq!(r.status, StatusCode::BAD_REQUEST);
        let (speaks, _) =
            negotiate(&headers(Some("presence.esegece.com, esegece.com")), SERVED).unwrap();
        assert_eq!(speaks, Speaks::Sgc { echo_header: true });
    }
}
