//! The presence protocol (sub-protocol `presence.esegece.com`): members,
//! channels of members, who is around, and who comes and goes.
//!
//! [`PresenceProtocol`] is the shared, cloneable handle. It owns this node's
//! connections (a [`Hub`], used only for its outboxes), the cluster-wide
//! [`Roster`] behind one lock, and the hooks. Client messages are handled in
//! [`handler`]; every roster change returns its [`Notice`]s, which are
//! encoded once each and pushed to the local connections the roster names,
//! all under the roster lock, so every client sees changes in the order the
//! roster made them.
//!
//! Clustering plugs in at two places, and nothing else here knows about it:
//! local changes go out through a [`PresenceRelay`] (deltas of this node's
//! own members, messages, invitations), and other nodes' changes come in
//! through [`PresenceProtocol::apply_remote`], [`PresenceProtocol::replace_node`]
//! and [`PresenceProtocol::remove_node`], which run the same roster code and
//! notify this node's clients. With no relay it is a complete single-node
//! server.

pub mod handler;
pub mod hooks;
pub mod relay;
pub mod roster;
pub mod session;
pub mod settings;
pub mod wire;

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, RwLock};

use crate::hub::Hub;
use crate::hub::acks::PendingAcks;
use crate::hub::outbox::{OutboxReceiver, Outgoing};
use crate::hub::subscriptions::ConnId;
use crate::sgc::{Client, new_id};
use crate::sync;

pub use hooks::{PresenceError, PresenceHooks};
pub use relay::{Invitation, PresenceMessage, PresenceRelay};
pub use roster::{Holding, Notice, PresenceDelta, PresenceSnapshot, Roster, RosterError};
pub use session::PresenceSession;
pub use settings::PresenceSettings;
pub use wire::Member;

use wire::{Encoder, Outbound, method};

/// The sub-protocol token of the presence protocol.
pub const SUBPROTOCOL: &str = "presence.esegece.com";

/// A cheap, cloneable handle to the presence protocol of one node.
#[derive(Clone)]
pub struct PresenceProtocol {
    inner: Arc<Inner>,
}

struct Inner {
    settings: PresenceSettings,
    hooks: PresenceHooks,
    hub: Hub,
    roster: Mutex<Roster>,
    relay: RwLock<Option<Arc<dyn PresenceRelay>>>,
}

impl PresenceProtocol {
    /// A protocol with default settings and no hooks.
    pub fn new() -> Self {
        Self::with(PresenceSettings::default(), PresenceHooks::default())
    }

    /// A protocol with the given settings and hooks.
    pub fn with(settings: PresenceSettings, hooks: PresenceHooks) -> Self {
        let inner = Inner {
            hub: Hub::new(settings.hub),
            settings,
            hooks,
            roster: Mutex::default(),
            relay: RwLock::new(None),
        };
        Self { inner: Arc::new(inner) }
    }

    /// The protocol's settings.
    pub fn settings(&self) -> &PresenceSettings {
        &self.inner.settings
    }

    /// The hub holding this node's presence connections.
    pub fn hub(&self) -> &Hub {
        &self.inner.hub
    }

    pub(crate) fn hooks(&self) -> &PresenceHooks {
        &self.inner.hooks
    }

    /// Every member of the cluster-wide roster, by id.
    pub fn members(&self) -> Vec<Member> {
        self.roster().members()
    }

    /// The members of `channel`, by id; `None` when no member is in it.
    pub fn channel_members(&self, channel: &str) -> Option<Vec<Member>> {
        self.roster().channel_members(channel)
    }

    // ------------------------------------------------------------- cluster

    /// Connects this protocol to a cluster relay (see [`crate::cluster`]).
    pub fn set_relay(&self, relay: Option<Arc<dyn PresenceRelay>>) {
        *sync::write(&self.inner.relay) = relay;
    }

