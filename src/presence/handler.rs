//! What the server does with each client message of the presence protocol.
//!
//! A message is parsed, acknowledged when it carries an id, checked (the
//! acting member must be one this connection registered; hooks may refuse),
//! and turned into one roster operation. Its notices reach the clients that
//! must hear of it; the change is then handed to the relay. Every refusal
//! is an `error@member@channel` to the requesting client only, and the
//! connection stays open. No sockets, no clock.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::hooks::PresenceError;
use super::relay::{Invitation, PresenceMessage};
use super::roster::{Notice, PresenceDelta, RosterError};
use super::wire::{self, ErrorBody, Member, Outbound, Request, code, method};
use super::{PresenceProtocol, PresenceSession, notice_outbound, outbound};

/// A refusal to send back as `error@member@channel`.
#[derive(Debug)]
struct Refusal {
    code: i64,
    text: String,
}

impl Refusal {
    fn new(code: i64, text: impl Into<String>) -> Self {
        Self { code, text: text.into() }
    }

    fn params(text: impl Into<String>) -> Self {
        Self::new(code::INVALID_PARAMS, format!("invalid params: {}", text.into()))
    }

    fn roster(e: RosterError, subject: &str) -> Self {
        Self::new(e.code(), format!("{e}: {subject}"))
    }
}

type Outcome = Result<(), Refusal>;

impl PresenceProtocol {
    /// Handles one text frame from the client.
    pub fn handle_text(&self, s: &mut PresenceSession, text: &str) {
        metrics::counter!("wscluster_bytes_in_total", "protocol" => "presence")
            .increment(text.len() as u64);
        match wire::parse(text) {
            Ok(req) => {
                metrics::counter!("wscluster_messages_in_total", "protocol" => "presence", "kind" => "request")
                    .increment(1);
                self.handle(s, &req);
            }
            Err(e) => {
                metrics::counter!("wscluster_messages_in_total", "protocol" => "presence", "kind" => "invalid")
                    .increment(1);
                metrics::counter!("wscluster_bad_input_total", "code" => e.code.to_string())
                    .increment(1);
                let error = ErrorBody { code: e.code, text: &e.text };
                self.send(s, Outbound { error: Some(error), ..outbound(method::ERROR) });
            }
        }
    }

    /// Answers a binary frame, which the protocol does not use.
    pub fn handle_binary(&self, s: &PresenceSession) {
        metrics::counter!("wscluster_bad_input_total", "code" => "-32600").increment(1);
        let text = "invalid request: binary frames are not part of the protocol";
        let error = ErrorBody { code: code::INVALID_REQUEST, text };
        self.send(s, Outbound { error: Some(error), ..outbound(method::ERROR) });
    }

    /// Handles one parsed request: acknowledge, then act.
    pub fn handle(&self, s: &mut PresenceSession, req: &Request) {
        if let Some(id) = &req.id
            && req.method != method::ACKNOWLEDGMENT
        {
            self.send_raw(s, self.encoder().ack(id));
        }
        if let Err(r) = self.dispatch(s, req) {
            self.refuse(s, req, &r);
        }
    }

    fn dispatch(&self, s: &mut PresenceSession, req: &Request) -> Outcome {
        match req.method.as_str() {
            method::MEMBER_NEW => self.member_new(s, req),
            method::MEMBER_REMOVE => self.member_remove(s, req),
            method::CHANNEL_MEMBER_NEW => self.channel_join(s, req),
            method::CHANNEL_MEMBER_REMOVE => self.channel_leave(s, req),
            method::PUBLISH_MSG => self.publish_msg(s, req),
            method::GET_MEMBERS => self.get_members(s, req),
            method::CHANNEL_INVITATION => self.invitation(s, req),
            method::ACKNOWLEDGMENT => {
                if let Some(id) = &req.id {
                    s.acks.acknowledge(&id.key());
                }
                Ok(())
            }
            other => {
                Err(Refusal::new(code::METHOD_NOT_FOUND, format!("method not found: {other}")))
            }
        }
    }

