//! Kept queues: events a channel keeps for subscribers who arrive later.
//!
//! `queueLevel1` keeps the last event, `queueLevel2` keeps every event up to
//! a cap per channel (oldest dropped first). The number of channels holding
//! kept events is capped too; a publication that would open one more channel
//! beyond the cap is delivered but not kept, and counted. Both caps exist so
//! that a client publishing to endless fresh names cannot grow memory.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use super::outbox::Outgoing;

/// How much of a channel's traffic is kept for later subscribers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum QueueLevel {
    /// Nothing is kept (`queueLevel0`).
    #[default]
    None,
    /// The last event is kept (`queueLevel1`).
    Last,
    /// Every event is kept, up to the cap (`queueLevel2`).
    All,
}

impl QueueLevel {
    /// Parses the wire spelling; `None` for an unknown spelling.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "queueLevel0" => Some(Self::None),
            "queueLevel1" => Some(Self::Last),
            "queueLevel2" => Some(Self::All),
            _ => None,
        }
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "queueLevel0",
            Self::Last => "queueLevel1",
            Self::All => "queueLevel2",
        }
    }
}

/// What happened to an event offered to the kept queues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepOutcome {
    /// Not a kept level; nothing to do.
    NotKept,
    /// Stored.
    Kept,
    /// Stored, and the oldest event of the channel was dropped for it.
    KeptDroppedOldest,
    /// Not stored: too many channels already hold kept events.
    RefusedChannelCap,
}

/// The kept events of every channel.
pub struct KeptQueues {
    per_channel: usize,
    max_channels: usize,
    queues: HashMap<Arc<str>, VecDeque<Outgoing>>,
}

impl KeptQueues {
    /// `per_channel` bounds queueLevel2 queues; `max_channels` bounds how
    /// many channels may hold kept events at once.
    pub fn new(per_channel: usize, max_channels: usize) -> Self {
        Self { per_channel: per_channel.max(1), max_channels, queues: HashMap::new() }
    }

    /// Offers an event published at `level` on `channel`.
    pub fn keep(&mut self, channel: &Arc<str>, level: QueueLevel, event: Outgoing) -> KeepOutcome {
        if level == QueueLevel::None {
            return KeepOutcome::NotKept;
        }
        if !self.queues.contains_key(channel) && self.queues.len() >= self.max_channels {
            return KeepOutcome::RefusedChannelCap;
        }

        let queue = self.queues.entry(channel.clone()).or_default();
        if level == QueueLevel::Last {
            queue.clear();
        }
        queue.push_back(event);
        if queue.len() > self.per_channel {
            queue.pop_front();
            return KeepOutcome::KeptDroppedOldest;
        }
        KeepOutcome::Kept
    }

    /// The kept events of `channel`, oldest first.
    pub fn replay(&self, channel: &str) -> Vec<Outgoing> {
        self.queues.get(channel).map(|q| q.iter().cloned().collect()).unwrap_or_default()
    }

    /// The kept events of every channel a pattern matches, channel by
    /// channel, oldest first within each.
    pub fn replay_matching(&self, matches: impl Fn(&str) -> bool) -> Vec<Outgoing> {
        self.queues
            .iter()
            .filter(|(name, _)| matches(name))
            .flat_map(|(_, q)| q.iter().cloned())
            .collect()
    }

    /// Drops the kept events of `channel`.
    pub fn clear(&mut self, channel: &str) {
        self.queues.remove(channel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn ev(text: &'static str) -> Outgoing {
        Outgoing::new(Bytes::from_static(text.as_bytes()))
    }

    fn texts(v: Vec<Outgoing>) -> Vec<Bytes> {
        v.into_iter().map(|o| o.bytes).collect()
    }

    #[test]
    fn level_one_keeps_only_the_last_event() {
        let mut k = KeptQueues::new(10, 10);
        let ch: Arc<str> = "a".into();
        k.keep(&ch, QueueLevel::Last, ev("1"));
        k.keep(&ch, QueueLevel::Last, ev("2"));
        assert_eq!(texts(k.replay("a")), vec![Bytes::from_static(b"2")]);
    }

    #[test]
    fn level_two_keeps_all_up_to_the_cap_dropping_the_oldest() {
        let mut k = KeptQueues::new(2, 10);
        let ch: Arc<str> = "a".into();
        k.keep(&ch, QueueLevel::All, ev("1"));
        k.keep(&ch, QueueLevel::All, ev("2"));
        assert_eq!(k.keep(&ch, QueueLevel::All, ev("3")), KeepOutcome::KeptDroppedOldest);
        assert_eq!(texts(k.replay("a")), vec![Bytes::from_static(b"2"), Bytes::from_static(b"3")]);
    }

    #[test]
    fn the_channel_cap_refuses_new_channels_only() {
        let mut k = KeptQueues::new(2, 1);
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        k.keep(&a, QueueLevel::All, ev("1"));
        assert_eq!(k.keep(&b, QueueLevel::All, ev("x")), KeepOutcome::RefusedChannelCap);
        assert_eq!(k.keep(&a, QueueLevel::All, ev("2")), KeepOutcome::Kept);
    }
}
