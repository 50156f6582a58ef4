//! Settings of the sgc protocol, with the defaults a node starts with.

use std::time::Duration;

use crate::hub::HubLimits;

use super::session::SessionLimits;

/// Server-to-client QoS: whether events carry an id to acknowledge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Qos {
    /// At most once: no ids, no re-sends (the default).
    #[default]
    AtMostOnce,
    /// At least once: ids, re-sent until acknowledged or timed out.
    AtLeastOnce,
    /// Exactly once, as the original spells it; delivered like level 1,
    /// since a client acknowledges by id and ignores repeats of an id.
    ExactlyOnce,
}

impl Qos {
    /// Parses `qosLevel0..2`.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "qosLevel0" => Some(Self::AtMostOnce),
            "qosLevel1" => Some(Self::AtLeastOnce),
            "qosLevel2" => Some(Self::ExactlyOnce),
            _ => None,
        }
    }
}

/// Everything the sgc protocol can be tuned with.
#[derive(Debug, Clone)]
pub struct SgcSettings {
    /// Longest channel name accepted, in bytes (spec default 255).
    pub max_channel_len: usize,
    /// Subscriptions one connection may hold.
    pub max_subscriptions: usize,
    /// Server-to-client QoS.
    pub qos: Qos,
    /// How long to wait for an acknowledgement before re-sending.
    pub resend_interval: Duration,
    /// When to give up re-sending a message.
    pub resend_timeout: Duration,
    /// Bounds of the hub (outbound queue, kept queues).
    pub hub: HubLimits,
    /// Bounds of each connection's protocol state.
    pub session: SessionLimits,
}

impl Default for SgcSettings {
    fn default() -> Self {
        Self {
            max_channel_len: 255,
            max_subscriptions: 1024,
            qos: Qos::AtMostOnce,
            resend_interval: Duration::from_secs(5),
            resend_timeout: Duration::from_secs(60),
            hub: HubLimits {
                // 8,192 messages or 4 MiB, whichever fills first: a client
                // this far behind is closed as slow rather than buffered.
                outbound_messages: 8192,
                outbound_bytes: 4 << 20,
                kept_per_channel: 100,
                kept_max_channels: 10_000,
            },
            session: SessionLimits {
                transaction_messages: 1000,
                qos2_pending: 1000,
                qos2_remembered: 4096,
                pending_acks: 1024,
            },
        }
    }
}
