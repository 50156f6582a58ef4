//! The mesh link handshake.
//!
//! Both ends speak at once: each sends a `Hello` (protocol version, node id,
//! incarnation, a random challenge, its link address), then a `Proof`: an
//! HMAC-SHA256, keyed with the shared secret, over the other side's
//! challenge and its own identity. The secret itself never crosses the wire,
//! and a proof cannot be replayed on another link because the challenge is
//! fresh. A peer with the wrong secret, another version or our own node id
//! gets a `Refuse` with the reason, which both ends log.

use hmac::{KeyInit, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// The link protocol version; peers must match exactly.
pub const VERSION: u32 = 1;

/// Frames exchanged before a link carries envelopes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(tag = "hs", rename_all = "snake_case")]
pub enum Handshake {
    /// Who I am and my challenge to you.
    Hello {
        /// Link protocol version.
        version: u32,
        /// Sender's node id.
        node_id: String,
        /// Sender's incarnation.
        incarnation: u64,
        /// Random challenge, hex.
        nonce: String,
        /// Sender's link address, for gossip.
        listen: String,
    },
    /// My answer to your challenge.
    Proof {
        /// HMAC, hex.
        mac: String,
    },
    /// I will not link with you, and why.
    Refuse {
        /// A short reason.
        reason: String,
    },
}

/// Why a handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// The peer speaks another link version.
    #[error("version mismatch: ours {ours}, theirs {theirs}")]
    Version {
        /// Our version.
        ours: u32,
        /// Theirs.
        theirs: u32,
    },
    /// The peer has our node id (often: we dialled ourselves).
    #[error("peer has our own node id {0:?}")]
    OwnId(String),
    /// Another live process already holds this node id in the cluster
    /// (two nodes started with the same `--node-id`, or a restart whose old
    /// process has not yet timed out).
    #[error("node id {0:?} is already linked to another live process")]
    DuplicateId(String),
    /// The peer could not prove the shared secret.
    #[error("wrong cluster secret")]
    BadProof,
    /// The peer refused us.
    #[error("refused by peer: {0}")]
    RefusedByPeer(String),
    /// The peer sent something else than the handshake expects.
    #[error("unexpected handshake frame")]
    Unexpected,
    /// TLS failed: no, untrusted or mismatched certificate, or plain TCP
    /// where TLS was expected.
    #[error("tls handshake failed: {0}")]
    Tls(String),
    /// The link failed or timed out during the handshake.
    #[error("link failed during handshake: {0}")]
    Io(String),
}

/// A fresh random challenge.
pub fn nonce() -> String {
    let bytes: [u8; 16] = rand::random();
    hex::encode(bytes)
}

/// The proof that `node_id` knows `secret`, answering `their_nonce`.
pub fn proof(secret: Option<&str>, their_nonce: &str, my_nonce: &str, node_id: &str) -> String {
    // An absent secret is the empty key: nodes without secrets link with
    // each other, and never with a node that has one.
    let mut mac = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.unwrap_or("").as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"));
    for part in ["wscluster-link", their_nonce, my_nonce, node_id] {
        mac.update(part.as_bytes());
        mac.update(b"\0");
    }
    hex::encode(mac.finalize().into_bytes())
}

/// Who is checking a `Hello`: this process's node id and incarnation.
#[derive(Debug, Clone, Copy)]
pub struct Me<'a> {
    /// This node's id.
    pub id: &'a str,
    /// This process's incarnation.
    pub incarnation: u64,
}

/// Checks a peer's `Hello` against ours. Our own id with our own
/// incarnation is this process (a peer address that is our own); our id
/// with another incarnation is a second process started with our id, which
/// must not pass unnoticed (the two would each serve clients as if alone).
///
/// # Errors
/// When the peer must be refused.
pub fn check_hello(
    me: Me<'_>,
    version: u32,
    node_id: &str,
    incarnation: u64,
) -> Result<(), HandshakeError> {
    if version != VERSION {
        return Err(HandshakeError::Version { ours: VERSION, theirs: version });
    }
    if node_id == me.id {
        if incarnation == me.incarnation {
            return Err(HandshakeError::OwnId(node_id.to_owned()));
        }
        return Err(HandshakeError::DuplicateId(node_id.to_owned()));
    }
    Ok(())
}

/// Checks a peer's proof in constant time.
pub fn verify(
    secret: Option<&str>,
    my_nonce: &str,
    their_nonce: &str,
    their_id: &str,
    mac: &str,
) -> bool {
    let Ok(given) = hex::decode(mac) else {
        return false;
    };
    let mut m = <hmac::Hmac<Sha256> as KeyInit>::new_from_slice(secret.unwrap_or("").as_bytes())
        .unwrap_or_else(|_| unreachable!("hmac accepts keys of any length"));
    for part in ["wscluster-link", my_nonce, their_nonce, their_id] {
        m.update(part.as_bytes());
        m.update(b"\0");
    }
    m.verify_slice(&given).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_proof_with_the_same_secret_verifies() {
        let (na, nb) = (nonce(), nonce());
        let p = proof(Some("s3cret"), &na, &nb, "b");
        assert!(verify(Some("s3cret"), &na, &nb, "b", &p));
    }

    #[test]
    fn a_wrong_or_missing_secret_or_replayed_proof_fails() {
        let (na, nb) = (nonce(), nonce());
        let p = proof(Some("wrong"), &na, &nb, "b");
        assert!(!verify(Some("s3cret"), &na, &nb, "b", &p));
        assert!(!verify(None, &na, &nb, "b", &proof(Some("s3cret"), &na, &nb, "b")));
        let replay = proof(Some("s3cret"), &na, &nb, "b");
        assert!(!verify(Some("s3cret"), &nonce(), &nb, "b", &replay), "fresh challenge");
        assert!(!verify(Some("s3cret"), &na, &nb, "c", &replay), "other identity");
    }

    #[test]
    fn own_id_and_other_versions_are_refused() {
        let me = Me { id: "a", incarnation: 7 };
        assert_eq!(check_hello(me, VERSION, "a", 7), Err(HandshakeError::OwnId("a".into())));
        assert_eq!(
            check_hello(me, VERSION, "a", 8),
            Err(HandshakeError::DuplicateId("a".into())),
            "another process with our id"
        );
        assert!(matches!(
            check_hello(me, VERSION + 1, "b", 1),
            Err(HandshakeError::Version { .. })
        ));
        assert!(check_hello(me, VERSION, "b", 1).is_ok());
    }
}
