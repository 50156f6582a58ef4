//! The engine-independent heart of the cluster.
//!
//! The core numbers and encodes outgoing envelopes, chooses which nodes get
//! each one, and applies incoming envelopes: publications go to the
//! attached protocol, interest updates go to the routing table, liveness
//! goes to the peer table. Engines call it; it calls the engine only through
//! [`Transport`].

use crate::sync;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use std::time::Duration;

use tokio::sync::broadcast;
use tracing::{debug, info};

use super::dedup::{Dedup, Verdict};
use super::envelope::{Body, Envelope, now_us};
use super::events::ClusterEvent;
use super::interest::RemoteInterest;
use super::kept_sync::{KEPT_PAGE_BYTES, Pulls};
pub use super::pending::ChannelCounts;
use super::pending::{Barriers, Gathers};
use super::transport::{Target, Transport};
use crate::hub::kept::QueueLevel;
use crate::presence::PresenceProtocol;
use crate::sgc::{Kind, Publication, SgcProtocol};

/// Shared state of one node's cluster membership.
pub struct Core {
    node_id: Arc<str>,
    incarnation: u64,
    /// The sequence counter. Holding it while handing a frame to the
    /// transport keeps sequence order equal to send order on every link.
    send_lock: Mutex<u64>,
    sgc: RwLock<Option<SgcProtocol>>,
    presence: RwLock<Option<PresenceProtocol>>,
    /// Counts this node's presence changes; advanced under the send lock.
    pub(super) pseq: AtomicU64,
    /// Set when the process is exiting: its own clients are about to be
    /// closed, so they are not told about other nodes' members leaving.
    quiet_exit: AtomicBool,
    /// Last presence sequence seen per origin: (incarnation, pseq).
    presence_seen: Mutex<HashMap<Arc<str>, (u64, u64)>>,
    transport: RwLock<Option<Arc<dyn Transport>>>,
    interest: RwLock<RemoteInterest>,
    dedup: Mutex<Dedup>,
    pub(super) live: Mutex<HashSet<Arc<str>>>,
    pub(super) barriers: Mutex<Barriers>,
    gathers: Mutex<Gathers>,
    /// Kept events being pulled from peers (see [`super::kept_sync`]).
    pub(super) kept_pulls: Mutex<Pulls>,
    /// Bytes of kept events per page this node sends.
    pub(super) kept_page_bytes: usize,
    events: broadcast::Sender<ClusterEvent>,
}

impl Core {
    /// A core for node `node_id`; the incarnation is the start time.
    /// `max_message_size` bounds the link frames, so pages of kept events
    /// are kept within it.
    pub fn new(node_id: Arc<str>, max_message_size: usize) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            dedup: Mutex::new(Dedup::new(node_id.clone())),
            node_id,
            incarnation: now_us(),
            send_lock: Mutex::new(0),
            sgc: RwLock::new(None),
            presence: RwLock::new(None),
            pseq: AtomicU64::new(0),
            quiet_exit: AtomicBool::new(false),
            presence_seen: Mutex::default(),
            transport: RwLock::new(None),
            interest: RwLock::default(),
            live: Mutex::default(),
            barriers: Mutex::default(),
            gathers: Mutex::default(),
            kept_pulls: Mutex::default(),
            kept_page_bytes: KEPT_PAGE_BYTES.min(max_message_size),
            events,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &Arc<str> {
        &self.node_id
    }

    /// The process is exiting: stop telling local clients about remote
    /// members leaving (their connections close next).
    pub fn set_quiet_exit(&self) {
        self.quiet_exit.store(true, Ordering::Release);
    }

    /// This process's incarnation.
    pub fn incarnation(&self) -> u64 {
        self.incarnation
    }

    /// Follows cluster events.
    pub fn subscribe_events(&self) -> broadcast::Receiver<ClusterEvent> {
        self.events.subscribe()
    }

    /// Emits an event to every observer (none listening is fine).
    pub fn emit(&self, event: ClusterEvent) {
        let _ = self.events.send(event);
    }

    pub(crate) fn set_sgc(&self, sgc: Option<SgcProtocol>) {
        *sync::write(&self.sgc) = sgc;
    }