    /// What this node's own connections hold, for the other nodes. Safe to
    /// call while holding a lock the relay takes (see [`PresenceRelay`]).
    pub fn snapshot_local(&self) -> PresenceSnapshot {
        self.roster().snapshot_local()
    }

    /// Applies a change `node` made to its own members and notifies this
    /// node's clients.
    pub fn apply_remote(&self, node: &Arc<str>, delta: &PresenceDelta) {
        self.change_remote(|r| r.apply_remote(node, delta));
    }

    /// Replaces what `node` holds with its snapshot; clients hear only of
    /// what really changed.
    pub fn replace_node(&self, node: &Arc<str>, snapshot: &PresenceSnapshot) {
        self.change_remote(|r| r.replace_node(node, snapshot));
    }

    /// Removes every member `node` held (it left, crashed or is cut off);
    /// members still held elsewhere stay, silently.
    pub fn remove_node(&self, node: &Arc<str>) {
        self.change_remote(|r| r.remove_node(node));
    }

    /// Delivers a `publish@msg` to this node's connections in its channel
    /// (or to every member); returns how many it was queued for.
    pub fn deliver_message(&self, m: &PresenceMessage) -> usize {
        let roster = self.roster();
        let to = match &m.channel {
            Some(channel) => roster.conns_in(channel),
            None => roster.conns_of_all(),
        };
        let out = Outbound {
            method: method::PUBLISH_MSG,
            member: Some(&m.sender),
            channel: Some(m.channel.as_deref().unwrap_or("")),
            message: Some(&m.text),
            ..Outbound::default()
        };
        self.send_all(&to, out)
    }

    /// Delivers an invitation to this node's connections of each invitee;
    /// returns how many it was queued for.
    pub fn deliver_invitation(&self, inv: &Invitation) -> usize {
        let roster = self.roster();
        let to: BTreeSet<ConnId> =
            inv.invitees.iter().flat_map(|m| roster.conns_of(&m.id)).collect();
        let out = Outbound {
            method: method::CHANNEL_INVITATION,
            member: Some(&inv.inviter),
            channel: Some(&inv.channel),
            members: Some(&inv.invitees),
            ..Outbound::default()
        };
        self.send_all(&to, out)
    }

    // ---------------------------------------------------------- connection

    /// Registers a new connection and queues its session message.
    pub fn open(&self, remote: Option<SocketAddr>) -> (PresenceSession, OutboxReceiver) {
        let (conn, _tx, rx) = self.inner.hub.register();
        let client = Client { session_id: new_id(), remote };
        let acks = PendingAcks::new(self.inner.settings.pending_acks);
        let session = PresenceSession { conn, client, acks };

        let session_id = session.client.session_id.clone();
        self.send(&session, Outbound { message: Some(&session_id), ..outbound(method::SESSION) });
        (session, rx)
    }

    /// Forgets a closed connection: every member it registered leaves the
    /// roster with the full notices, whatever id it chose.
    pub fn close(&self, s: &PresenceSession) {
        let mut held = false;
        let _ = self.change(Some(&s.client), None, |r| {
            held = r.count_held_by(s.conn) > 0;
            Ok(r.close_local(s.conn))
        });
        self.inner.hub.unregister(s.conn);
        if held {
            self.relay_delta(&PresenceDelta::ConnectionClosed { conn: s.conn });
        }
    }

    // ------------------------------------------------------------ internal

