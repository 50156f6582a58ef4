//! The roster: who is a member, and of which channels, across the cluster.
//!
//! Pure data, no I/O and no clock. A member is held by one or more
//! *holders*: a connection of this node ([`Node::Local`]) or a connection
//! of another node ([`Node::Remote`]). Each holder carries its own copy of
//! the member and its own channel set; the roster shows the union. A member
//! is in the roster while any holder holds it, and in a channel while any
//! of its holders joined it. Two holders of one id happen only when two
//! nodes admit the same id before hearing of each other; both are kept,
//! and the member is listed once, showing the data of its oldest holder.
//!
//! Every operation records the visible state of the members it touches,
//! changes the holders, and compares: the [`Notice`]s it returns are
//! exactly the visible changes, in the order clients must see them. So a
//! remote node's snapshot replayed over what we had, a node removed, or a
//! connection closed each yields one notice per real change and nothing
//! for members still held elsewhere. Who receives a notice on this node is
//! answered by [`Roster::recipients`]; sending is the caller's business.
//!
//! Holder-level state commutes: the deltas of one holder come from one
//! connection, in order, and deltas of different holders touch different
//! entries of the union. Applying a delta twice is harmless.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::wire::{Member, code};
use crate::hub::subscriptions::ConnId;

/// Which node a holder is on.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Node {
    /// This node.
    Local,
    /// Another node of the cluster, by id.
    Remote(Arc<str>),
}

/// One connection holding a member: where it is and its id there.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Holder {
    /// The node of the connection.
    pub node: Node,
    /// The connection's id on that node.
    pub conn: ConnId,
}

impl Holder {
    /// A connection of this node.
    pub fn local(conn: ConnId) -> Self {
        Self { node: Node::Local, conn }
    }
}

/// A visible change of the roster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// A member appeared (`member@new`).
    MemberNew(Member),
    /// A member is gone (`member@remove`), after its channel notices.
    MemberRemove(Member),
    /// A channel got its first member (for the after-new-channel event;
    /// nothing is sent to clients).
    ChannelNew(Arc<str>),
    /// A member joined a channel (`channel@member@new`).
    ChannelMemberNew {
        /// The channel.
        channel: Arc<str>,
        /// The member, with name and info.
        member: Member,
    },
    /// A member left a channel (`channel@member@remove`).
    ChannelMemberRemove {
        /// The channel.
        channel: Arc<str>,
        /// The member.
        member: Member,
    },
}

/// Why a local operation was refused, with its protocol error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum RosterError {
    /// The id is held somewhere already.
    #[error("member already exists")]
    MemberExists,
    /// This connection does not hold the member it names.
    #[error("member does not exist on this connection")]
    MemberNotFound,
    /// No member is in the channel.
    #[error("channel does not exist")]
    ChannelNotFound,
    /// This connection already joined the channel as the member.
    #[error("already a member of that channel")]
    AlreadyInChannel,
    /// This connection did not join the channel as the member.
    #[error("not a member of that channel")]
    NotInChannel,
}

impl RosterError {
    /// The protocol error code.
    pub fn code(self) -> i64 {
        match self {
            Self::MemberExists => code::MEMBER_EXISTS,
            Self::MemberNotFound => code::MEMBER_NOT_FOUND,
            Self::ChannelNotFound => code::CHANNEL_NOT_FOUND,
            Self::AlreadyInChannel => code::ALREADY_IN_CHANNEL,
            Self::NotInChannel => code::NOT_IN_CHANNEL,
        }
    }
}

/// A change of one node's own members, as relayed to the other nodes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum PresenceDelta {
    /// Connection `conn` registered `member`.
    MemberAdded {
        /// The connection on the origin node.
        conn: ConnId,
        /// The member.
        member: Member,
    },
    /// Connection `conn` unregistered member `id`.
    MemberRemoved {
        /// The connection on the origin node.
        conn: ConnId,
        /// The member id.
        id: String,
    },
    /// Connection `conn` joined `channel` as member `id`.
    ChannelJoined {
        /// The connection on the origin node.
        conn: ConnId,
        /// The member id.
        id: String,
        /// The channel.
        channel: Arc<str>,
    },
    /// Connection `conn` left `channel` as member `id`.
    ChannelLeft {
        /// The connection on the origin node.
        conn: ConnId,
        /// The member id.
        id: String,
        /// The channel.
        channel: Arc<str>,
    },
    /// Connection `conn` closed: everything it held is gone.
    ConnectionClosed {
        /// The connection on the origin node.
        conn: ConnId,
    },
}

