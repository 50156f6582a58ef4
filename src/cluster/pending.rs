//! Requests waiting for the other nodes: interest barriers (a subscribe
//! reply held until every live peer routes the channel here) and gathers
//! (a cluster-wide query collecting one answer per node).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::sgc::Barrier;

/// Channel names with subscriber counts.
pub type ChannelCounts = Vec<(Arc<str>, usize)>;

/// Queries waiting for the other nodes' answers.
#[derive(Default)]
pub(super) struct Gathers {
    next: u64,
    pub(super) waiting: HashMap<u64, mpsc::Sender<ChannelCounts>>,
}

impl Gathers {
    pub(super) fn open(&mut self, peers: usize) -> (u64, mpsc::Receiver<ChannelCounts>) {
        self.next += 1;
        let (tx, rx) = mpsc::channel(peers.max(1));
        self.waiting.insert(self.next, tx);
        (self.next, rx)
    }
}

/// Interest changes waiting for every live peer's acknowledgement.
#[derive(Default)]
pub(super) struct Barriers {
    next: u64,
    waiting: HashMap<u64, (HashSet<Arc<str>>, oneshot::Sender<()>)>,
}

impl Barriers {
    /// Opens a barrier over `peers`; none is needed when there are none.
    pub(super) fn open(&mut self, peers: HashSet<Arc<str>>) -> (u64, Option<Barrier>) {
        if peers.is_empty() {
            return (0, None);
        }
        self.next += 1;
        let (tx, rx) = oneshot::channel();
        self.waiting.insert(self.next, (peers, tx));
        (self.next, Some(rx))
    }

    pub(super) fn acked(&mut self, token: u64, peer: &Arc<str>) {
        if let Some((peers, _)) = self.waiting.get_mut(&token) {
            peers.remove(peer);
            if peers.is_empty() {
                self.release(token);
            }
        }
    }

    pub(super) fn peer_gone(&mut self, peer: &Arc<str>) {
        let done: Vec<u64> = self
            .waiting
            .iter_mut()
            .filter_map(|(t, (peers, _))| (peers.remove(peer) && peers.is_empty()).then_some(*t))
            .collect();
        for token in done {
            self.release(token);
        }
    }

    fn release(&mut self, token: u64) {
        if let Some((_, tx)) = self.waiting.remove(&token) {
            let _ = tx.send(());
        }
    }
}
