//! Catching up on kept queues: a node pulls a peer's kept events, a page at
//! a time, whenever that peer becomes live.
//!
//! Kept events reach every node that is linked when they are published; a
//! node that was down, starting or cut off then has none of them. So when
//! a peer becomes live (a new link, a restart, a healed partition) this
//! node asks it for its kept events from the start and merges each page
//! into its own queues ([`crate::hub::kept::KeptQueues::merge`], a union
//! by id). Both nodes of a new pair do this; what either already held
//! costs a little traffic and changes nothing.
//!
//! The mesh drops a link whose queue overflows, so the transfer is pulled,
//! never pushed: the next page is asked for only when the previous one has
//! arrived, so a pull has at most one page (about [`KEPT_PAGE_BYTES`]) on
//! its link at a time. Pages of a pull that is over (its peer went down,
//! or a newer pull from the same peer started) are ignored.

use std::collections::HashMap;
use std::sync::Arc;

use tracing::{debug, info};

use super::core::{Core, TargetOwned};
use super::envelope::Body;
use crate::hub::kept::KeptCursor;
use crate::sgc::KeptRecord;
use crate::sync;

/// Bytes of kept events per page (fewer when the maximum message size is
/// smaller, so that a page always fits in one link frame): large enough
/// that a full default kept store (10,000 channels) takes a few hundred
/// round trips, small enough to sit beside live traffic in a link queue.
pub const KEPT_PAGE_BYTES: usize = 256 * 1024;

/// The pulls this node has running, at most one per peer.
#[derive(Debug, Default)]
pub struct Pulls {
    last_id: u64,
    running: HashMap<Arc<str>, Pull>,
}

/// The progress of one pull.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pull {
    /// Names the pull in its requests and pages.
    pub id: u64,
    /// Records received so far.
    pub records: u64,
    /// Pages received so far.
    pub pages: u64,
}

impl Pulls {
    /// Starts a pull from `peer`, replacing any running one, and returns
    /// its id.
    pub fn start(&mut self, peer: &Arc<str>) -> u64 {
        self.last_id += 1;
        let pull = Pull { id: self.last_id, records: 0, pages: 0 };
        self.running.insert(peer.clone(), pull);
        pull.id
    }

    /// Counts a page of `records` from `peer`; `None` when it belongs to no
    /// running pull (and is to be ignored). The last page ends the pull.
    pub fn page(&mut self, peer: &str, id: u64, records: usize, last: bool) -> Option<Pull> {
        let pull = self.running.get_mut(peer).filter(|p| p.id == id)?;
        pull.records += records as u64;
        pull.pages += 1;
        let progress = *pull;
        if last {
            self.running.remove(peer);
        }
        Some(progress)
    }

    /// `peer` is gone: its pages no longer count.
    pub fn forget(&mut self, peer: &str) {
        self.running.remove(peer);
    }
}

impl Core {
    /// Asks `peer` for its kept events, from the start. Without an sgc
    /// protocol attached there is nothing to merge them into.
    pub fn pull_kept(&self, peer: &Arc<str>) {
        if self.sgc().is_none() {
            return;
        }
        let pull = sync::lock(&self.kept_pulls).start(peer);
        debug!(peer = %peer, pull, "pulling kept events");
        self.request_kept_page(peer, pull, KeptCursor::default());
    }

    /// Pulls the kept events of every live peer (after this node was deaf
    /// for a while without losing them).
    pub fn pull_kept_from_live(&self) {
        for peer in self.live_peers() {
            self.pull_kept(&peer);
        }
    }

    /// Answers a `KeptRequest`: one page from `cursor`, to `origin` only.
    pub(super) fn answer_kept_request(&self, origin: &Arc<str>, pull: u64, cursor: &KeptCursor) {
        let (records, next) = match self.sgc() {
            Some(sgc) => sgc.kept_page(cursor, self.kept_page_bytes),
            None => (Vec::new(), None),
        };
        let to = vec![origin.clone()];
        self.send_with(|| TargetOwned::Nodes(to), || Body::KeptPage { pull, records, next });
    }

    /// Merges a page from `origin` and asks for the next one, if any.
    pub(super) fn take_kept_page(
        &self,
        origin: &Arc<str>,
        pull: u64,
        records: Vec<KeptRecord>,
        next: Option<KeptCursor>,
    ) {
        let count = records.len();
        let progress = sync::lock(&self.kept_pulls).page(origin, pull, count, next.is_none());
        let Some(progress) = progress else {
            debug!(peer = %origin, pull, records = count, "kept page of an ended pull ignored");
            return;
        };
        let added = self.sgc().map_or(0, |sgc| sgc.merge_kept(records));
        metrics::counter!("wscluster_kept_synced_total").increment(count as u64);
        debug!(peer = %origin, pull, records = count, added, last = next.is_none(), "kept page merged");

        match next {
            Some(cursor) => self.request_kept_page(origin, pull, cursor),
            None if progress.records > 0 => {
                info!(peer = %origin, records = progress.records, pages = progress.pages, "kept events synced");
            }
            None => {}
        }
    }

    fn request_kept_page(&self, peer: &Arc<str>, pull: u64, cursor: KeptCursor) {
        let to = vec![peer.clone()];
        self.send_with(|| TargetOwned::Nodes(to), || Body::KeptRequest { pull, cursor });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pull_counts_its_pages_and_ends_with_the_last() {
        let mut pulls = Pulls::default();
        let peer: Arc<str> = "b".into();
        let id = pulls.start(&peer);

        assert_eq!(pulls.page("b", id, 3, false), Some(Pull { id, records: 3, pages: 1 }));
        assert_eq!(pulls.page("b", id, 2, true), Some(Pull { id, records: 5, pages: 2 }));
        assert_eq!(pulls.page("b", id, 1, true), None, "over");
    }

    #[test]
    fn pages_of_a_replaced_or_forgotten_pull_are_ignored() {
        let mut pulls = Pulls::default();
        let peer: Arc<str> = "b".into();
        let old = pulls.start(&peer);
        let new = pulls.start(&peer);

        assert_eq!(pulls.page("b", old, 1, false), None);
        assert!(pulls.page("b", new, 1, false).is_some());
        assert_eq!(pulls.page("c", new, 1, false), None, "another peer");
        pulls.forget("b");
        assert_eq!(pulls.page("b", new, 1, true), None);
    }
}