/// Everything one node holds, for a peer to replace its copy with.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceSnapshot {
    /// One entry per (connection, member).
    pub holdings: Vec<Holding>,
}

/// One member held by one connection, with the channels it joined.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Holding {
    /// The connection on the node that sent the snapshot.
    pub conn: ConnId,
    /// The member as that connection registered it.
    pub member: Member,
    /// The channels that connection joined as the member.
    pub channels: Vec<Arc<str>>,
}

/// What one holder holds of one member.
#[derive(Debug, Clone)]
struct Held {
    member: Member,
    channels: BTreeSet<Arc<str>>,
}

/// The visible state of one member: the union over its holders.
#[derive(Debug, Clone, PartialEq, Eq)]
struct View {
    member: Member,
    channels: BTreeSet<Arc<str>>,
}

/// The roster of the cluster as this node knows it.
#[derive(Debug, Default)]
pub struct Roster {
    /// Member id → its holders, oldest first.
    members: BTreeMap<String, Vec<(Holder, Held)>>,
    /// Channel → ids of the members in it (union over holders). A channel
    /// exists while it has a member; empty ones are dropped.
    channels: HashMap<Arc<str>, BTreeSet<String>>,
    /// Node → connection → member ids it holds.
    holdings: HashMap<Node, HashMap<ConnId, BTreeSet<String>>>,
}

impl Roster {
    /// An empty roster.
    pub fn new() -> Self {
        Self::default()
    }

    // ---------------------------------------------------------------- local

    /// Registers `member` for local connection `conn`.
    ///
    /// # Errors
    /// [`RosterError::MemberExists`] when the id is held anywhere.
    pub fn add_local(&mut self, conn: ConnId, member: Member) -> Result<Vec<Notice>, RosterError> {
        if self.members.contains_key(&member.id) {
            return Err(RosterError::MemberExists);
        }
        let id = member.id.clone();
        Ok(self.mutate([id], |r| r.insert(Holder::local(conn), member, BTreeSet::new())))
    }

    /// Unregisters member `id` from local connection `conn`.
    ///
    /// # Errors
    /// [`RosterError::MemberNotFound`] when `conn` does not hold it.
    pub fn remove_local(&mut self, conn: ConnId, id: &str) -> Result<Vec<Notice>, RosterError> {
        let holder = Holder::local(conn);
        if self.held(&holder, id).is_none() {
            return Err(RosterError::MemberNotFound);
        }
        Ok(self.mutate([id.to_owned()], |r| r.remove(&holder, id)))
    }

    /// Joins `channel` as member `id` of local connection `conn`.
    ///
    /// # Errors
    /// When `conn` does not hold the member, or already joined the channel.
    pub fn join_local(
        &mut self,
        conn: ConnId,
        id: &str,
        channel: &str,
    ) -> Result<Vec<Notice>, RosterError> {
        let holder = Holder::local(conn);
        let held = self.held(&holder, id).ok_or(RosterError::MemberNotFound)?;
        if held.channels.contains(channel) {
            return Err(RosterError::AlreadyInChannel);
        }
        let channel: Arc<str> = channel.into();
        Ok(self.mutate([id.to_owned()], |r| r.join(&holder, id, channel)))
    }

    /// Leaves `channel` as member `id` of local connection `conn`.
    ///
    /// # Errors
    /// When `conn` does not hold the member, the channel does not exist, or
    /// `conn` did not join it as the member.
    pub fn leave_local(
        &mut self,
        conn: ConnId,
        id: &str,
        channel: &str,
    ) -> Result<Vec<Notice>, RosterError> {
        let holder = Holder::local(conn);
        let held = self.held(&holder, id).ok_or(RosterError::MemberNotFound)?;
        if !self.channels.contains_key(channel) {
            return Err(RosterError::ChannelNotFound);
        }
        if !held.channels.contains(channel) {
            return Err(RosterError::NotInChannel);
        }
        Ok(self.mutate([id.to_owned()], |r| r.leave(&holder, id, channel)))
    }