    fn roster(&self) -> std::sync::MutexGuard<'_, Roster> {
        sync::lock(&self.inner.roster)
    }

    pub(crate) fn relay(&self) -> Option<Arc<dyn PresenceRelay>> {
        sync::read(&self.inner.relay).clone()
    }

    pub(crate) fn relay_delta(&self, delta: &PresenceDelta) {
        if let Some(relay) = self.relay() {
            relay.delta(delta);
        }
    }

    /// Runs a roster operation for a local client: on success its notices
    /// go to their recipients (plus `requester`, who always hears of its own
    /// request) under the roster lock, then the after-events run.
    pub(crate) fn change(
        &self,
        cause: Option<&Client>,
        requester: Option<ConnId>,
        op: impl FnOnce(&mut Roster) -> Result<Vec<Notice>, RosterError>,
    ) -> Result<Vec<Notice>, RosterError> {
        let notices = {
            let mut roster = self.roster();
            let notices = op(&mut roster)?;
            for notice in &notices {
                let mut to = roster.recipients(notice);
                to.extend(requester);
                if let Some(out) = notice_outbound(notice) {
                    self.send_all(&to, out);
                }
            }
            notices
        };
        self.after_events(cause, &notices);
        Ok(notices)
    }

    fn change_remote(&self, op: impl FnOnce(&mut Roster) -> Vec<Notice>) {
        let _ = self.change(None, None, |r| Ok(op(r)));
    }

    fn after_events(&self, cause: Option<&Client>, notices: &[Notice]) {
        let hooks = &self.inner.hooks;
        for notice in notices {
            match notice {
                Notice::MemberNew(m) => hooks.new_member.as_ref().map(|f| f(cause, m)),
                Notice::MemberRemove(m) => hooks.remove_member.as_ref().map(|f| f(cause, m)),
                Notice::ChannelNew(c) => hooks.new_channel.as_ref().map(|f| f(cause, c)),
                Notice::ChannelMemberNew { channel, member } => {
                    hooks.new_channel_member.as_ref().map(|f| f(cause, channel, member))
                }
                Notice::ChannelMemberRemove { channel, member } => {
                    hooks.remove_channel_member.as_ref().map(|f| f(cause, channel, member))
                }
            };
        }
    }

    pub(crate) fn encoder(&self) -> Encoder {
        Encoder { base64: self.inner.settings.base64 }
    }

    /// Encodes a server message once, with a fresh id to acknowledge when
    /// acknowledgements are on.
    pub(crate) fn outgoing(&self, out: Outbound<'_>) -> Outgoing {
        let enc = self.encoder();
        if !self.inner.settings.acknowledgment {
            return Outgoing::new(enc.encode(&out));
        }
        let id = new_id();
        let bytes = enc.encode(&Outbound { id: Some(&id), ..out });
        Outgoing { bytes, ack_id: Some(id) }
    }

    /// Queues one message for one connection.
    pub(crate) fn send(&self, s: &PresenceSession, out: Outbound<'_>) {
        self.inner.hub.send_to(s.conn, self.outgoing(out));
    }

    /// Queues one message, encoded once, for each of `to`.
    fn send_all(&self, to: &BTreeSet<ConnId>, out: Outbound<'_>) -> usize {
        if to.is_empty() {
            return 0;
        }
        let msg = self.outgoing(out);
        to.iter().filter(|&&conn| self.inner.hub.send_to(conn, msg.clone())).count()
    }
}

impl Default for PresenceProtocol {
    fn default() -> Self {
        Self::new()
    }
}

/// An empty server message naming `method`.
pub(crate) fn outbound(method: &str) -> Outbound<'_> {
    Outbound { method, ..Outbound::default() }
}

/// The message clients get for a notice; `None` for hook-only notices.
pub(crate) fn notice_outbound(notice: &Notice) -> Option<Outbound<'_>> {
    let out = match notice {
        Notice::MemberNew(m) => Outbound { member: Some(m), ..outbound(method::MEMBER_NEW) },
        Notice::MemberRemove(m) => Outbound { member: Some(m), ..outbound(method::MEMBER_REMOVE) },
        Notice::ChannelMemberNew { channel, member } => Outbound {
            member: Some(member),
            channel: Some(channel),
            ..outbound(method::CHANNEL_MEMBER_NEW)
        },
        Notice::ChannelMemberRemove { channel, member } => Outbound {
            member: Some(member),
            channel: Some(channel),
            ..outbound(method::CHANNEL_MEMBER_REMOVE)
        },
        Notice::ChannelNew(_) => return None,
    };
    Some(out)
}