    pub(crate) fn set_transport(&self, t: Option<Arc<dyn Transport>>) {
        *sync::write(&self.transport) = t;
    }

    pub(crate) fn set_presence(&self, presence: Option<PresenceProtocol>) {
        *sync::write(&self.presence) = presence;
    }

    fn presence(&self) -> Option<PresenceProtocol> {
        sync::read(&self.presence).clone()
    }

    pub(super) fn sgc(&self) -> Option<SgcProtocol> {
        sync::read(&self.sgc).clone()
    }

    fn transport(&self) -> Option<Arc<dyn Transport>> {
        sync::read(&self.transport).clone()
    }

    /// Numbers, encodes and sends one envelope. `make` runs under the send
    /// lock, so whatever state it reads is current in sequence order.
    pub fn send_with(&self, target: impl FnOnce() -> TargetOwned, make: impl FnOnce() -> Body) {
        let Some(transport) = self.transport() else {
            return;
        };
        let mut seq = sync::lock(&self.send_lock);
        let target = target();
        if matches!(&target, TargetOwned::Nodes(n) if n.is_empty()) {
            return;
        }
        *seq += 1;
        let env = Envelope {
            origin: self.node_id.clone(),
            incarnation: self.incarnation,
            seq: *seq,
            sent_us: now_us(),
            to: match &target {
                TargetOwned::All => None,
                TargetOwned::Nodes(n) => Some(n.clone()),
            },
            body: make(),
        };
        transport.send(target.as_target(), env.encode());
    }

    /// An unsequenced envelope (heartbeats, leave).
    pub fn unsequenced(&self, body: Body) -> Envelope {
        Envelope {
            origin: self.node_id.clone(),
            incarnation: self.incarnation,
            seq: 0,
            sent_us: now_us(),
            to: None,
            body,
        }
    }

    /// Sends this node's state (its interest and its presence members) to
    /// `to`, or to every node.
    pub fn announce(&self, to: Option<&Arc<str>>) {
        let target = || match to {
            Some(peer) => TargetOwned::Nodes(vec![peer.clone()]),
            None => TargetOwned::All,
        };
        let sgc = self.sgc();
        self.send_with(target, || Body::InterestSnapshot {
            names: sgc.map(|s| s.hub().interest()).unwrap_or_default(),
        });
        if let Some(presence) = self.presence() {
            // Taken under the send lock with the presence sequence, so the
            // snapshot covers every delta numbered up to `pseq`.
            self.send_with(target, || Body::PresenceSnapshot {
                pseq: self.pseq.load(Ordering::Acquire),
                snapshot: presence.snapshot_local(),
            });
        }
    }

    /// Channels and subscriber counts summed over every live node. Nodes
    /// that do not answer within `timeout` are left out.
    pub async fn channel_counts(&self, timeout: Duration) -> ChannelCounts {
        let mut totals: HashMap<Arc<str>, usize> = HashMap::new();
        let mut add = |channels: ChannelCounts| {
            for (name, n) in channels {
                *totals.entry(name).or_default() += n;
            }
        };
        add(self.sgc().map(|s| s.hub().channel_counts()).unwrap_or_default());

        let peers = sync::lock(&self.live).len();
        if peers > 0 && self.transport().is_some() {
            let (token, mut rx) = sync::lock(&self.gathers).open(peers);
            self.send_with(|| TargetOwned::All, || Body::ChannelsQuery { token });
            let deadline = tokio::time::Instant::now() + timeout;
            for _ in 0..peers {
                match tokio::time::timeout_at(deadline, rx.recv()).await {
                    Ok(Some(channels)) => add(channels),
                    _ => break,
                }
            }
            sync::lock(&self.gathers).waiting.remove(&token);
        }
        let mut out: Vec<_> = totals.into_iter().collect();
        out.sort();
        out
    }

    /// Asks `peer` for its state: it answers with its snapshots.
    pub fn request_sync_from(&self, peer: &Arc<str>) {
        let to = vec![peer.clone()];
        self.send_with(|| TargetOwned::Nodes(to), || Body::SyncRequest);
    }

