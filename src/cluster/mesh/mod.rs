//! The Mesh engine: nodes link to each other directly over TCP.
//!
//! Every node listens for links and dials every peer it knows of, forever,
//! with capped exponential backoff and jitter. One link is kept per pair of
//! nodes: when both ends dialled at once, both keep the link dialled by the
//! smaller node id, so they agree without talking about it. A node gossips
//! the peers it is linked to, so one reachable seed is enough to join.

pub mod handshake;
pub mod link;
pub mod tls;

use crate::sync;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use super::config::ClusterConfig;
use super::core::{Core, TargetOwned};
use super::envelope::Body;
use super::transport::{PeerStatus, Target, Transport};
use handshake::HandshakeError;
use link::LinkHandle;

/// First retry delay after a failed dial.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between dials: a restarted peer is found within this.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Consecutive failed dials after which a gossiped (not configured) peer
/// address is forgotten: with the backoff above, about a minute.
const GOSSIP_GIVE_UP: u32 = 16;
/// Room for the envelope around the largest message.
const ENVELOPE_OVERHEAD: usize = 64 * 1024;

/// What this node knows about one address it dials.
#[derive(Default)]
struct Dialer {
    node_id: Option<Arc<str>>,
    attempted: bool,
    configured: bool,
    state: &'static str,
}

/// What registering a new link did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Registered {
    /// It is the peer's link now.
    Kept,
    /// It replaced the link of the peer's previous incarnation.
    Restarted,
    /// A link to the same incarnation already won the tie-break.
    Duplicate,
    /// It comes from an older incarnation than the registered link.
    Stale,
}

/// State shared by the listener, the dialers and the links.
pub struct MeshShared {
    core: Arc<Core>,
    config: ClusterConfig,
    tls: Option<tls::LinkTls>,
    advertise: String,
    links: RwLock<HashMap<Arc<str>, LinkHandle>>,
    dialers: Mutex<HashMap<String, Dialer>>,
    shutdown: CancellationToken,
    tasks: TaskTracker,
    next_link: AtomicU64,
}

/// A running Mesh engine.
pub struct Mesh {
    shared: Arc<MeshShared>,
    local_addr: SocketAddr,
}

impl Mesh {
    /// Binds the link listener and starts dialling the configured peers.
    ///
    /// # Errors
    /// When the link address cannot be bound.
    pub async fn start(
        core: Arc<Core>,
        config: ClusterConfig,
        tls: Option<tls::LinkTls>,
    ) -> std::io::Result<Self> {
        let listener = TcpListener::bind(config.listen).await?;
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(MeshShared {
            core,
            tls,
            advertise: local_addr.to_string(),
            links: RwLock::default(),
            dialers: Mutex::default(),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            next_link: AtomicU64::new(1),
            config,
        });
        info!(addr = %local_addr, node = %shared.core.node_id(), "mesh listening");

        shared.tasks.spawn(accept_loop(listener, shared.clone()));
        for peer in shared.config.peers.clone() {
            shared.ensure_dialer(&peer, true);
        }
        Ok(Self { shared, local_addr })
    }

    /// The bound link address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Tells every peer this node is leaving, then closes all links.
    pub async fn stop(&self) {
        let leave = self.shared.core.unsequenced(Body::Leave).encode();
        for link in self.shared.links().values() {
            let _ = link.tx.try_send(leave.clone());
        }
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        if tokio::time::timeout(Duration::from_secs(3), self.shared.tasks.wait()).await.is_err() {
            warn!("mesh tasks still running after stop");
        }
    }
}