    /// Removes everything local connection `conn` holds (it closed).
    pub fn close_local(&mut self, conn: ConnId) -> Vec<Notice> {
        self.close(Node::Local, conn)
    }

    /// What this node holds, for the other nodes.
    pub fn snapshot_local(&self) -> PresenceSnapshot {
        let mut holdings = Vec::new();
        let Some(conns) = self.holdings.get(&Node::Local) else {
            return PresenceSnapshot { holdings };
        };
        for (&conn, ids) in conns {
            for id in ids {
                if let Some(held) = self.held(&Holder::local(conn), id) {
                    let channels = held.channels.iter().cloned().collect();
                    holdings.push(Holding { conn, member: held.member.clone(), channels });
                }
            }
        }
        holdings.sort_by(|a, b| (a.conn, &a.member.id).cmp(&(b.conn, &b.member.id)));
        PresenceSnapshot { holdings }
    }

    // --------------------------------------------------------------- remote

    /// Applies a change another node made to its own members.
    pub fn apply_remote(&mut self, node: &Arc<str>, delta: &PresenceDelta) -> Vec<Notice> {
        let node = Node::Remote(node.clone());
        match delta {
            PresenceDelta::MemberAdded { conn, member } => {
                let holder = Holder { node, conn: *conn };
                if self.held(&holder, &member.id).is_some() {
                    return Vec::new();
                }
                let (id, m) = (member.id.clone(), member.clone());
                self.mutate([id], |r| r.insert(holder, m, BTreeSet::new()))
            }
            PresenceDelta::MemberRemoved { conn, id } => {
                let holder = Holder { node, conn: *conn };
                self.mutate([id.clone()], |r| r.remove(&holder, id))
            }
            PresenceDelta::ChannelJoined { conn, id, channel } => {
                let holder = Holder { node, conn: *conn };
                self.mutate([id.clone()], |r| r.join(&holder, id, channel.clone()))
            }
            PresenceDelta::ChannelLeft { conn, id, channel } => {
                let holder = Holder { node, conn: *conn };
                self.mutate([id.clone()], |r| r.leave(&holder, id, channel))
            }
            PresenceDelta::ConnectionClosed { conn } => self.close(node, *conn),
        }
    }

    /// Replaces what `node` holds with `snapshot`; notices only for what
    /// really changed.
    pub fn replace_node(&mut self, node: &Arc<str>, snapshot: &PresenceSnapshot) -> Vec<Notice> {
        let node = Node::Remote(node.clone());
        let mut wanted: HashMap<(ConnId, &str), &Holding> = HashMap::new();
        for h in &snapshot.holdings {
            wanted.insert((h.conn, h.member.id.as_str()), h);
        }
        let mut had: Vec<(ConnId, String)> = Vec::new();
        for (&conn, ids) in self.holdings.get(&node).into_iter().flatten() {
            had.extend(ids.iter().map(|id| (conn, id.clone())));
        }

        let touched: BTreeSet<String> = had
            .iter()
            .map(|(_, id)| id.clone())
            .chain(wanted.keys().map(|(_, id)| (*id).to_owned()))
            .collect();
        self.mutate(touched, |r| {
            for (conn, id) in &had {
                if !wanted.contains_key(&(*conn, id.as_str())) {
                    r.remove(&Holder { node: node.clone(), conn: *conn }, id);
                }
            }
            for h in wanted.values() {
                let holder = Holder { node: node.clone(), conn: h.conn };
                let channels = h.channels.iter().cloned().collect();
                r.insert(holder, h.member.clone(), channels);
            }
        })
    }

    /// Removes everything `node` holds (it left or failed).
    pub fn remove_node(&mut self, node: &Arc<str>) -> Vec<Notice> {
        self.replace_node(node, &PresenceSnapshot::default())
    }

    // -------------------------------------------------------------- queries

    /// The member `id` as the roster shows it.
    pub fn member(&self, id: &str) -> Option<&Member> {
        self.members.get(id).and_then(|hs| hs.first()).map(|(_, held)| &held.member)
    }