    /// Asks every node for its state (after this node was deaf).
    pub fn request_sync(&self) {
        self.send_with(|| TargetOwned::All, || Body::SyncRequest);
    }

    /// A link to `peer` came up: tell it what we are interested in, and pull
    /// its kept events (it may hold some this node missed).
    pub fn peer_up(&self, peer: &Arc<str>) {
        let newly = sync::lock(&self.live).insert(peer.clone());
        if newly {
            info!(peer = %peer, "peer connected");
            self.emit(ClusterEvent::PeerConnected { node_id: peer.clone() });
        }
        self.announce(Some(peer));
        // On every new link, not only when the peer becomes live: a link
        // that replaced another (both ends dialled) may have lost what was
        // queued on the old one, a pull request or a page among it, and a
        // pull whose request is lost never ends. Pulls are idempotent.
        self.pull_kept(peer);
    }

    /// `peer` is gone (left, timed out, link lost): forget what it wanted.
    pub fn peer_down(&self, peer: &Arc<str>, reason: &str) {
        let was_live = sync::lock(&self.live).remove(peer);
        sync::lock(&self.presence_seen).remove(peer);
        if let Some(presence) = self.presence().filter(|_| !self.quiet_exit.load(Ordering::Acquire))
        {
            // Its members go now, each with its notices, never to return
            // unless the node announces them again.
            presence.remove_node(peer);
        }
        sync::write(&self.interest).forget(peer);
        sync::lock(&self.barriers).peer_gone(peer);
        sync::lock(&self.kept_pulls).forget(peer);
        if was_live {
            info!(peer = %peer, reason, "peer disconnected");
            self.emit(ClusterEvent::PeerDisconnected {
                node_id: peer.clone(),
                reason: reason.to_owned(),
            });
        }
    }

    /// The peers currently counted as live.
    pub fn live_peers(&self) -> Vec<Arc<str>> {
        sync::lock(&self.live).iter().cloned().collect()
    }

    /// Whether `peer` is currently counted as live.
    pub fn is_live(&self, peer: &str) -> bool {
        sync::lock(&self.live).contains(peer)
    }

    /// How many names `peer` has told us it is interested in.
    pub fn interest_count(&self, peer: &str) -> usize {
        sync::read(&self.interest).count(peer)
    }