impl MeshShared {
    fn links(&self) -> std::sync::RwLockReadGuard<'_, HashMap<Arc<str>, LinkHandle>> {
        sync::read(&self.links)
    }

    fn dialers(&self) -> std::sync::MutexGuard<'_, HashMap<String, Dialer>> {
        sync::lock(&self.dialers)
    }

    /// Bytes queued per link before it is dropped as stalled: the
    /// configured bound, but never less than a few maximum-size frames.
    fn link_queue_bytes(&self) -> usize {
        self.config.link_queue_bytes.max(4 * self.max_frame())
    }

    fn max_frame(&self) -> usize {
        self.config.max_message_size + ENVELOPE_OVERHEAD
    }

    fn next_link_id(&self) -> u64 {
        self.next_link.fetch_add(1, Ordering::Relaxed)
    }

    fn heartbeat_frame(&self) -> Bytes {
        link::heartbeat(self)
    }

    /// Keeps one link per peer. A newer incarnation replaces an older
    /// one's link; within one incarnation, when both ends dialled, the link
    /// dialled by the smaller node id wins on both ends.
    fn register(&self, peer: &Arc<str>, handle: LinkHandle) -> Registered {
        let mut links = sync::write(&self.links);
        let mut outcome = Registered::Kept;
        if let Some(existing) = links.get(peer) {
            if handle.incarnation < existing.incarnation {
                return Registered::Stale;
            }
            if handle.incarnation > existing.incarnation {
                outcome = Registered::Restarted;
            } else {
                let preferred = std::cmp::min(self.core.node_id().clone(), peer.clone());
                if existing.dialer == preferred || handle.dialer != preferred {
                    debug!(peer = %peer, "duplicate link dropped");
                    return Registered::Duplicate;
                }
            }
            existing.close.cancel();
        }
        links.insert(peer.clone(), handle);
        outcome
    }

    /// The incarnation of the process linked as `peer`, if any.
    fn linked_incarnation(&self, peer: &str) -> Option<u64> {
        self.links().get(peer).map(|l| l.incarnation)
    }

    /// Removes link `id` of `peer` if it is still the registered one.
    fn unregister(&self, peer: &Arc<str>, id: u64) -> bool {
        let mut links = sync::write(&self.links);
        if links.get(peer).is_some_and(|l| l.id == id) {
            links.remove(peer);
            return true;
        }
        false
    }

    /// Sends our view of the mesh to every linked peer.
    fn gossip(&self) {
        let mut peers: Vec<(Arc<str>, String)> =
            self.links().iter().map(|(id, l)| (id.clone(), l.addr.clone())).collect();
        peers.push((self.core.node_id().clone(), self.advertise.clone()));
        self.core.send_with(|| TargetOwned::All, || Body::Peers { peers });
    }

    /// Starts dialling `addr` unless a dialer for it exists.
    fn ensure_dialer(self: &Arc<Self>, addr: &str, configured: bool) {
        if self.shutdown.is_cancelled() {
            return;
        }
        let mut dialers = self.dialers();
        if let Some(d) = dialers.get_mut(addr) {
            d.configured |= configured;
            return;
        }
        dialers.insert(
            addr.to_owned(),
            Dialer { configured, state: "connecting", ..Dialer::default() },
        );
        drop(dialers);
        self.tasks.spawn(dial_loop(addr.to_owned(), self.clone()));
    }

    fn set_dialer(&self, addr: &str, f: impl FnOnce(&mut Dialer)) {
        if let Some(d) = self.dialers().get_mut(addr) {
            f(d);
        }
    }

    /// True while a live link to the node behind `addr` exists.
    fn linked_via(&self, addr: &str) -> bool {
        let id = self.dialers().get(addr).and_then(|d| d.node_id.clone());
        id.is_some_and(|id| self.links().contains_key(&id))
    }
}

