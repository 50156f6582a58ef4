//! The subscription index: which connections want which channels.
//!
//! Pure data, no I/O: the hub holds one behind a lock and asks it who
//! receives a publication. Exact names are looked up in a map; patterns are
//! few in practice and are scanned. Every entry is removed as soon as its
//! last subscriber leaves, so the index never keeps empty channels.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use super::pattern::Pattern;

/// Identifies one WebSocket connection within this node.
pub type ConnId = u64;

/// What interest changed after a subscribe or unsubscribe, so the cluster
/// can tell its peers (a node advertises a name only while it has local
/// subscribers for it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InterestChange {
    /// The first local subscriber of this channel or pattern arrived.
    Added(Arc<str>),
    /// The last local subscriber of this channel or pattern left.
    Removed(Arc<str>),
}

#[derive(Default)]
struct PatternEntry {
    pattern: Option<Pattern>,
    subscribers: HashSet<ConnId>,
}

/// Exact and pattern subscriptions, indexed both ways.
#[derive(Default)]
pub struct Subscriptions {
    exact: HashMap<Arc<str>, HashSet<ConnId>>,
    patterns: HashMap<Arc<str>, PatternEntry>,
    by_conn: HashMap<ConnId, HashSet<Arc<str>>>,
}

impl Subscriptions {
    /// Subscribes `conn` to `name` (exact or pattern). Returns the interest
    /// change, if this was the first local subscriber.
    pub fn subscribe(&mut self, conn: ConnId, name: &str) -> Option<InterestChange> {
        let key: Arc<str> = self.intern(name);
        self.by_conn.entry(conn).or_default().insert(key.clone());

        let first = match Pattern::compile(name) {
            None => {
                let set = self.exact.entry(key.clone()).or_default();
                set.insert(conn) && set.len() == 1
            }
            Some(pattern) => {
                let entry = self.patterns.entry(key.clone()).or_default();
                entry.pattern.get_or_insert(pattern);
                entry.subscribers.insert(conn) && entry.subscribers.len() == 1
            }
        };
        first.then_some(InterestChange::Added(key))
    }

    /// Removes one subscription of `conn`. Unsubscribing a pattern removes
    /// only the pattern, never exact subscriptions it happens to match.
    pub fn unsubscribe(&mut self, conn: ConnId, name: &str) -> Option<InterestChange> {
        if let Some(names) = self.by_conn.get_mut(&conn) {
            names.remove(name);
            if names.is_empty() {
                self.by_conn.remove(&conn);
            }
        }
        self.remove_from_index(conn, name)
    }

    /// Removes every subscription of `conn` (unsubscribe_all, or close).
    pub fn unsubscribe_all(&mut self, conn: ConnId) -> Vec<InterestChange> {
        let names = self.by_conn.remove(&conn).unwrap_or_default();
        names.iter().filter_map(|name| self.remove_from_index(conn, name)).collect()
    }

    /// The connections that receive a publication on `channel`, each once,
    /// however many of its subscriptions match.
    pub fn recipients(&self, channel: &str) -> Vec<ConnId> {
        let mut out: Vec<ConnId> =
            self.exact.get(channel).map(|s| s.iter().copied().collect()).unwrap_or_default();
        let exact_len = out.len();

        for entry in self.patterns.values() {
            if entry.pattern.as_ref().is_some_and(|p| p.matches(channel)) {
                out.extend(entry.subscribers.iter().copied());
            }
        }

        // Only a pattern match can introduce a duplicate.
        if out.len() > exact_len {
            out.sort_unstable();
            out.dedup();
        }
        out
    }

    /// True when some local subscription (exact or pattern) matches.
    pub fn has_interest(&self, channel: &str) -> bool {
        self.exact.contains_key(channel)
            || self
                .patterns
                .values()
                .any(|e| e.pattern.as_ref().is_some_and(|p| p.matches(channel)))
    }