    /// Every member, by id.
    pub fn members(&self) -> Vec<Member> {
        self.members.keys().filter_map(|id| self.member(id).cloned()).collect()
    }

    /// The members of `channel`, by id; `None` when it does not exist.
    pub fn channel_members(&self, channel: &str) -> Option<Vec<Member>> {
        let ids = self.channels.get(channel)?;
        Some(ids.iter().filter_map(|id| self.member(id).cloned()).collect())
    }

    /// Every channel that has a member, by name.
    pub fn channels(&self) -> Vec<Arc<str>> {
        let mut names: Vec<Arc<str>> = self.channels.keys().cloned().collect();
        names.sort();
        names
    }

    /// Whether `channel` has a member.
    pub fn channel_exists(&self, channel: &str) -> bool {
        self.channels.contains_key(channel)
    }

    /// The member `id` as local connection `conn` registered it, if it did.
    pub fn held_by(&self, conn: ConnId, id: &str) -> Option<&Member> {
        self.held(&Holder::local(conn), id).map(|h| &h.member)
    }

    /// How many members local connection `conn` holds.
    pub fn count_held_by(&self, conn: ConnId) -> usize {
        let conns = self.holdings.get(&Node::Local);
        conns.and_then(|c| c.get(&conn)).map_or(0, BTreeSet::len)
    }

    /// How many channels local connection `conn` joined as member `id`.
    pub fn channel_count(&self, conn: ConnId, id: &str) -> usize {
        self.held(&Holder::local(conn), id).map_or(0, |h| h.channels.len())
    }

    /// The local connections that must receive `notice`: every member for
    /// member notices, the channel's members for channel notices, and the
    /// member's own connections for anything about it.
    pub fn recipients(&self, notice: &Notice) -> BTreeSet<ConnId> {
        match notice {
            Notice::MemberNew(_) => self.conns_of_all(),
            Notice::MemberRemove(m) => {
                let mut to = self.conns_of_all();
                to.extend(self.conns_of(&m.id));
                to
            }
            Notice::ChannelMemberNew { channel, member }
            | Notice::ChannelMemberRemove { channel, member } => {
                let mut to = self.conns_in(channel);
                to.extend(self.conns_of(&member.id));
                to
            }
            Notice::ChannelNew(_) => BTreeSet::new(),
        }
    }

    /// Local connections holding at least one member.
    pub fn conns_of_all(&self) -> BTreeSet<ConnId> {
        let conns = self.holdings.get(&Node::Local);
        conns.map(|c| c.keys().copied().collect()).unwrap_or_default()
    }

    /// Local connections holding member `id`.
    pub fn conns_of(&self, id: &str) -> BTreeSet<ConnId> {
        let holders = self.members.get(id).into_iter().flatten();
        holders.filter(|(h, _)| h.node == Node::Local).map(|(h, _)| h.conn).collect()
    }

    /// Local connections holding a member that is in `channel`.
    pub fn conns_in(&self, channel: &str) -> BTreeSet<ConnId> {
        let ids = self.channels.get(channel).into_iter().flatten();
        ids.flat_map(|id| self.conns_of(id)).collect()
    }

    // ------------------------------------------------------------- internal

    fn held(&self, holder: &Holder, id: &str) -> Option<&Held> {
        let holders = self.members.get(id)?;
        holders.iter().find(|(h, _)| h == holder).map(|(_, held)| held)
    }

    fn held_mut(&mut self, holder: &Holder, id: &str) -> Option<&mut Held> {
        let holders = self.members.get_mut(id)?;
        holders.iter_mut().find(|(h, _)| h == holder).map(|(_, held)| held)
    }

    fn view(&self, id: &str) -> Option<View> {
        let holders = self.members.get(id)?;
        let (_, first) = holders.first()?;
        let channels = holders.iter().flat_map(|(_, h)| h.channels.iter().cloned()).collect();
        Some(View { member: first.member.clone(), channels })
    }