async fn accept_loop(listener: TcpListener, mesh: Arc<MeshShared>) {
    loop {
        let accepted = tokio::select! {
            () = mesh.shutdown.cancelled() => return,
            a = listener.accept() => a,
        };
        match accepted {
            Ok((stream, remote)) => {
                let mesh = mesh.clone();
                mesh.tasks.clone().spawn(async move { inbound(stream, remote, mesh).await });
            }
            Err(e) => {
                // Out of descriptors and the like: back off instead of spinning.
                warn!(error = %e, "mesh accept failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn inbound(stream: TcpStream, remote: SocketAddr, mesh: Arc<MeshShared>) {
    match link::handshake(stream, &mesh, None).await {
        Ok(link) => {
            let dialer = link.peer.clone();
            let peer = link.peer.clone();
            let reason = link::run(link, mesh, dialer).await;
            debug!(peer = %peer, reason, "inbound link ended");
        }
        Err(e) => log_refusal(&remote.to_string(), &e),
    }
}

async fn dial_loop(addr: String, mesh: Arc<MeshShared>) {
    let mut backoff = BACKOFF_MIN;
    let mut failures = 0;
    loop {
        if mesh.shutdown.is_cancelled() {
            return;
        }
        if mesh.linked_via(&addr) {
            // The peer linked to us first; check again later.
            wait(&mesh, Duration::from_millis(500)).await;
            continue;
        }

        match dial_once(&addr, &mesh).await {
            Ok(()) => {
                backoff = BACKOFF_MIN;
                failures = 0;
            }
            Err(HandshakeError::OwnId(_)) => {
                debug!(addr, "address is this node; not dialling it");
                mesh.set_dialer(&addr, |d| {
                    d.attempted = true;
                    d.state = "self";
                });
                return;
            }
            Err(e) => {
                mesh.set_dialer(&addr, |d| {
                    d.state = if is_refusal(&e) { "refused" } else { "connecting" }
                });
                log_refusal(&addr, &e);
                failures += 1;
            }
        }
        mesh.set_dialer(&addr, |d| d.attempted = true);

        // Configured peers are dialled forever. An address only learned by
        // gossip is forgotten once it has failed for about a minute (the
        // node left or died), so stopped nodes do not stay listed, and a
        // stranger later started on that port is not pulled in.
        if failures >= GOSSIP_GIVE_UP && !mesh.dialers().get(&addr).is_some_and(|d| d.configured) {
            debug!(addr, "forgetting a gossiped peer address that stopped answering");
            mesh.dialers().remove(&addr);
            return;
        }

        // Full jitter over the upper half keeps restarted nodes from dialling in lockstep.
        let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        wait(&mesh, jittered).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn dial_once(addr: &str, mesh: &Arc<MeshShared>) -> Result<(), HandshakeError> {
    let connect = tokio::time::timeout(Duration::from_secs(2), TcpStream::connect(addr));
    let stream = match connect.await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(HandshakeError::Io(e.to_string())),
        Err(_) => return Err(HandshakeError::Io("connect timed out".into())),
    };
    let link = link::handshake(stream, mesh, Some(addr)).await?;
    let peer = link.peer.clone();
    mesh.set_dialer(addr, |d| {
        d.node_id = Some(peer.clone());
        d.attempted = true;
        d.state = "connected";
    });

    let reason = link::run(link, mesh.clone(), mesh.core.node_id().clone()).await;
    mesh.set_dialer(addr, |d| d.state = "connecting");
    debug!(peer = %peer, reason, "outbound link ended");
    Ok(())
}

fn is_refusal(e: &HandshakeError) -> bool {
    !matches!(e, HandshakeError::Io(_))
}

fn log_refusal(addr: &str, e: &HandshakeError) {
    if is_refusal(e) {
        warn!(peer_addr = addr, reason = %e, "mesh link refused");
    } else {
        debug!(peer_addr = addr, error = %e, "mesh dial failed");
    }
}

async fn wait(mesh: &MeshShared, d: Duration) {
    tokio::select! {
        () = mesh.shutdown.cancelled() => {}
        () = tokio::time::sleep(d) => {}
    }
}

impl Transport for Mesh {
    fn send(&self, target: Target<'_>, frame: Bytes) {
        let links = self.shared.links();
        let push = |peer: &Arc<str>, link: &LinkHandle| {
            if !link.tx.try_send(frame.clone()) {
                // The peer cannot keep up (or the link is closing): drop the
                // link rather than buffer without bound. It is re-dialled and
                // resynchronised; what was queued on it is lost, and counted.
                metrics::counter!("wscluster_backplane_dropped_total", "reason" => "link_queue_full").increment(1);
                warn!(peer = %peer, "link queue full; dropping link");
                link.close.cancel();
            } else {
                metrics::counter!("wscluster_backplane_sent_total", "peer" => peer.to_string())
                    .increment(1);
            }
        };
        match target {
            Target::All => links.iter().for_each(|(p, l)| push(p, l)),
            Target::Nodes(nodes) => {
                for node in nodes {
                    if let Some((p, l)) = links.get_key_value(node) {
                        push(p, l);
                    }
                }
            }
        }
    }

    fn peers(&self) -> Vec<PeerStatus> {
        let links = self.shared.links();
        let mut out: Vec<PeerStatus> = links
            .iter()
            .map(|(id, l)| PeerStatus {
                id: Some(id.clone()),
                address: l.addr.clone(),
                state: "connected",
            })
            .collect();
        for (addr, d) in self.shared.dialers().iter() {
            let linked = d.node_id.as_ref().is_some_and(|id| links.contains_key(id));
            if !linked && d.state != "self" {
                out.push(PeerStatus {
                    id: d.node_id.clone(),
                    address: addr.clone(),
                    state: d.state,
                });
            }
        }
        out
    }

    fn connected_peer_count(&self) -> usize {
        self.shared.links().len()
    }

    /// Ready when every configured peer has been tried and none that
    /// answered refused us: a peer that is down does not hold readiness
    /// back, but a reachable one we cannot link with (wrong secret, version)
    /// does, so a misconfigured node never takes traffic while cut off.
    fn ready(&self) -> bool {
        !self.shared.shutdown.is_cancelled()
            && self
                .shared
                .dialers()
                .values()
                .all(|d| !d.configured || (d.attempted && d.state != "refused"))
    }

    fn learn_peers(&self, peers: &[(Arc<str>, String)]) {
        for (id, addr) in peers {
            if id != self.shared.core.node_id() && !self.shared.links().contains_key(id) {
                self.shared.ensure_dialer(addr, false);
            }
        }
    }
}
