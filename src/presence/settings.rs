//! Settings of the presence protocol, with the defaults a node starts with.

use std::time::Duration;

use crate::hub::HubLimits;

/// Everything the presence protocol can be tuned with.
#[derive(Debug, Clone)]
pub struct PresenceSettings {
    /// Write every string value Base64-encoded (`"sgc@b64:..."`). Prefixed
    /// values from clients are decoded whatever this says.
    pub base64: bool,
    /// Give every server message a fresh `id` the client must acknowledge,
    /// and re-send it until it does or [`Self::resend_timeout`] passes.
    pub acknowledgment: bool,
    /// How long to wait for an acknowledgement before re-sending.
    pub resend_interval: Duration,
    /// When to give up re-sending a message.
    pub resend_timeout: Duration,
    /// Server messages one connection may leave unacknowledged before it
    /// is closed as a slow consumer.
    pub pending_acks: usize,
    /// Longest channel name accepted, in bytes (as in the sgc protocol).
    pub max_channel_len: usize,
    /// Longest member id and name, in bytes; longer are invalid params.
    pub max_member_id_len: usize,
    /// Longest member info, in bytes; longer is invalid params.
    pub max_member_info_len: usize,
    /// Members one connection may register; more are refused with code 2.
    pub max_members_per_connection: usize,
    /// Channels one connection may join as one member; more are refused
    /// with code 10.
    pub max_channels_per_member: usize,
    /// Invitees one invitation may name; longer lists are invalid params.
    pub max_invitees: usize,
    /// Bounds of the hub (outbound queue per connection).
    pub hub: HubLimits,
}

impl Default for PresenceSettings {
    fn default() -> Self {
        Self {
            base64: false,
            acknowledgment: false,
            resend_interval: Duration::from_secs(5),
            resend_timeout: Duration::from_secs(60),
            pending_acks: 1024,
            max_channel_len: 255,
            max_member_id_len: 255,
            // Info is free text, often a small JSON document.
            max_member_info_len: 16 * 1024,
            // A client registers itself, rarely a few identities more; the
            // cap keeps one connection from filling the cluster's roster.
            max_members_per_connection: 16,
            max_channels_per_member: 1024,
            max_invitees: 1024,
            // The same outbound bounds as the sgc protocol: 1,024 messages
            // or 4 MiB, then the client is closed as slow.
            hub: HubLimits {
                outbound_messages: 1024,
                outbound_bytes: 4 << 20,
                kept_per_channel: 0,
                kept_max_channels: 0,
            },
        }
    }
}
