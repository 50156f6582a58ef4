//! The hub: this node's connections and who is subscribed to what.
//!
//! The hub fans out bytes that were encoded once; it does not know the
//! wire format. A publication is turned into an [`Outgoing`] by the
//! protocol, then [`Hub::fan_out`] clones the shared `Bytes` handle into the
//! outbox of every matching connection. Pushes never wait: a full outbox
//! closes that one connection as a slow consumer (see [`outbox`]).

pub mod acks;
pub mod kept;
pub mod outbox;
pub mod pattern;
pub mod subscriptions;

use crate::sync;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use kept::{KeepOutcome, KeptCursor, KeptEntry, KeptMeta, KeptQueues, MergeOutcome, Page};
use outbox::{CloseReason, Outbox, OutboxReceiver, Outgoing};
use subscriptions::{ConnId, InterestChange, Subscriptions};

/// Bounds the hub enforces.
#[derive(Debug, Clone, Copy)]
pub struct HubLimits {
    /// Outbound queue bound per connection, in messages.
    pub outbound_messages: usize,
    /// Outbound queue bound per connection, in bytes.
    pub outbound_bytes: usize,
    /// Kept events per channel at queueLevel2.
    pub kept_per_channel: usize,
    /// Channels that may hold kept events at once.
    pub kept_max_channels: usize,
}

#[derive(Default)]
struct State {
    conns: HashMap<ConnId, Outbox>,
    subs: Subscriptions,
}

/// Connections, subscriptions and kept queues of one protocol on one node.
pub struct Hub {
    limits: HubLimits,
    state: RwLock<State>,
    kept: Mutex<KeptQueues>,
    next_conn: AtomicU64,
}

impl Hub {
    /// An empty hub.
    pub fn new(limits: HubLimits) -> Self {
        Self {
            limits,
            state: RwLock::default(),
            kept: Mutex::new(KeptQueues::new(limits.kept_per_channel, limits.kept_max_channels)),
            next_conn: AtomicU64::new(1),
        }
    }

    /// Registers a new connection and returns its id and outbox ends.
    pub fn register(&self) -> (ConnId, Outbox, OutboxReceiver) {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = outbox::outbox(self.limits.outbound_messages, self.limits.outbound_bytes);
        self.write().conns.insert(id, tx.clone());
        metrics::gauge!("wscluster_connections").increment(1.0);
        (id, tx, rx)
    }

    /// Forgets a closed connection and its subscriptions.
    pub fn unregister(&self, conn: ConnId) -> Vec<InterestChange> {
        let mut state = self.write();
        if state.conns.remove(&conn).is_some() {
            metrics::gauge!("wscluster_connections").decrement(1.0);
        }
        state.subs.unsubscribe_all(conn)
    }

    /// Subscribes `conn` to a channel or pattern and queues the kept events
    /// it should see first. The replay is pushed under the same lock as the
    /// subscription, so no live event can overtake a kept one.
    pub fn subscribe(&self, conn: ConnId, name: &str, reply: Outgoing) -> Option<InterestChange> {
        let mut state = self.write();
        let change = state.subs.subscribe(conn, name);
        let Some(tx) = state.conns.get(&conn) else {
            return change;
        };

        tx.push(reply);
        let kept = sync::lock(&self.kept);
        let replay = match pattern::Pattern::compile(name) {
            None => kept.replay(name),
            Some(p) => kept.replay_matching(|c| p.matches(c)),
        };
        for event in replay {
            tx.push(event);
        }
        change
    }

    /// Removes one subscription of `conn`.
    pub fn unsubscribe(&self, conn: ConnId, name: &str) -> Option<InterestChange> {
        self.write().subs.unsubscribe(conn, name)
    }

    /// Removes every subscription of `conn`.
    pub fn unsubscribe_all(&self, conn: ConnId) -> Vec<InterestChange> {
        self.write().subs.unsubscribe_all(conn)
    }

    /// How many subscriptions `conn` holds.
    pub fn subscription_count(&self, conn: ConnId) -> usize {
        self.read().subs.count_for(conn)
    }