    /// Runs `change` and returns the notices for the visible difference it
    /// made to the members `ids`, keeping the channel index in step.
    fn mutate(
        &mut self,
        ids: impl IntoIterator<Item = String>,
        change: impl FnOnce(&mut Self),
    ) -> Vec<Notice> {
        let before: Vec<(String, Option<View>)> =
            ids.into_iter().map(|id| (id.clone(), self.view(&id))).collect();
        change(self);

        let mut notices = Vec::new();
        for (id, before) in before {
            let after = self.view(&id);
            self.diff(&id, before, after, &mut notices);
        }
        notices
    }

    /// Appends the notices that take `before` to `after` and updates the
    /// channel index to match.
    fn diff(&mut self, id: &str, before: Option<View>, after: Option<View>, out: &mut Vec<Notice>) {
        let empty = BTreeSet::new();
        let old = before.as_ref().map_or(&empty, |v| &v.channels);
        let new = after.as_ref().map_or(&empty, |v| &v.channels);

        if let (None, Some(a)) = (&before, &after) {
            out.push(Notice::MemberNew(a.member.clone()));
        }
        if let Some(b) = &before {
            for channel in old.difference(new) {
                self.index_remove(channel, id);
                let member = b.member.clone();
                out.push(Notice::ChannelMemberRemove { channel: channel.clone(), member });
            }
        }
        if let Some(a) = &after {
            for channel in new.difference(old) {
                if self.index_add(channel, id) {
                    out.push(Notice::ChannelNew(channel.clone()));
                }
                let member = a.member.clone();
                out.push(Notice::ChannelMemberNew { channel: channel.clone(), member });
            }
        }
        if let (Some(b), None) = (before, after) {
            out.push(Notice::MemberRemove(b.member));
        }
    }

    /// Adds `id` to `channel`'s index; true when the channel is new.
    fn index_add(&mut self, channel: &Arc<str>, id: &str) -> bool {
        let ids = self.channels.entry(channel.clone()).or_default();
        let created = ids.is_empty();
        ids.insert(id.to_owned());
        created
    }

    fn index_remove(&mut self, channel: &Arc<str>, id: &str) {
        if let Some(ids) = self.channels.get_mut(channel) {
            ids.remove(id);
            if ids.is_empty() {
                self.channels.remove(channel);
            }
        }
    }

    /// Inserts or updates what `holder` holds of `member`.
    fn insert(&mut self, holder: Holder, member: Member, channels: BTreeSet<Arc<str>>) {
        if let Some(held) = self.held_mut(&holder, &member.id) {
            *held = Held { member, channels };
            return;
        }
        let conns = self.holdings.entry(holder.node.clone()).or_default();
        conns.entry(holder.conn).or_default().insert(member.id.clone());
        let holders = self.members.entry(member.id.clone()).or_default();
        holders.push((holder, Held { member, channels }));
    }

    fn remove(&mut self, holder: &Holder, id: &str) {
        if let Some(holders) = self.members.get_mut(id) {
            holders.retain(|(h, _)| h != holder);
            if holders.is_empty() {
                self.members.remove(id);
            }
        }
        if let Some(conns) = self.holdings.get_mut(&holder.node) {
            if let Some(ids) = conns.get_mut(&holder.conn) {
                ids.remove(id);
                if ids.is_empty() {
                    conns.remove(&holder.conn);
                }
            }
            if conns.is_empty() {
                self.holdings.remove(&holder.node);
            }
        }
    }

    fn join(&mut self, holder: &Holder, id: &str, channel: Arc<str>) {
        if let Some(held) = self.held_mut(holder, id) {
            held.channels.insert(channel);
        }
    }

    fn leave(&mut self, holder: &Holder, id: &str, channel: &str) {
        if let Some(held) = self.held_mut(holder, id) {
            held.channels.remove(channel);
        }
    }

    fn close(&mut self, node: Node, conn: ConnId) -> Vec<Notice> {
        let ids: Vec<String> = self
            .holdings
            .get(&node)
            .and_then(|conns| conns.get(&conn))
            .map(|ids| ids.iter().cloned().collect())
            .unwrap_or_default();
        let holder = Holder { node, conn };
        self.mutate(ids.clone(), |r| {
            for id in &ids {
                r.remove(&holder, id);
            }
        })
    }
}

#[cfg(test)]
mod tests;