    fn member_new(&self, s: &PresenceSession, req: &Request) -> Outcome {
        let member = req.member.clone().unwrap_or_default().complete(&s.client.session_id);
        // A member is copied to every node and into every member list, so
        // its size is bounded well below the message size.
        let limits = self.settings();
        if member.id.is_empty() || member.id.len() > limits.max_member_id_len {
            let max = limits.max_member_id_len;
            return Err(Refusal::params(format!("member id must be 1 to {max} bytes")));
        }
        if member.name.len() > limits.max_member_id_len {
            let max = limits.max_member_id_len;
            return Err(Refusal::params(format!("member name longer than {max} bytes")));
        }
        if member.info.len() > limits.max_member_info_len {
            let max = limits.max_member_info_len;
            return Err(Refusal::params(format!("member info longer than {max} bytes")));
        }
        let (exists, held) = {
            let roster = self.roster();
            (roster.member(&member.id).is_some(), roster.count_held_by(s.conn))
        };
        if exists {
            return Err(Refusal::roster(RosterError::MemberExists, &member.id));
        }
        let limit = self.settings().max_members_per_connection;
        if held >= limit {
            return Err(Refusal::new(
                code::MEMBER_REFUSED,
                format!("new member refused: limit of {limit} members per connection reached"),
            ));
        }
        if let Some(hook) = &self.hooks().before_new_member
            && !hook(&s.client, &member)
        {
            return Err(Refusal::new(
                code::MEMBER_REFUSED,
                format!("new member refused: {}", member.id),
            ));
        }

        self.change(Some(&s.client), Some(s.conn), |r| r.add_local(s.conn, member.clone()))
            .map_err(|e| Refusal::roster(e, &member.id))?;
        self.relay_delta(&PresenceDelta::MemberAdded { conn: s.conn, member });
        Ok(())
    }

    fn member_remove(&self, s: &PresenceSession, req: &Request) -> Outcome {
        let id = acting_id(s, req).to_owned();
        let mut held = None;
        let notices = self
            .change(Some(&s.client), Some(s.conn), |r| {
                held = r.held_by(s.conn, &id).cloned();
                r.remove_local(s.conn, &id)
            })
            .map_err(|e| Refusal::roster(e, &id))?;

        // Still held by another session elsewhere: the roster did not change,
        // but the requester is told its own removal is done.
        if let Some(member) = held
            && !notices.iter().any(|n| matches!(n, Notice::MemberRemove(m) if m.id == id))
        {
            self.confirm(s, &Notice::MemberRemove(member));
        }
        self.relay_delta(&PresenceDelta::MemberRemoved { conn: s.conn, id });
        Ok(())
    }

    fn channel_join(&self, s: &PresenceSession, req: &Request) -> Outcome {
        let channel = self.required_channel(req)?;
        let id = acting_id(s, req);
        let (member, exists, joined) = {
            let roster = self.roster();
            let member = roster.held_by(s.conn, id).cloned();
            (member, roster.channel_exists(channel), roster.channel_count(s.conn, id))
        };
        let member = member.ok_or_else(|| Refusal::roster(RosterError::MemberNotFound, id))?;
        self.admit_to_channel(s, channel, &member, exists, joined)?;

        let notices = self
            .change(Some(&s.client), Some(s.conn), |r| r.join_local(s.conn, id, channel))
            .map_err(|e| Refusal::roster(e, subject(e, id, channel)))?;
        let channel: Arc<str> = channel.into();
        let joined = Notice::ChannelMemberNew { channel: channel.clone(), member };
        if !notices.iter().any(|n| same_change(n, &joined)) {
            self.confirm(s, &joined);
        }
        self.relay_delta(&PresenceDelta::ChannelJoined {
            conn: s.conn,
            id: id.to_owned(),
            channel,
        });
        Ok(())
    }

    /// The hooks and the per-member cap a join must pass.
    fn admit_to_channel(
        &self,
        s: &PresenceSession,
        channel: &str,
        member: &Member,
        exists: bool,
        joined: usize,
    ) -> Outcome {
        let hooks = self.hooks();
        if !exists
            && let Some(hook) = &hooks.before_new_channel
            && !hook(&s.client, channel, member)
        {
            return Err(Refusal::new(
                code::CHANNEL_REFUSED,
                format!("new channel refused: {channel}"),
            ));
        }
        let limit = self.settings().max_channels_per_member;
        if joined >= limit {
            return Err(Refusal::new(
                code::CHANNEL_MEMBER_REFUSED,
                format!("channel membership refused: limit of {limit} channels reached"),
            ));
        }
        if let Some(hook) = &hooks.before_new_channel_member
            && !hook(&s.client, channel, member)
        {
            return Err(Refusal::new(
                code::CHANNEL_MEMBER_REFUSED,
                format!("channel membership refused: {channel}"),
            ));
        }
        Ok(())
    }