    /// Applies one envelope received from the backplane.
    pub fn receive(&self, env: Envelope) {
        if env.to.as_ref().is_some_and(|to| !to.contains(&self.node_id)) {
            return;
        }
        let verdict = sync::lock(&self.dedup).check(&env.origin, env.incarnation, env.seq);
        match verdict {
            Verdict::Own => return,
            Verdict::Duplicate => {
                metrics::counter!("wscluster_backplane_duplicates_total").increment(1);
                debug!(origin = %env.origin, seq = env.seq, "duplicate envelope dropped");
                return;
            }
            Verdict::Fresh => {}
        }
        metrics::counter!("wscluster_backplane_received_total", "peer" => env.origin.to_string())
            .increment(1);

        let kind = match env.body {
            Body::Publication { publication } => {
                let delay = now_us().saturating_sub(env.sent_us) as f64 / 1e6;
                metrics::histogram!("wscluster_cross_node_delay_seconds").record(delay);
                if let Some(sgc) = self.sgc() {
                    sgc.deliver(&publication);
                }
                "publication"
            }
            Body::InterestSnapshot { names } => {
                sync::write(&self.interest).replace(&env.origin, &names);
                "interest"
            }
            Body::InterestAdded { name, ack } => {
                sync::write(&self.interest).add(&env.origin, &name);
                if ack != 0 {
                    let to = vec![env.origin.clone()];
                    self.send_with(|| TargetOwned::Nodes(to), || Body::InterestAck { token: ack });
                }
                "interest"
            }
            Body::InterestAck { token } => {
                sync::lock(&self.barriers).acked(token, &env.origin);
                "interest"
            }
            Body::InterestRemoved { name } => {
                sync::write(&self.interest).remove(&env.origin, &name);
                "interest"
            }
            Body::PresenceDelta { pseq, delta } => {
                if self.presence_gap(&env.origin, env.incarnation, pseq) {
                    // Apply it anyway (deltas are keyed by holder) and ask
                    // for the full picture to cover what was missed.
                    let to = vec![env.origin.clone()];
                    self.send_with(|| TargetOwned::Nodes(to), || Body::SyncRequest);
                }
                if let Some(presence) = self.presence() {
                    presence.apply_remote(&env.origin, &delta);
                }
                "presence"
            }
            Body::PresenceSnapshot { pseq, snapshot } => {
                sync::lock(&self.presence_seen).insert(env.origin.clone(), (env.incarnation, pseq));
                if let Some(presence) = self.presence() {
                    presence.replace_node(&env.origin, &snapshot);
                }
                "presence"
            }
            Body::PresenceMessage { message } => {
                if let Some(presence) = self.presence() {
                    presence.deliver_message(&message);
                }
                "presence"
            }
            Body::PresenceInvitation { invitation } => {
                if let Some(presence) = self.presence() {
                    presence.deliver_invitation(&invitation);
                }
                "presence"
            }
            Body::Heartbeat => return,
            Body::ChannelsQuery { token } => {
                let channels = self.sgc().map(|s| s.hub().channel_counts()).unwrap_or_default();
                let to = vec![env.origin.clone()];
                self.send_with(
                    || TargetOwned::Nodes(to),
                    || Body::ChannelsReply { token, channels },
                );
                "query"
            }
            Body::ChannelsReply { token, channels } => {
                if let Some(tx) = sync::lock(&self.gathers).waiting.get(&token) {
                    let _ = tx.try_send(channels);
                }
                "query"
            }
            Body::KeptRequest { pull, cursor } => {
                self.answer_kept_request(&env.origin, pull, &cursor);
                "kept"
            }
            Body::KeptPage { pull, records, next } => {
                self.take_kept_page(&env.origin, pull, records, next);
                "kept"
            }
            Body::SyncRequest => {
                self.announce(Some(&env.origin));
                "sync"
            }
            Body::Leave => {
                self.peer_down(&env.origin, "left");
                sync::lock(&self.dedup).forget(&env.origin);
                "leave"
            }
            Body::Peers { peers } => {
                if let Some(t) = self.transport() {
                    t.learn_peers(&peers);
                }
                "peers"
            }
        };
        if self.events.receiver_count() > 0 {
            self.emit(ClusterEvent::Message { origin: env.origin, kind });
        }
    }

    /// Records presence sequence `pseq` from `origin`; true when some
    /// earlier one never arrived.
    fn presence_gap(&self, origin: &Arc<str>, incarnation: u64, pseq: u64) -> bool {
        let mut seen = sync::lock(&self.presence_seen);
        let gap = match seen.get(origin) {
            Some(&(inc, last)) if inc == incarnation => pseq > last + 1,
            // Nothing known of this incarnation yet: its snapshot is coming.
            _ => false,
        };
        let last = seen.get(origin).filter(|(inc, _)| *inc == incarnation).map_or(0, |e| e.1);
        seen.insert(origin.clone(), (incarnation, last.max(pseq)));
        gap
    }

    /// The nodes a publication must reach. Kept events and channel-less
    /// broadcasts go everywhere (every node keeps kept queues; a node that
    /// is not linked now pulls them when it is, see [`super::kept_sync`]);
    /// the rest only where some subscription matches.
    pub(super) fn route(&self, p: &Publication) -> TargetOwned {
        match (&p.channel, p.kind, p.queue) {
            (None, _, _) => TargetOwned::All,
            (Some(_), Kind::Event, QueueLevel::Last | QueueLevel::All) => TargetOwned::All,
            (Some(ch), _, _) => TargetOwned::Nodes(sync::read(&self.interest).nodes_for(ch)),
        }
    }
}

/// An owned [`Target`], built under the send lock.
pub enum TargetOwned {
    /// Every other node.
    All,
    /// Only these nodes.
    Nodes(Vec<Arc<str>>),
}

impl TargetOwned {
    fn as_target(&self) -> Target<'_> {
        match self {
            Self::All => Target::All,
            Self::Nodes(n) => Target::Nodes(n),
        }
    }
}
