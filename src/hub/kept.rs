//! Kept queues: events a channel keeps for subscribers who arrive later.
//!
//! `queueLevel1` keeps the last event, `queueLevel2` keeps every event up to
//! a cap per channel (oldest dropped first). The number of channels holding
//! kept events is capped too; a publication that would open one more channel
//! beyond the cap is delivered but not kept, and counted. Both caps exist so
//! that a client publishing to endless fresh names cannot grow memory.
//!
//! Kept queues are cluster-wide, and a node that (re)joins must catch up on
//! what the others kept while it was away. So every entry carries its
//! publication's id and origin time: [`KeptQueues::merge`] takes the union
//! of two nodes' entries by id, orders it by time and re-applies the keep
//! rules, which makes merging idempotent and independent of order, and
//! [`KeptQueues::page`] reads the queues out in bounded pages for a peer.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::ops::Bound;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

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

/// What a kept event is besides its bytes: enough to merge it with another
/// node's copy of the same queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeptMeta {
    /// The publication id, the same on every node: the key of the union.
    pub id: Arc<str>,
    /// When the publication was made, in origin wall-clock microseconds:
    /// the order of the union (ties, from different nodes, go by id).
    pub at_us: u64,
    /// The level it was published at.
    pub level: QueueLevel,
}

impl KeptMeta {
    fn order(&self, other: &Self) -> std::cmp::Ordering {
        self.at_us.cmp(&other.at_us).then_with(|| self.id.cmp(&other.id))
    }
}

/// One kept event: who it is, and its frame encoded once for replay.
#[derive(Debug, Clone)]
pub struct KeptEntry {
    /// Id, time and level.
    pub meta: KeptMeta,
    /// The `sgc@event` frame as this node sends it.
    pub event: Outgoing,
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

/// What one [`KeptQueues::merge`] did, for the metrics and the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MergeOutcome {
    /// Entries this node did not hold before and holds now.
    pub added: usize,
    /// Entries the per-channel cap dropped (the oldest of the union).
    pub dropped_oldest: usize,
    /// Entries refused because the channel is new here and too many
    /// channels already hold kept events.
    pub refused_channel_cap: usize,
}

/// Where a paged read of the kept queues goes on: a channel (channels are
/// read in name order) and a position in it. Positions are never reused,
/// so the queue dropping its oldest entries between two pages does not
/// make the reader skip one.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeptCursor {
    /// The channel to read from (or the next one after it, if it is gone).
    pub channel: Arc<str>,
    /// The position in that channel.
    pub index: u64,
}

/// A page of kept entries with the cursor of the next page (`None` at the
/// end).
#[derive(Debug, Default)]
pub struct Page {
    /// `(channel, entry)`, channel by channel, oldest first within each.
    pub entries: Vec<(Arc<str>, KeptEntry)>,
    /// Where the next page starts.
    pub next: Option<KeptCursor>,
}

/// Bytes a paged entry is counted for beyond its frame, channel and id:
/// the field names and numbers of the record that carries it, rounded up.
const RECORD_OVERHEAD: usize = 64;

/// The kept events of one channel.
#[derive(Debug)]
struct Queue {
    entries: VecDeque<KeptEntry>,
    /// The position of the front entry. Positions are never reused, not
    /// even by a channel that was cleared and kept again (see `serial`),
    /// so an old cursor never lands in the middle of newer entries.
    base: u64,
}

impl Queue {
    /// Appends by the keep rules; true when the oldest entry was dropped.
    fn push(&mut self, entry: KeptEntry, cap: usize) -> bool {
        if entry.meta.level == QueueLevel::Last {
            self.base += self.entries.len() as u64;
            self.entries.clear();
        }
        self.entries.push_back(entry);
        if self.entries.len() > cap {
            self.entries.pop_front();
            self.base += 1;
            return true;
        }
        false
    }
}

/// The kept events of every channel.
pub struct KeptQueues {
    per_channel: usize,
    max_channels: usize,
    /// By name, so a paged read can go on from a channel name.
    queues: BTreeMap<Arc<str>, Queue>,
    /// Entries ever stored: a new channel's positions start here.
    serial: u64,
}

impl KeptQueues {
    /// `per_channel` bounds queueLevel2 queues; `max_channels` bounds how
    /// many channels may hold kept events at once.
    pub fn new(per_channel: usize, max_channels: usize) -> Self {
        Self { per_channel: per_channel.max(1), max_channels, queues: BTreeMap::new(), serial: 0 }
    }