    /// Whether `conn` already holds a subscription to `name`.
    pub fn holds(&self, conn: ConnId, name: &str) -> bool {
        self.read().subs.holds(conn, name)
    }

    /// Delivers `event` to every local subscriber of `channel` (each once)
    /// and, when `kept` says so, keeps it for later subscribers. Returns
    /// how many connections it was queued for.
    pub fn fan_out(&self, channel: &Arc<str>, kept: Option<KeptMeta>, event: Outgoing) -> usize {
        let state = self.read();
        if let Some(meta) = kept {
            self.keep(channel, KeptEntry { meta, event: event.clone() });
        }

        let mut delivered = 0;
        for conn in state.subs.recipients(channel) {
            if let Some(tx) = state.conns.get(&conn) {
                delivered += usize::from(tx.push(event.clone()));
            }
        }
        delivered
    }

    /// Delivers `event` to every connection of this hub.
    pub fn fan_out_all(&self, event: &Outgoing) -> usize {
        let state = self.read();
        state.conns.values().filter(|tx| tx.push(event.clone())).count()
    }

    /// Queues `event` for one connection (a direct reply).
    pub fn send_to(&self, conn: ConnId, event: Outgoing) -> bool {
        self.read().conns.get(&conn).is_some_and(|tx| tx.push(event))
    }

    /// Drops the kept events of `channel`.
    pub fn clear_kept(&self, channel: &str) {
        sync::lock(&self.kept).clear(channel);
    }

    /// Merges kept entries another node holds for `channel` into this
    /// node's (see [`KeptQueues::merge`]); nobody is sent anything now.
    /// What the caps drop or refuse is counted like a refused `keep`.
    pub fn merge_kept(&self, channel: &Arc<str>, entries: Vec<KeptEntry>) -> MergeOutcome {
        let outcome = sync::lock(&self.kept).merge(channel, entries);
        count_kept_drops("per_channel_cap", outcome.dropped_oldest);
        count_kept_drops("channel_cap", outcome.refused_channel_cap);
        outcome
    }

    /// A page of this node's kept entries for a peer (see
    /// [`KeptQueues::page`]). Entries are shared handles: the lock is held
    /// only to clone them.
    pub fn kept_page(&self, from: &KeptCursor, budget: usize) -> Page {
        sync::lock(&self.kept).page(from, budget)
    }

    /// Channels and patterns with local subscribers (for cluster interest).
    pub fn interest(&self) -> Vec<Arc<str>> {
        self.read().subs.interest()
    }

    /// True when `name` (exact or pattern) has a local subscriber.
    pub fn has_name(&self, name: &str) -> bool {
        self.read().subs.has_name(name)
    }

    /// True when a local subscription matches `channel`.
    pub fn has_interest(&self, channel: &str) -> bool {
        self.read().subs.has_interest(channel)
    }

    /// Exact channels with their local subscriber counts.
    pub fn channel_counts(&self) -> Vec<(Arc<str>, usize)> {
        self.read().subs.channel_counts()
    }

    /// Subscriptions held on this node, and distinct channels and patterns.
    pub fn totals(&self) -> (usize, usize) {
        self.read().subs.totals()
    }

    /// Number of open connections.
    pub fn connection_count(&self) -> usize {
        self.read().conns.len()
    }

    /// Asks every connection to close with `reason`.
    pub fn close_all(&self, reason: CloseReason) {
        for tx in self.read().conns.values() {
            tx.close(reason);
        }
    }

    fn keep(&self, channel: &Arc<str>, entry: KeptEntry) {
        let outcome = sync::lock(&self.kept).keep(channel, entry);
        match outcome {
            KeepOutcome::KeptDroppedOldest => count_kept_drops("per_channel_cap", 1),
            KeepOutcome::RefusedChannelCap => count_kept_drops("channel_cap", 1),
            KeepOutcome::Kept | KeepOutcome::NotKept => {}
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, State> {
        sync::read(&self.state)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, State> {
        sync::write(&self.state)
    }
}

fn count_kept_drops(reason: &'static str, n: usize) {
    if n > 0 {
        metrics::counter!("wscluster_kept_dropped_total", "reason" => reason).increment(n as u64);
    }
}
