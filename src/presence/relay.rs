//! What leaves this node when presence is clustered.
//!
//! The roster is cluster-wide, but each node only ever announces changes
//! to its *own* members ([`PresenceDelta`]s, and
//! [`super::PresenceSnapshot`]s when a peer needs the whole picture); every
//! node computes the notices for its clients itself. Messages and invitations are not roster state: they are
//! handed over as they are, and the receiving node delivers them to its
//! own connections.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::roster::PresenceDelta;
use super::wire::Member;

/// A `publish@msg`, as relayed to the other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceMessage {
    /// The sender, in full.
    pub sender: Member,
    /// The channel; `None` sends to every member.
    pub channel: Option<Arc<str>>,
    /// `message.text`.
    pub text: String,
}

/// A `channel@invitation`, as relayed to the other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Invitation {
    /// Who invites, in full.
    pub inviter: Member,
    /// The channel to join.
    pub channel: Arc<str>,
    /// The invitees (each known to the roster when it was sent).
    pub invitees: Vec<Member>,
}

/// Where presence traffic goes beyond this node. The cluster implements it;
/// the protocol never learns which engine is behind it.
///
/// Methods are called on the connection's task, after the roster lock is
/// released, so an implementation may call [`super::PresenceProtocol`]
/// (for example [`super::PresenceProtocol::snapshot_local`] under its own
/// send lock). The deltas of one connection are handed over in the order
/// they happened; deltas of different connections commute.
pub trait PresenceRelay: Send + Sync {
    /// This node's own members changed.
    fn delta(&self, delta: &PresenceDelta);
    /// A local member published to a channel or to everyone.
    fn publish(&self, message: &PresenceMessage);
    /// A local member invited members into a channel; the nodes holding an
    /// invitee forward it to their connections.
    fn invitation(&self, invitation: &Invitation);
}