    /// True when `name` (exact or pattern) has a local subscriber.
    pub fn has_name(&self, name: &str) -> bool {
        self.exact.contains_key(name) || self.patterns.contains_key(name)
    }

    /// Every channel and pattern with at least one local subscriber.
    pub fn interest(&self) -> Vec<Arc<str>> {
        self.exact.keys().chain(self.patterns.keys()).cloned().collect()
    }

    /// Exact channels with their local subscriber counts.
    pub fn channel_counts(&self) -> Vec<(Arc<str>, usize)> {
        self.exact.iter().map(|(k, v)| (k.clone(), v.len())).collect()
    }

    /// Subscriptions of every connection, and distinct names subscribed.
    pub fn totals(&self) -> (usize, usize) {
        let subscriptions = self.by_conn.values().map(HashSet::len).sum();
        (subscriptions, self.exact.len() + self.patterns.len())
    }

    /// How many subscriptions `conn` holds.
    pub fn count_for(&self, conn: ConnId) -> usize {
        self.by_conn.get(&conn).map_or(0, HashSet::len)
    }

    /// Whether `conn` holds a subscription to `name` (exact or pattern).
    pub fn holds(&self, conn: ConnId, name: &str) -> bool {
        self.by_conn.get(&conn).is_some_and(|names| names.contains(name))
    }

    /// Reuses the existing `Arc<str>` for a known name.
    fn intern(&self, name: &str) -> Arc<str> {
        if let Some((k, _)) = self.exact.get_key_value(name) {
            return k.clone();
        }
        if let Some((k, _)) = self.patterns.get_key_value(name) {
            return k.clone();
        }
        Arc::from(name)
    }

    fn remove_from_index(&mut self, conn: ConnId, name: &str) -> Option<InterestChange> {
        if let Some(set) = self.exact.get_mut(name) {
            if set.remove(&conn) && set.is_empty() {
                let (key, _) = self.exact.remove_entry(name)?;
                return Some(InterestChange::Removed(key));
            }
            return None;
        }
        if let Some(entry) = self.patterns.get_mut(name)
            && entry.subscribers.remove(&conn)
            && entry.subscribers.is_empty()
        {
            let (key, _) = self.patterns.remove_entry(name)?;
            return Some(InterestChange::Removed(key));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_matching_twice_is_listed_once() {
        let mut s = Subscriptions::default();
        s.subscribe(1, "room:1");
        s.subscribe(1, "room:*");
        s.subscribe(2, "room:*");
        assert_eq!(s.recipients("room:1"), vec![1, 2]);
    }

    #[test]
    fn unsubscribing_a_pattern_keeps_exact_subscriptions() {
        let mut s = Subscriptions::default();
        s.subscribe(1, "news");
        s.subscribe(1, "news*");
        s.unsubscribe(1, "news*");
        assert_eq!(s.recipients("news"), vec![1]);
        assert!(s.recipients("newsroom").is_empty());
    }

    #[test]
    fn interest_changes_only_on_first_and_last_subscriber() {
        let mut s = Subscriptions::default();
        assert_eq!(s.subscribe(1, "a"), Some(InterestChange::Added("a".into())));
        assert_eq!(s.subscribe(2, "a"), None);
        assert_eq!(s.subscribe(2, "a"), None);
        assert_eq!(s.unsubscribe(1, "a"), None);
        assert_eq!(s.unsubscribe(2, "a"), Some(InterestChange::Removed("a".into())));
        assert!(s.interest().is_empty());
    }

    #[test]
    fn closing_removes_everything_and_leaves_no_empty_entries() {
        let mut s = Subscriptions::default();
        s.subscribe(7, "a");
        s.subscribe(7, "b*");
        let changes = s.unsubscribe_all(7);
        assert_eq!(changes.len(), 2);
        assert!(s.interest().is_empty());
        assert_eq!(s.count_for(7), 0);
    }
}