    fn channel_leave(&self, s: &PresenceSession, req: &Request) -> Outcome {
        let channel = self.required_channel(req)?;
        let id = acting_id(s, req);
        let mut held = None;
        let notices = self
            .change(Some(&s.client), Some(s.conn), |r| {
                held = r.held_by(s.conn, id).cloned();
                r.leave_local(s.conn, id, channel)
            })
            .map_err(|e| Refusal::roster(e, subject(e, id, channel)))?;

        let channel: Arc<str> = channel.into();
        if let Some(member) = held {
            let left = Notice::ChannelMemberRemove { channel: channel.clone(), member };
            if !notices.iter().any(|n| same_change(n, &left)) {
                self.confirm(s, &left);
            }
        }
        self.relay_delta(&PresenceDelta::ChannelLeft { conn: s.conn, id: id.to_owned(), channel });
        Ok(())
    }

    fn publish_msg(&self, s: &PresenceSession, req: &Request) -> Outcome {
        let id = acting_id(s, req);
        let channel = self.optional_channel(req)?;
        let Some(text) = req.message.as_deref() else {
            return Err(Refusal::params("message missing"));
        };
        let sender = self.sender(s, id, channel)?;
        if let Some(hook) = &self.hooks().before_publish
            && !hook(&s.client, channel, &sender, text)
        {
            let to = channel.unwrap_or("every member");
            return Err(Refusal::new(code::PUBLISH_REFUSED, format!("publish refused: {to}")));
        }

        let message =
            PresenceMessage { sender, channel: channel.map(Into::into), text: text.into() };
        self.deliver_message(&message);
        if let Some(relay) = self.relay() {
            relay.publish(&message);
        }
        Ok(())
    }

    /// The registered member publishing, once its channel is known to exist.
    fn sender(
        &self,
        s: &PresenceSession,
        id: &str,
        channel: Option<&str>,
    ) -> Result<Member, Refusal> {
        let roster = self.roster();
        let sender = roster.held_by(s.conn, id).cloned();
        let sender = sender.ok_or_else(|| Refusal::roster(RosterError::MemberNotFound, id))?;
        if let Some(c) = channel
            && !roster.channel_exists(c)
        {
            return Err(Refusal::roster(RosterError::ChannelNotFound, c));
        }
        Ok(sender)
    }

    fn get_members(&self, s: &PresenceSession, req: &Request) -> Outcome {
        let channel = self.optional_channel(req)?;
        if let Some(c) = channel
            && !self.roster().channel_exists(c)
        {
            return Err(Refusal::roster(RosterError::ChannelNotFound, c));
        }
        if let Some(hook) = &self.hooks().before_get_members
            && !hook(&s.client, channel)
        {
            let of = channel.unwrap_or("every member");
            return Err(Refusal::new(code::MEMBERS_REFUSED, format!("member list refused: {of}")));
        }

        let members = match channel {
            Some(c) => self.roster().channel_members(c).unwrap_or_default(),
            None => self.roster().members(),
        };
        let asking = self.acting_member(s, req);
        let out = Outbound {
            member: Some(&asking),
            channel: Some(channel.unwrap_or("")),
            members: Some(&members),
            ..outbound(method::SEND_MEMBERS)
        };
        self.send(s, out);
        Ok(())
    }

    fn invitation(&self, s: &PresenceSession, req: &Request) -> Outcome {
        let channel = self.required_channel(req)?;
        let ids = self.invitee_ids(req)?;
        let id = acting_id(s, req);

        let (inviter, known, unknown) = {
            let roster = self.roster();
            let inviter = roster.held_by(s.conn, id).cloned();
            let (mut known, mut unknown) = (Vec::new(), Vec::new());
            for invitee in &ids {
                match roster.member(invitee) {
                    Some(m) => known.push(m.clone()),
                    None => unknown.push(invitee.clone()),
                }
            }
            (inviter, known, unknown)
        };
        let inviter = inviter.ok_or_else(|| Refusal::roster(RosterError::MemberNotFound, id))?;

        for missing in unknown {
            let member = Member { id: missing, name: String::new(), info: String::new() };
            let text = format!("member does not exist: {}", member.id);
            let refusal = Refusal::new(code::MEMBER_NOT_FOUND, text);
            self.send_refusal(s, &refusal, Some(channel), Some(&member), None, false);
        }
        if known.is_empty() {
            return Ok(());
        }
        let invitation = Invitation { inviter, channel: channel.into(), invitees: known };
        self.deliver_invitation(&invitation);
        if let Some(relay) = self.relay() {
            relay.invitation(&invitation);
        }
        Ok(())
    }

