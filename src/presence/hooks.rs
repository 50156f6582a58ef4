//! Application hooks of the presence protocol.
//!
//! Before-hooks decide: they run on the requesting connection's task before
//! anything changes, and returning `false` refuses the request with its
//! error code. After-events observe: they run once the roster changed and
//! its lock is released, for changes made by this node's clients (with the
//! [`Client`] responsible) and for changes heard from other nodes (with
//! `None`). Hooks should be quick; work that needs I/O belongs in a task
//! the hook spawns.

use std::sync::Arc;

use super::wire::Member;
use crate::sgc::Client;

/// A refusal as reported to the error events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PresenceError {
    /// The protocol error code.
    pub code: i64,
    /// The text sent to the client.
    pub text: String,
    /// The channel concerned, if any.
    pub channel: Option<String>,
    /// The member concerned, if any.
    pub member: Option<Member>,
}

type Decide = dyn Fn(&Client, &Member) -> bool + Send + Sync;
type DecideChannel = dyn Fn(&Client, &str, &Member) -> bool + Send + Sync;
type DecidePublish = dyn Fn(&Client, Option<&str>, &Member, &str) -> bool + Send + Sync;
type DecideList = dyn Fn(&Client, Option<&str>) -> bool + Send + Sync;
type OnMember = dyn Fn(Option<&Client>, &Member) + Send + Sync;
type OnChannel = dyn Fn(Option<&Client>, &str) + Send + Sync;
type OnChannelMember = dyn Fn(Option<&Client>, &str, &Member) + Send + Sync;
type OnError = dyn Fn(&Client, &PresenceError) + Send + Sync;

/// The set of hooks; every one is optional.
#[derive(Default, Clone)]
pub struct PresenceHooks {
    pub(crate) before_new_member: Option<Arc<Decide>>,
    pub(crate) before_new_channel: Option<Arc<DecideChannel>>,
    pub(crate) before_new_channel_member: Option<Arc<DecideChannel>>,
    pub(crate) before_publish: Option<Arc<DecidePublish>>,
    pub(crate) before_get_members: Option<Arc<DecideList>>,
    pub(crate) new_member: Option<Arc<OnMember>>,
    pub(crate) remove_member: Option<Arc<OnMember>>,
    pub(crate) new_channel: Option<Arc<OnChannel>>,
    pub(crate) new_channel_member: Option<Arc<OnChannelMember>>,
    pub(crate) remove_channel_member: Option<Arc<OnChannelMember>>,
    pub(crate) error_member_channel: Option<Arc<OnError>>,
    pub(crate) error_publish: Option<Arc<OnError>>,
}

impl PresenceHooks {
    /// Decides whether a client may register a member; a refusal answers
    /// code 2.
    pub fn before_new_member(
        mut self,
        f: impl Fn(&Client, &Member) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.before_new_member = Some(Arc::new(f));
        self
    }

    /// Decides whether a join may create a channel that has no member yet;
    /// a refusal answers code 6.
    pub fn before_new_channel(
        mut self,
        f: impl Fn(&Client, &str, &Member) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.before_new_channel = Some(Arc::new(f));
        self
    }

    /// Decides whether a member may join a channel; a refusal answers
    /// code 10.
    pub fn before_new_channel_member(
        mut self,
        f: impl Fn(&Client, &str, &Member) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.before_new_channel_member = Some(Arc::new(f));
        self
    }

    /// Decides whether a member may publish a text to a channel (`None`:
    /// to every member); a refusal answers code 20.
    pub fn before_publish(
        mut self,
        f: impl Fn(&Client, Option<&str>, &Member, &str) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.before_publish = Some(Arc::new(f));
        self
    }

    /// Decides whether a client may list a channel's members (`None`: every
    /// member); a refusal answers code 30.
    pub fn before_get_members(
        mut self,
        f: impl Fn(&Client, Option<&str>) -> bool + Send + Sync + 'static,
    ) -> Self {
        self.before_get_members = Some(Arc::new(f));
        self
    }

    /// Runs when a member appeared in the roster.
    pub fn on_new_member(
        mut self,
        f: impl Fn(Option<&Client>, &Member) + Send + Sync + 'static,
    ) -> Self {
        self.new_member = Some(Arc::new(f));
        self
    }

    /// Runs when a member left the roster (removed, connection closed, or
    /// its node gone).
    pub fn on_remove_member(
        mut self,
        f: impl Fn(Option<&Client>, &Member) + Send + Sync + 'static,
    ) -> Self {
        self.remove_member = Some(Arc::new(f));
        self
    }

    /// Runs when a channel got its first member.
    pub fn on_new_channel(
        mut self,
        f: impl Fn(Option<&Client>, &str) + Send + Sync + 'static,
    ) -> Self {
        self.new_channel = Some(Arc::new(f));
        self
    }

    /// Runs when a member joined a channel.
    pub fn on_new_channel_member(
        mut self,
        f: impl Fn(Option<&Client>, &str, &Member) + Send + Sync + 'static,
    ) -> Self {
        self.new_channel_member = Some(Arc::new(f));
        self
    }

    /// Runs when a member left a channel.
    pub fn on_remove_channel_member(
        mut self,
        f: impl Fn(Option<&Client>, &str, &Member) + Send + Sync + 'static,
    ) -> Self {
        self.remove_channel_member = Some(Arc::new(f));
        self
    }

    /// Runs when a member or channel request was refused (any code but a
    /// publish refusal).
    pub fn on_error_member_channel(
        mut self,
        f: impl Fn(&Client, &PresenceError) + Send + Sync + 'static,
    ) -> Self {
        self.error_member_channel = Some(Arc::new(f));
        self
    }

    /// Runs when a `publish@msg` was refused.
    pub fn on_error_publish(
        mut self,
        f: impl Fn(&Client, &PresenceError) + Send + Sync + 'static,
    ) -> Self {
        self.error_publish = Some(Arc::new(f));
        self
    }
}
