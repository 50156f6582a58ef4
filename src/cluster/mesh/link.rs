//! One mesh link: the handshake, then envelopes both ways with heartbeats.
//!
//! Frames are length-prefixed (tokio-util's `LengthDelimitedCodec`); a
//! frame longer than the configured maximum ends the link rather than
//! being buffered. The writer drains a bounded queue and sends a heartbeat
//! whenever the link has been idle for a third of the failure timeout; the
//! reader declares the peer gone when nothing at all arrives for the full
//! failure timeout, whether or not TCP has noticed.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::queue::{FrameReceiver, FrameSender, frame_queue};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::handshake::{self, Handshake, HandshakeError};
use super::{MeshShared, Registered, tls};
use crate::cluster::envelope::{Body, Envelope};

/// How long a handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// Most frames written per flush.
const BATCH: usize = 128;

type LinkIo = Framed<Box<dyn tls::LinkIo>, LengthDelimitedCodec>;

/// A link that passed the handshake.
pub struct Established {
    /// The peer's node id.
    pub peer: Arc<str>,
    /// The peer's incarnation (its process start).
    pub peer_incarnation: u64,
    /// The peer's link address, for gossip.
    pub peer_listen: String,
    io: LinkIo,
}

/// The sending side of a registered link.
#[derive(Clone)]
pub struct LinkHandle {
    /// Unique per link, so a stale link never unregisters its successor.
    pub id: u64,
    /// The node that dialled this link (the tie-breaker for duplicates).
    pub dialer: Arc<str>,
    /// The peer's incarnation on this link.
    pub incarnation: u64,
    /// The peer's link address.
    pub addr: String,
    /// Encoded envelopes waiting to be written.
    pub tx: FrameSender,
    /// Cancelled to end the link.
    pub close: CancellationToken,
}

fn codec(max_frame: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(max_frame).new_codec()
}

/// Runs the handshake on a fresh TCP connection: TLS first when it is
/// configured, then the node handshake. `dialled` is the address we
/// dialled, or `None` for an inbound link.
///
/// # Errors
/// When the peer is refused, refuses us, or the link fails.
pub async fn handshake(
    stream: TcpStream,
    mesh: &MeshShared,
    dialled: Option<&str>,
) -> Result<Established, HandshakeError> {
    let _ = stream.set_nodelay(true);
    let both = async {
        let io: Box<dyn tls::LinkIo> = match (&mesh.tls, dialled) {
            (None, _) => Box::new(stream),
            (Some(tls), Some(addr)) => tls.connect(addr, stream).await.map_err(tls_failed)?,
            (Some(tls), None) => tls.accept(stream).await.map_err(tls_failed)?,
        };
        exchange(Framed::new(io, codec(mesh.max_frame())), mesh).await
    };
    tokio::time::timeout(HANDSHAKE_TIMEOUT, both)
        .await
        .unwrap_or_else(|_| Err(HandshakeError::Io("timed out".into())))
}

fn tls_failed(e: std::io::Error) -> HandshakeError {
    HandshakeError::Tls(e.to_string())
}

async fn exchange(mut io: LinkIo, mesh: &MeshShared) -> Result<Established, HandshakeError> {
    let me = mesh.core.node_id().to_string();
    let secret = mesh.config.secret.as_deref();
    let my_nonce = handshake::nonce();

    let hello = Handshake::Hello {
        version: handshake::VERSION,
        node_id: me.clone(),
        incarnation: mesh.core.incarnation(),
        nonce: my_nonce.clone(),
        listen: mesh.advertise.clone(),
    };
    send_hs(&mut io, &hello).await?;

    let (peer, peer_incarnation, their_nonce, peer_listen) = match recv_hs(&mut io).await? {
        Handshake::Hello { version, node_id, nonce, listen, incarnation } => {
            let this = handshake::Me { id: &me, incarnation: mesh.core.incarnation() };
            if let Err(e) = handshake::check_hello(this, version, &node_id, incarnation) {
                refuse(&mut io, &e).await;
                return Err(e);
            }
            // A live link to another process with this id: refuse the
            // newcomer rather than let two nodes share an identity. A real
            // restart gets in once the old link times out.
            if mesh.linked_incarnation(&node_id).is_some_and(|i| i != incarnation) {
                let e = HandshakeError::DuplicateId(node_id);
                refuse(&mut io, &e).await;
                return Err(e);
            }
            (node_id, incarnation, nonce, listen)
        }
        Handshake::Refuse { reason } => return Err(HandshakeError::RefusedByPeer(reason)),
        Handshake::Proof { .. } => return Err(HandshakeError::Unexpected),
    };

    let mac = handshake::proof(secret, &their_nonce, &my_nonce, &me);
    send_hs(&mut io, &Handshake::Proof { mac }).await?;
    match recv_hs(&mut io).await? {
        Handshake::Proof { mac }
            if handshake::verify(secret, &my_nonce, &their_nonce, &peer, &mac) => {}
        Handshake::Proof { .. } => {
            refuse(&mut io, &HandshakeError::BadProof).await;
            return Err(HandshakeError::BadProof);
        }
        Handshake::Refuse { reason } => return Err(HandshakeError::RefusedByPeer(reason)),
        Handshake::Hello { .. } => return Err(HandshakeError::Unexpected),
    }
    Ok(Established { peer: peer.into(), peer_incarnation, peer_listen, io })
}