    /// The distinct invitee ids of an invitation.
    fn invitee_ids(&self, req: &Request) -> Result<Vec<String>, Refusal> {
        let Some(members) = req.members.as_ref().filter(|m| !m.is_empty()) else {
            return Err(Refusal::params("members missing or empty"));
        };
        let max = self.settings().max_invitees;
        if members.len() > max {
            return Err(Refusal::params(format!("more than {max} invitees")));
        }
        let mut seen = BTreeSet::new();
        let mut ids = Vec::new();
        for m in members {
            let Some(id) = m.id.as_deref().filter(|id| !id.is_empty()) else {
                return Err(Refusal::params("an invitee has no id"));
            };
            if seen.insert(id) {
                ids.push(id.to_owned());
            }
        }
        Ok(ids)
    }

    // ------------------------------------------------------------- helpers

    /// The member a request acts as, in full when this connection holds it.
    fn acting_member(&self, s: &PresenceSession, req: &Request) -> Member {
        let id = acting_id(s, req);
        if let Some(m) = self.roster().held_by(s.conn, id) {
            return m.clone();
        }
        req.member.clone().unwrap_or_default().complete(&s.client.session_id)
    }

    fn required_channel<'r>(&self, req: &'r Request) -> Result<&'r str, Refusal> {
        match self.optional_channel(req)? {
            Some(c) => Ok(c),
            None => Err(Refusal::params("channel name missing")),
        }
    }

    /// The channel, when one is named; validated like sgc channel names.
    fn optional_channel<'r>(&self, req: &'r Request) -> Result<Option<&'r str>, Refusal> {
        let Some(channel) = req.channel_name() else {
            return Ok(None);
        };
        let max = self.settings().max_channel_len;
        if channel.len() > max {
            metrics::counter!("wscluster_refused_total", "reason" => "channel_length").increment(1);
            return Err(Refusal::params(format!("channel longer than {max} bytes")));
        }
        if channel.chars().any(|c| c <= '\u{1f}') {
            return Err(Refusal::params("channel contains control characters"));
        }
        Ok(Some(channel))
    }

    /// Sends a notice to the requester alone.
    fn confirm(&self, s: &PresenceSession, notice: &Notice) {
        if let Some(out) = notice_outbound(notice) {
            self.send(s, out);
        }
    }

    /// Answers a refused request with its member, channel and message.
    fn refuse(&self, s: &PresenceSession, req: &Request, r: &Refusal) {
        let member = self.acting_member(s, req);
        let publish = req.method == method::PUBLISH_MSG;
        let message = if publish { req.message.as_deref() } else { None };
        self.send_refusal(s, r, req.channel.as_deref(), Some(&member), message, publish);
    }

    fn send_refusal(
        &self,
        s: &PresenceSession,
        r: &Refusal,
        channel: Option<&str>,
        member: Option<&Member>,
        message: Option<&str>,
        publish: bool,
    ) {
        metrics::counter!("wscluster_presence_refused_total", "code" => r.code.to_string())
            .increment(1);
        let out = Outbound {
            member,
            channel,
            message,
            error: Some(ErrorBody { code: r.code, text: &r.text }),
            ..outbound(method::ERROR)
        };
        self.send(s, out);

        let hooks = self.hooks();
        let hook = if publish { &hooks.error_publish } else { &hooks.error_member_channel };
        if let Some(hook) = hook {
            let error = PresenceError {
                code: r.code,
                text: r.text.clone(),
                channel: channel.map(str::to_owned),
                member: member.cloned(),
            };
            hook(&s.client, &error);
        }
    }

    /// Queues bytes that need no acknowledgement (an acknowledgement).
    fn send_raw(&self, s: &PresenceSession, bytes: bytes::Bytes) {
        self.hub().send_to(s.conn, crate::hub::outbox::Outgoing::new(bytes));
    }
}

/// The member id a request acts as: `member.id`, or the session id.
fn acting_id<'a>(s: &'a PresenceSession, req: &'a Request) -> &'a str {
    match &req.member {
        Some(m) => m.id_or(&s.client.session_id),
        None => &s.client.session_id,
    }
}

/// What a roster refusal is about: the member or the channel.
fn subject<'a>(e: RosterError, id: &'a str, channel: &'a str) -> &'a str {
    match e {
        RosterError::MemberExists | RosterError::MemberNotFound => id,
        _ => channel,
    }
}

/// Whether two notices describe the same change (same kind, member id and
/// channel), whatever member data each carries.
fn same_change(a: &Notice, b: &Notice) -> bool {
    match (a, b) {
        (
            Notice::ChannelMemberNew { channel: c1, member: m1 },
            Notice::ChannelMemberNew { channel: c2, member: m2 },
        )
        | (
            Notice::ChannelMemberRemove { channel: c1, member: m1 },
            Notice::ChannelMemberRemove { channel: c2, member: m2 },
        ) => c1 == c2 && m1.id == m2.id,
        _ => false,
    }
}