    /// Offers an event published on `channel`, at the level in its meta.
    pub fn keep(&mut self, channel: &Arc<str>, entry: KeptEntry) -> KeepOutcome {
        if entry.meta.level == QueueLevel::None {
            return KeepOutcome::NotKept;
        }
        let per_channel = self.per_channel;
        let Some(queue) = self.queue_for(channel) else {
            return KeepOutcome::RefusedChannelCap;
        };
        let dropped = queue.push(entry, per_channel);
        self.serial += 1;
        if dropped { KeepOutcome::KeptDroppedOldest } else { KeepOutcome::Kept }
    }

    /// Merges entries another node keeps for `channel` into ours: the union
    /// by id, ordered by (time, id), replayed through the keep rules from
    /// an empty queue (`queueLevel1` clears what precedes it, the cap drops
    /// the oldest). The result depends only on the union, so merging the
    /// same entries twice changes nothing and two merges give the same
    /// queue in either order, whichever node holds what.
    pub fn merge(&mut self, channel: &Arc<str>, incoming: Vec<KeptEntry>) -> MergeOutcome {
        let mut outcome = MergeOutcome::default();
        let fresh = self.unknown(channel, incoming);
        if fresh.is_empty() {
            return outcome;
        }
        let fresh_ids: HashSet<Arc<str>> = fresh.iter().map(|e| e.meta.id.clone()).collect();
        let (per_channel, serial) = (self.per_channel, self.serial);
        let Some(queue) = self.queue_for(channel) else {
            outcome.refused_channel_cap = fresh.len();
            return outcome;
        };

        let mut union: Vec<KeptEntry> = queue.entries.drain(..).chain(fresh).collect();
        union.sort_by(|a, b| a.meta.order(&b.meta));
        // The old positions mean nothing in the new order: a cursor into
        // this channel starts it over (the reader drops repeats by id).
        queue.base = serial;
        let pushed = union.len() as u64;
        for entry in union {
            outcome.dropped_oldest += usize::from(queue.push(entry, per_channel));
        }
        outcome.added = queue.entries.iter().filter(|e| fresh_ids.contains(&e.meta.id)).count();
        self.serial += pushed;
        outcome
    }

    /// Up to about `budget` bytes of entries from `from` on, and where the
    /// next page starts. A page holds at least one entry when any is left,
    /// so an entry larger than the budget still travels, alone.
    pub fn page(&self, from: &KeptCursor, budget: usize) -> Page {
        let mut page = Page::default();
        let mut used = 0;
        let start = (Bound::Included(&*from.channel), Bound::Unbounded);
        for (name, queue) in self.queues.range::<str, _>(start) {
            let skip =
                if *name == from.channel { from.index.saturating_sub(queue.base) } else { 0 };
            let skip = usize::try_from(skip).unwrap_or(usize::MAX);
            for (pos, entry) in queue.entries.iter().enumerate().skip(skip) {
                let cost = entry.event.bytes.len() + name.len() + entry.meta.id.len();
                let cost = cost + RECORD_OVERHEAD;
                if !page.entries.is_empty() && used + cost > budget {
                    let index = queue.base + pos as u64;
                    page.next = Some(KeptCursor { channel: name.clone(), index });
                    return page;
                }
                used += cost;
                page.entries.push((name.clone(), entry.clone()));
            }
        }
        page
    }

    /// The kept events of `channel`, oldest first.
    pub fn replay(&self, channel: &str) -> Vec<Outgoing> {
        self.queues
            .get(channel)
            .map(|q| q.entries.iter().map(|e| e.event.clone()).collect())
            .unwrap_or_default()
    }

    /// The kept events of every channel a pattern matches, channel by
    /// channel, oldest first within each.
    pub fn replay_matching(&self, matches: impl Fn(&str) -> bool) -> Vec<Outgoing> {
        self.queues
            .iter()
            .filter(|(name, _)| matches(name))
            .flat_map(|(_, q)| q.entries.iter().map(|e| e.event.clone()))
            .collect()
    }

    /// Drops the kept events of `channel`.
    pub fn clear(&mut self, channel: &str) {
        self.queues.remove(channel);
    }

    /// The queue of `channel`, created when the channel cap allows.
    fn queue_for(&mut self, channel: &Arc<str>) -> Option<&mut Queue> {
        if !self.queues.contains_key(channel) && self.queues.len() >= self.max_channels {
            return None;
        }
        let serial = self.serial;
        Some(
            self.queues
                .entry(channel.clone())
                .or_insert_with(|| Queue { entries: VecDeque::new(), base: serial }),
        )
    }