async fn send_hs(io: &mut LinkIo, frame: &Handshake) -> Result<(), HandshakeError> {
    let bytes = serde_json::to_vec(frame).map_err(|e| HandshakeError::Io(e.to_string()))?;
    io.send(Bytes::from(bytes)).await.map_err(|e| HandshakeError::Io(e.to_string()))
}

async fn recv_hs(io: &mut LinkIo) -> Result<Handshake, HandshakeError> {
    match io.next().await {
        Some(Ok(frame)) => serde_json::from_slice(&frame).map_err(|_| HandshakeError::Unexpected),
        Some(Err(e)) => Err(HandshakeError::Io(e.to_string())),
        None => Err(HandshakeError::Io("closed".into())),
    }
}

async fn refuse(io: &mut LinkIo, why: &HandshakeError) {
    let _ = send_hs(io, &Handshake::Refuse { reason: why.to_string() }).await;
}

/// Registers an established link and serves it until it ends. Returns the
/// reason it ended.
pub async fn run(link: Established, mesh: Arc<MeshShared>, dialer: Arc<str>) -> String {
    let (tx, rx) = frame_queue(mesh.config.link_queue.max(16), mesh.link_queue_bytes());
    let handle = LinkHandle {
        id: mesh.next_link_id(),
        dialer,
        incarnation: link.peer_incarnation,
        addr: link.peer_listen.clone(),
        tx,
        close: mesh.shutdown.child_token(),
    };
    match mesh.register(&link.peer, handle.clone()) {
        Registered::Duplicate => return "duplicate link".into(),
        Registered::Stale => return "link from an older incarnation".into(),
        Registered::Restarted => {
            // The old process is gone even if its link has not noticed:
            // clean up after it before the new one announces itself.
            mesh.core.peer_down(&link.peer, "restarted");
        }
        Registered::Kept => {}
    }
    mesh.core.peer_up(&link.peer);
    mesh.gossip();

    let (sink, stream) = link.io.split();
    let heartbeat = mesh.config.failure_timeout / 3;
    let writer =
        tokio::spawn(write_loop(sink, rx, handle.close.clone(), heartbeat, mesh.heartbeat_frame()));
    let reason = read_loop(stream, &mesh, &handle.close).await;

    handle.close.cancel();
    let _ = writer.await;
    if mesh.unregister(&link.peer, handle.id) {
        mesh.core.peer_down(&link.peer, &reason);
    }
    reason
}

async fn read_loop(
    mut stream: futures_util::stream::SplitStream<LinkIo>,
    mesh: &MeshShared,
    close: &CancellationToken,
) -> String {
    let timeout = mesh.config.failure_timeout;
    loop {
        let next = tokio::select! {
            () = close.cancelled() => return "link closed".into(),
            next = tokio::time::timeout(timeout, stream.next()) => next,
        };
        let frame = match next {
            Err(_) => return "heartbeat timeout".into(),
            Ok(None) => return "link closed by peer".into(),
            Ok(Some(Err(e))) => return format!("link error: {e}"),
            Ok(Some(Ok(frame))) => frame,
        };
        let large = frame.len() >= 16 * 1024;
        match Envelope::decode(&frame) {
            Ok(env) => mesh.core.receive(env),
            Err(e) => {
                metrics::counter!("wscluster_backplane_dropped_total", "reason" => "malformed")
                    .increment(1);
                warn!(error = %e, "malformed envelope dropped");
            }
        }
        // Buffered frames cost no socket read, hence no cooperative budget:
        // give the tasks this delivery woke (client writers) their turn.
        if large {
            tokio::task::yield_now().await;
        } else {
            tokio::task::consume_budget().await;
        }
    }
}

async fn write_loop(
    mut sink: futures_util::stream::SplitSink<LinkIo, Bytes>,
    mut rx: FrameReceiver,
    close: CancellationToken,
    heartbeat: Duration,
    heartbeat_frame: Bytes,
) {
    loop {
        let first = tokio::select! {
            biased;
            () = close.cancelled() => break,
            first = rx.recv() => first,
            () = tokio::time::sleep(heartbeat) => Some(heartbeat_frame.clone()),
        };
        let Some(first) = first else { break };
        if write_batch(&mut sink, &mut rx, first).await.is_err() {
            close.cancel();
            return;
        }
    }

    // Closing: write what is already queued (a leave notice, say), briefly.
    let drain = async {
        while let Some(frame) = rx.try_recv() {
            sink.feed(frame).await?;
        }
        sink.flush().await
    };
    let _ = tokio::time::timeout(Duration::from_secs(1), drain).await;
    debug!("link writer stopped");
}

async fn write_batch(
    sink: &mut futures_util::stream::SplitSink<LinkIo, Bytes>,
    rx: &mut FrameReceiver,
    first: Bytes,
) -> std::io::Result<()> {
    sink.feed(first).await?;
    for _ in 1..BATCH {
        match rx.try_recv() {
            Some(frame) => sink.feed(frame).await?,
            None => break,
        }
    }
    sink.flush().await
}

/// The unsequenced heartbeat frame of this node.
pub fn heartbeat(mesh: &MeshShared) -> Bytes {
    mesh.core.unsequenced(Body::Heartbeat).encode()
}
