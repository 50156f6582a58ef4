//! What travels between nodes: an envelope around one kind of traffic.
//!
//! Every envelope names its origin node, the origin's incarnation (fresh
//! each time the process starts) and a sequence number, so a receiver can
//! drop its own echoes and duplicates and never mistake a restarted node's
//! new numbers for old ones. Envelopes are JSON: easy to inspect on the
//! wire, and the message inside is JSON already.

use std::sync::Arc;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::hub::kept::KeptCursor;
use crate::presence::relay::{Invitation, PresenceMessage};
use crate::presence::{PresenceDelta, PresenceSnapshot};
use crate::sgc::{KeptRecord, Publication};

/// One message between nodes.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    /// The node that made it.
    pub origin: Arc<str>,
    /// The origin's incarnation.
    pub incarnation: u64,
    /// Per-origin sequence; 0 for unsequenced liveness traffic.
    pub seq: u64,
    /// Origin wall-clock time in microseconds since the Unix epoch, for the
    /// cross-node delay histogram.
    pub sent_us: u64,
    /// The nodes it is for; absent means every node. Engines that cannot
    /// address nodes (Redis) deliver to all, and the others drop it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub to: Option<Vec<Arc<str>>>,
    /// The traffic itself.
    pub body: Body,
}

/// The kinds of traffic, each with a clear owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Body {
    /// An sgc publish or broadcast.
    Publication {
        /// The publication.
        publication: Publication,
    },
    /// The origin's complete local interest (sent when a link comes up).
    InterestSnapshot {
        /// Channels and patterns with local subscribers.
        names: Vec<Arc<str>>,
    },
    /// The origin gained its first local subscriber of `name`.
    InterestAdded {
        /// Channel or pattern.
        name: Arc<str>,
        /// When not 0, the receiver answers `InterestAck` with this token.
        #[serde(default)]
        ack: u64,
    },
    /// The receiver applied the `InterestAdded` carrying `token`.
    InterestAck {
        /// The token of the acknowledged change.
        token: u64,
    },
    /// The origin lost its last local subscriber of `name`.
    InterestRemoved {
        /// Channel or pattern.
        name: Arc<str>,
    },
    /// A change of the origin's own presence members. `pseq` counts the
    /// origin's presence changes, so a receiver notices one it missed.
    PresenceDelta {
        /// Presence sequence of the origin.
        pseq: u64,
        /// The change.
        delta: PresenceDelta,
    },
    /// Everything the origin's connections hold, as of `pseq`.
    PresenceSnapshot {
        /// Presence sequence of the origin when the snapshot was taken.
        pseq: u64,
        /// The members.
        snapshot: PresenceSnapshot,
    },
    /// A presence `publish@msg` from one of the origin's members.
    PresenceMessage {
        /// The message.
        message: PresenceMessage,
    },
    /// A presence invitation from one of the origin's members.
    PresenceInvitation {
        /// The invitation.
        invitation: Invitation,
    },
    /// The origin is alive (and, through Redis, its own probe).
    Heartbeat,
    /// The origin (re)joined: every node answers with its state.
    SyncRequest,
    /// The origin asks every node for its channels and subscriber counts.
    ChannelsQuery {
        /// Names the answers.
        token: u64,
    },
    /// The answer to a `ChannelsQuery`.
    ChannelsReply {
        /// The query's token.
        token: u64,
        /// Channel names with local subscriber counts.
        channels: Vec<(Arc<str>, usize)>,
    },
    /// The origin asks for a page of the receiver's kept events (it just
    /// linked to the receiver, or heard it again). Pulled a page at a time
    /// so no snapshot outgrows a link queue.
    KeptRequest {
        /// Names this pull, so pages of an earlier one are told apart.
        pull: u64,
        /// Where the page starts (the default cursor is the start).
        cursor: KeptCursor,
    },
    /// One page of the origin's kept events, answering a `KeptRequest`.
    KeptPage {
        /// The request's pull.
        pull: u64,
        /// Kept events, channel by channel, oldest first within each.
        records: Vec<KeptRecord>,
        /// Where the next page starts; `None` on the last page.
        next: Option<KeptCursor>,
    },
    /// The origin is stopping; forget it now rather than at the timeout.
    Leave,
    /// Mesh: the link addresses of the nodes the origin knows, so one seed
    /// peer is enough to find the whole mesh.
    Peers {
        /// `(node id, link address)` pairs.
        peers: Vec<(Arc<str>, String)>,
    },
}

impl Envelope {
    /// Encodes once; the bytes are shared by every link that sends them.
    pub fn encode(&self) -> Bytes {
        Bytes::from(serde_json::to_vec(self).unwrap_or_default())
    }

    /// Decodes a received envelope.
    ///
    /// # Errors
    /// When the bytes are not a valid envelope.
    pub fn decode(bytes: &[u8]) -> Result<Self, serde_json::Error> {
        serde_json::from_slice(bytes)
    }
}

/// Microseconds since the Unix epoch, for `sent_us`.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}