    /// The kept entries of `incoming` this node does not hold for
    /// `channel`, each id once.
    fn unknown(&self, channel: &str, incoming: Vec<KeptEntry>) -> Vec<KeptEntry> {
        let mut seen: HashSet<Arc<str>> = self
            .queues
            .get(channel)
            .map(|q| q.entries.iter().map(|e| e.meta.id.clone()).collect())
            .unwrap_or_default();
        incoming
            .into_iter()
            .filter(|e| e.meta.level != QueueLevel::None && seen.insert(e.meta.id.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    /// An entry whose frame is its id, so replays read as ids.
    fn entry(id: &str, at_us: u64, level: QueueLevel) -> KeptEntry {
        KeptEntry {
            meta: KeptMeta { id: id.into(), at_us, level },
            event: Outgoing::new(Bytes::from(id.to_owned())),
        }
    }

    fn all(id: &str, at_us: u64) -> KeptEntry {
        entry(id, at_us, QueueLevel::All)
    }

    fn last(id: &str, at_us: u64) -> KeptEntry {
        entry(id, at_us, QueueLevel::Last)
    }

    fn ids(k: &KeptQueues, channel: &str) -> Vec<String> {
        let frames = k.replay(channel);
        frames.iter().map(|o| String::from_utf8_lossy(&o.bytes).into_owned()).collect()
    }

    fn holding(cap: usize, channel: &Arc<str>, entries: &[KeptEntry]) -> KeptQueues {
        let mut k = KeptQueues::new(cap, 10);
        for e in entries {
            k.keep(channel, e.clone());
        }
        k
    }

    #[test]
    fn level_one_keeps_only_the_last_event() {
        let ch: Arc<str> = "a".into();
        let k = holding(10, &ch, &[last("1", 1), last("2", 2)]);
        assert_eq!(ids(&k, "a"), ["2"]);
    }

    #[test]
    fn level_two_keeps_all_up_to_the_cap_dropping_the_oldest() {
        let ch: Arc<str> = "a".into();
        let mut k = holding(2, &ch, &[all("1", 1), all("2", 2)]);
        assert_eq!(k.keep(&ch, all("3", 3)), KeepOutcome::KeptDroppedOldest);
        assert_eq!(ids(&k, "a"), ["2", "3"]);
    }

    #[test]
    fn the_channel_cap_refuses_new_channels_only() {
        let mut k = KeptQueues::new(2, 1);
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        k.keep(&a, all("1", 1));
        assert_eq!(k.keep(&b, all("x", 1)), KeepOutcome::RefusedChannelCap);
        assert_eq!(k.keep(&a, all("2", 2)), KeepOutcome::Kept);
    }

    #[test]
    fn a_merge_into_an_empty_node_orders_the_entries_by_time() {
        let ch: Arc<str> = "a".into();
        let mut k = KeptQueues::new(10, 10);
        let outcome = k.merge(&ch, vec![all("y", 20), all("x", 10), all("z", 30)]);
        assert_eq!(ids(&k, "a"), ["x", "y", "z"]);
        assert_eq!(outcome, MergeOutcome { added: 3, ..MergeOutcome::default() });
    }

    #[test]
    fn merging_what_is_already_held_changes_nothing() {
        let ch: Arc<str> = "a".into();
        let entries = [all("1", 1), all("2", 2), last("3", 3), all("4", 4)];
        let mut k = holding(10, &ch, &entries);
        let before = ids(&k, "a");

        assert_eq!(k.merge(&ch, entries.to_vec()), MergeOutcome::default());
        assert_eq!(k.merge(&ch, vec![all("4", 4), all("4", 4)]), MergeOutcome::default());
        assert_eq!(ids(&k, "a"), before);
    }

    #[test]
    fn merges_give_the_same_queue_in_either_order() {
        let ch: Arc<str> = "a".into();
        let sets = [
            vec![all("a1", 1), all("a2", 4), all("a3", 9)],
            vec![all("b1", 2), last("b2", 5), all("b3", 7)],
            vec![all("c1", 3), all("c2", 6), all("a2", 4), all("c3", 8)],
            vec![last("d1", 5), all("d2", 5)],
        ];
        for cap in [1, 2, 3, 10] {
            for local in &sets {
                for x in &sets {
                    for y in &sets {
                        let mut xy = holding(cap, &ch, local);
                        xy.merge(&ch, x.clone());
                        xy.merge(&ch, y.clone());
                        let mut yx = holding(cap, &ch, local);
                        yx.merge(&ch, y.clone());
                        yx.merge(&ch, x.clone());
                        assert_eq!(ids(&xy, "a"), ids(&yx, "a"), "cap {cap}");
                        let once = ids(&xy, "a");
                        xy.merge(&ch, x.clone());
                        xy.merge(&ch, y.clone());
                        assert_eq!(ids(&xy, "a"), once, "again, cap {cap}");
                    }
                }
            }
        }
    }

    #[test]
    fn a_newer_level_one_entry_clears_what_precedes_it_in_the_union() {
        let ch: Arc<str> = "a".into();
        let mut k = holding(10, &ch, &[all("1", 1), all("2", 2), all("5", 5)]);
        k.merge(&ch, vec![last("3", 3), all("4", 4)]);
        assert_eq!(ids(&k, "a"), ["3", "4", "5"]);

        // An older level-one entry clears nothing newer.
        k.merge(&ch, vec![last("0", 0)]);
        assert_eq!(ids(&k, "a"), ["3", "4", "5"]);
    }

    #[test]
    fn the_cap_keeps_the_newest_of_the_union_and_counts_the_rest() {
        let ch: Arc<str> = "a".into();
        let mut k = holding(3, &ch, &[all("1", 1), all("3", 3), all("5", 5)]);
        let outcome = k.merge(&ch, vec![all("2", 2), all("4", 4), all("6", 6)]);
        assert_eq!(ids(&k, "a"), ["4", "5", "6"]);
        assert_eq!(outcome, MergeOutcome { added: 2, dropped_oldest: 3, refused_channel_cap: 0 });
    }

    #[test]
    fn a_merge_opens_no_channel_beyond_the_channel_cap() {
        let mut k = KeptQueues::new(10, 1);
        let a: Arc<str> = "a".into();
        let b: Arc<str> = "b".into();
        k.keep(&a, all("1", 1));
        let outcome = k.merge(&b, vec![all("x", 1), all("y", 2)]);
        assert_eq!(outcome.refused_channel_cap, 2);
        assert!(ids(&k, "b").is_empty());
        assert_eq!(k.merge(&a, vec![all("2", 2)]).added, 1);
    }

    /// Reads every page from the start; returns (channel, id) pairs and how
    /// many pages it took.
    fn read_all(k: &KeptQueues, budget: usize) -> (Vec<(String, String)>, usize) {
        let (mut got, mut pages, mut cursor) = (Vec::new(), 0, Some(KeptCursor::default()));
        while let Some(from) = cursor {
            let page = k.page(&from, budget);
            assert!(!page.entries.is_empty() || page.next.is_none(), "empty page with a next");
            got.extend(page.entries.iter().map(|(c, e)| (c.to_string(), e.meta.id.to_string())));
            pages += 1;
            cursor = page.next;
        }
        (got, pages)
    }

    #[test]
    fn pages_cover_every_entry_once_channel_by_channel() {
        let mut k = KeptQueues::new(10, 10);
        let (b, a): (Arc<str>, Arc<str>) = ("b".into(), "a".into());
        for i in 0..5 {
            k.keep(&b, all(&format!("b{i}"), i));
            k.keep(&a, all(&format!("a{i}"), i));
        }

        // Each entry costs 2 + 1 + 2 + 64 = 69 bytes: two fit in 150.
        let (got, pages) = read_all(&k, 150);
        let want: Vec<(String, String)> = ["a", "b"]
            .iter()
            .flat_map(|c| (0..5).map(move |i| (c.to_string(), format!("{c}{i}"))))
            .collect();
        assert_eq!(got, want);
        assert_eq!(pages, 5);

        // An entry larger than the budget travels alone.
        let (got, pages) = read_all(&k, 1);
        assert_eq!((got.len(), pages), (10, 10));
    }

    #[test]
    fn a_cursor_survives_the_oldest_entries_being_dropped_between_pages() {
        let ch: Arc<str> = "a".into();
        let mut k = holding(4, &ch, &[all("1", 1), all("2", 2), all("3", 3), all("4", 4)]);
        let first = k.page(&KeptCursor::default(), 150);
        assert_eq!(first.entries.len(), 2);

        k.keep(&ch, all("5", 5));
        k.keep(&ch, all("6", 6));
        let next = first.next.expect("a second page");
        let rest: Vec<String> =
            k.page(&next, 1000).entries.iter().map(|(_, e)| e.meta.id.to_string()).collect();
        assert_eq!(rest, ["3", "4", "5", "6"]);
    }

    #[test]
    fn a_cursor_into_a_channel_cleared_and_kept_again_starts_it_over() {
        let ch: Arc<str> = "a".into();
        let mut k = holding(10, &ch, &[all("1", 1), all("2", 2), all("3", 3)]);
        let next = k.page(&KeptCursor::default(), 150).next.expect("a second page");

        k.clear("a");
        k.keep(&ch, all("x", 9));
        let rest = k.page(&next, 1000).entries;
        assert_eq!(rest.len(), 1, "the new entry is not skipped");
    }
}
