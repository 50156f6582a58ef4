//! The engine-independent heart of the cluster.
//!
//! The core numbers and encodes outgoing envelopes, chooses which nodes get
//! each one, and applies incoming envelopes: publications go to the
//! attached protocol, interest updates go to the routing table, liveness
//! goes to the peer table. Engines call it; it calls the engine only through
//! [`Transport`].

use std::collections::HashSet;
use std::sync::{Arc, Mutex, RwLock};

use tokio::sync::broadcast;
use tracing::{debug, info};

use super::dedup::{Dedup, Verdict};
use super::envelope::{Body, Envelope, now_us};
use super::events::ClusterEvent;
use super::interest::RemoteInterest;
use super::transport::{Target, Transport};
use crate::hub::kept::QueueLevel;
use crate::hub::subscriptions::InterestChange;
use crate::sgc::{Kind, Publication, Relay, SgcProtocol};

/// Shared state of one node's cluster membership.
pub struct Core {
    node_id: Arc<str>,
    incarnation: u64,
    /// The sequence counter. Holding it while handing a frame to the
    /// transport keeps sequence order equal to send order on every link.
    send_lock: Mutex<u64>,
    sgc: RwLock<Option<SgcProtocol>>,
    transport: RwLock<Option<Arc<dyn Transport>>>,
    interest: RwLock<RemoteInterest>,
    dedup: Mutex<Dedup>,
    live: Mutex<HashSet<Arc<str>>>,
    events: broadcast::Sender<ClusterEvent>,
}

impl Core {
    /// A core for node `node_id`; the incarnation is the start time.
    pub fn new(node_id: Arc<str>) -> Self {
        let (events, _) = broadcast::channel(1024);
        Self {
            dedup: Mutex::new(Dedup::new(node_id.clone())),
            node_id,
            incarnation: now_us(),
            send_lock: Mutex::new(0),
            sgc: RwLock::new(None),
            transport: RwLock::new(None),
            interest: RwLock::default(),
            live: Mutex::default(),
            events,
        }
    }

    /// This node's id.
    pub fn node_id(&self) -> &Arc<str> {
        &self.node_id
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
        *self.sgc.write().unwrap_or_else(|e| e.into_inner()) = sgc;
    }

    pub(crate) fn set_transport(&self, t: Option<Arc<dyn Transport>>) {
        *self.transport.write().unwrap_or_else(|e| e.into_inner()) = t;
    }

    fn sgc(&self) -> Option<SgcProtocol> {
        self.sgc.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn transport(&self) -> Option<Arc<dyn Transport>> {
        self.transport
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Numbers, encodes and sends one envelope. `make` runs under the send
    /// lock, so whatever state it reads is current in sequence order.
    pub fn send_with(&self, target: impl FnOnce() -> TargetOwned, make: impl FnOnce() -> Body) {
        let Some(transport) = self.transport() else {
            return;
        };
        let mut seq = self.send_lock.lock().unwrap_or_else(|e| e.into_inner());
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
            body,
        }
    }

    /// A link to `peer` came up: tell it what we are interested in.
    pub fn peer_up(&self, peer: &Arc<str>) {
        let newly = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(peer.clone());
        if newly {
            info!(peer = %peer, "peer connected");
            self.emit(ClusterEvent::PeerConnected {
                node_id: peer.clone(),
            });
        }
        let to = vec![peer.clone()];
        let sgc = self.sgc();
        self.send_with(
            || TargetOwned::Nodes(to),
            || Body::InterestSnapshot {
                names: sgc.map(|s| s.hub().interest()).unwrap_or_default(),
            },
        );
    }

    /// `peer` is gone (left, timed out, link lost): forget what it wanted.
    pub fn peer_down(&self, peer: &Arc<str>, reason: &str) {
        let was_live = self
            .live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(peer);
        self.interest
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .forget(peer);
        if was_live {
            info!(peer = %peer, reason, "peer disconnected");
            self.emit(ClusterEvent::PeerDisconnected {
                node_id: peer.clone(),
                reason: reason.to_owned(),
            });
        }
    }

    /// Whether `peer` is currently counted as live.
    pub fn is_live(&self, peer: &str) -> bool {
        self.live
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(peer)
    }

    /// How many names `peer` has told us it is interested in.
    pub fn interest_count(&self, peer: &str) -> usize {
        self.interest
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .count(peer)
    }

    /// Applies one envelope received from the backplane.
    pub fn receive(&self, env: Envelope) {
        let verdict = self.dedup.lock().unwrap_or_else(|e| e.into_inner()).check(
            &env.origin,
            env.incarnation,
            env.seq,
        );
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
                self.interest
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .replace(&env.origin, &names);
                "interest"
            }
            Body::InterestAdded { name } => {
                self.interest
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .add(&env.origin, &name);
                "interest"
            }
            Body::InterestRemoved { name } => {
                self.interest
                    .write()
                    .unwrap_or_else(|e| e.into_inner())
                    .remove(&env.origin, &name);
                "interest"
            }
            Body::Heartbeat => return,
            Body::Leave => {
                self.peer_down(&env.origin, "left");
                self.dedup
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .forget(&env.origin);
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
            self.emit(ClusterEvent::Message {
                origin: env.origin,
                kind,
            });
        }
    }

    /// The nodes a publication must reach. Kept events and channel-less
    /// broadcasts go everywhere (every node keeps kept queues); the rest
    /// only where some subscription matches.
    fn route(&self, p: &Publication) -> TargetOwned {
        match (&p.channel, p.kind, p.queue) {
            (None, _, _) => TargetOwned::All,
            (Some(_), Kind::Event, QueueLevel::Last | QueueLevel::All) => TargetOwned::All,
            (Some(ch), _, _) => TargetOwned::Nodes(
                self.interest
                    .read()
                    .unwrap_or_else(|e| e.into_inner())
                    .nodes_for(ch),
            ),
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

/// The relay the sgc protocol hands its publications to.
pub struct CoreRelay(pub Arc<Core>);

impl Relay for CoreRelay {
    fn publish(&self, p: &Publication) {
        let core = &self.0;
        core.send_with(
            || core.route(p),
            || Body::Publication {
                publication: p.clone(),
            },
        );
    }

    fn interest_changed(&self, change: &InterestChange) {
        let name = match change {
            InterestChange::Added(n) | InterestChange::Removed(n) => n.clone(),
        };
        // Send the current truth, read under the send lock, rather than the
        // delta: two racing changes then still leave peers with the right state.
        let core = &self.0;
        let sgc = core.sgc();
        core.send_with(
            || TargetOwned::All,
            || {
                let present = sgc.is_some_and(|s| s.hub().interest().contains(&name));
                if present {
                    Body::InterestAdded { name }
                } else {
                    Body::InterestRemoved { name }
                }
            },
        );
    }
}
