//! Who has been heard from recently, for engines without links (Redis).
//!
//! Pure bookkeeping: the caller passes the time. A node is live from the
//! first envelope heard until it leaves or stays silent past the failure
//! timeout; a new incarnation of a known node is reported as a restart so
//! its old self can be cleaned up first.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// What hearing from a node meant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Heard {
    /// First time (or first time since it left or timed out).
    New,
    /// Already live.
    Known,
    /// Live, but a new process: the old one is gone.
    Restarted,
}

/// Last time each node was heard, with its incarnation.
#[derive(Default)]
pub struct Liveness {
    nodes: HashMap<Arc<str>, (Instant, u64)>,
}

impl Liveness {
    /// Records an envelope from `node`.
    pub fn heard(&mut self, node: &Arc<str>, incarnation: u64, now: Instant) -> Heard {
        match self.nodes.insert(node.clone(), (now, incarnation)) {
            None => Heard::New,
            Some((_, old)) if incarnation > old => Heard::Restarted,
            Some((_, old)) if incarnation < old => {
                // A straggler from the old process: keep the newer one.
                self.nodes.insert(node.clone(), (now, old));
                Heard::Known
            }
            Some(_) => Heard::Known,
        }
    }

    /// Removes and returns the nodes silent for `timeout` or more.
    pub fn expire(&mut self, now: Instant, timeout: Duration) -> Vec<Arc<str>> {
        let gone: Vec<Arc<str>> = self
            .nodes
            .iter()
            .filter(|(_, (t, _))| now.duration_since(*t) >= timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &gone {
            self.nodes.remove(id);
        }
        gone
    }

    /// Forgets `node` (it left).
    pub fn remove(&mut self, node: &str) {
        self.nodes.remove(node);
    }

    /// Nodes currently live.
    pub fn count(&self) -> usize {
        self.nodes.len()
    }

    /// Their ids.
    pub fn ids(&self) -> Vec<Arc<str>> {
        self.nodes.keys().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodes_come_restart_and_expire() {
        let mut l = Liveness::default();
        let t0 = Instant::now();
        let b: Arc<str> = "b".into();
        assert_eq!(l.heard(&b, 1, t0), Heard::New);
        assert_eq!(l.heard(&b, 1, t0), Heard::Known);
        assert_eq!(l.heard(&b, 2, t0), Heard::Restarted);
        assert_eq!(l.heard(&b, 1, t0), Heard::Known, "old incarnation ignored");
        let s = Duration::from_secs(3);
        assert!(l.expire(t0 + Duration::from_secs(2), s).is_empty());
        assert_eq!(l.expire(t0 + s, s), vec![b.clone()]);
        assert_eq!(l.heard(&b, 2, t0 + s), Heard::New);
    }
}
