//! One client connection: the task that reads its frames and writes its
//! outbox.
//!
//! A single task owns the socket. It waits, in priority order, for a close
//! request (slow consumer, shutdown), queued outbound messages, the next
//! client frame, and the re-send timer. Outbound messages are written in
//! batches and flushed once per batch, so a burst costs one syscall rather
//! than one per message. The loop is the same for every protocol; what a
//! protocol does with a frame, and whether it asks clients to acknowledge
//! what they are sent, comes through a small `Endpoint` trait.
//!
//! A protocol forgets the connection as soon as the loop ends, before the
//! closing handshake completes: a client that waits for the close to finish
//! and connects again finds its old state already gone.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio_util::sync::CancellationToken;
use tokio_websockets::{CloseCode, Error as WsError, Message, WebSocketStream};
use tracing::{Instrument, debug, info};

use crate::hub::acks::PendingAcks;
use crate::hub::outbox::{CloseReason, OutboxReceiver, Outgoing};
use crate::presence::{PresenceProtocol, PresenceSession};
use crate::sgc::hooks::Client;
use crate::sgc::session::Session;
use crate::sgc::{Barrier, Qos, SgcProtocol, new_id};

/// Most messages written before one flush; bounds the time between reads.
const BATCH: usize = 64;

/// Frames this large (bytes) make the connection task yield after handling
/// them (see [`yield_after`]).
const LARGE_FRAME: usize = 16 * 1024;

/// Longest wait for the cluster to apply a new subscription's interest.
const BARRIER_TIMEOUT: Duration = Duration::from_secs(5);

/// Most bytes read and discarded from a closing client (see [`finish`]).
const DRAIN_LIMIT: u64 = 32 << 20;

/// How long a closing handshake may take before the socket is dropped.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The same for a slow consumer: what was already written to its socket
/// must drain before the 1008 close frame can reach it, and a client that
/// is merely slow deserves to see why it was cut off. Still bounded.
const SLOW_CLOSE_GRACE: Duration = Duration::from_secs(10);

/// When unacknowledged messages are re-sent and given up.
#[derive(Debug, Clone, Copy)]
struct Resend {
    interval: Duration,
    timeout: Duration,
}

/// One protocol's side of a connection, as the shared loop drives it.
trait Endpoint {
    /// Handles a text frame from the client.
    fn on_text(&mut self, text: &str);
    /// Handles a binary frame from the client.
    fn on_binary(&mut self);
    /// A wait the protocol asks for before the next frame is read.
    fn take_barrier(&mut self) -> Option<Barrier> {
        None
    }
    /// The re-send rule when clients must acknowledge messages, else `None`.
    fn resend(&self) -> Option<Resend>;
    /// The messages awaiting acknowledgement.
    fn acks(&mut self) -> &mut PendingAcks;
}

struct SgcEndpoint<'a> {
    proto: &'a SgcProtocol,
    session: &'a mut Session,
}

impl Endpoint for SgcEndpoint<'_> {
    fn on_text(&mut self, text: &str) {
        self.proto.handle_text(self.session, text);
    }

    fn on_binary(&mut self) {
        self.proto.handle_binary(self.session);
    }

    fn take_barrier(&mut self) -> Option<Barrier> {
        self.session.barrier.take()
    }

    fn resend(&self) -> Option<Resend> {
        let settings = self.proto.settings();
        (settings.qos != Qos::AtMostOnce).then_some(Resend {
            interval: settings.resend_interval,
            timeout: settings.resend_timeout,
        })
    }

    fn acks(&mut self) -> &mut PendingAcks {
        self.session.pending_acks()
    }
}

struct PresenceEndpoint<'a> {
    proto: &'a PresenceProtocol,
    session: &'a mut PresenceSession,
}

impl Endpoint for PresenceEndpoint<'_> {
    fn on_text(&mut self, text: &str) {
        self.proto.handle_text(self.session, text);
    }

    fn on_binary(&mut self) {
        self.proto.handle_binary(self.session);
    }

    fn resend(&self) -> Option<Resend> {
        let settings = self.proto.settings();
        settings.acknowledgment.then_some(Resend {
            interval: settings.resend_interval,
            timeout: settings.resend_timeout,
        })
    }

    fn acks(&mut self) -> &mut PendingAcks {
        &mut self.session.acks
    }
}

/// Serves the sgc protocol on an accepted WebSocket until it closes.
pub async fn serve_sgc<S>(
    mut ws: WebSocketStream<S>,
    proto: SgcProtocol,
    remote: Option<SocketAddr>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (conn, _tx, mut rx) = proto.hub().register();
    let client = Client { session_id: new_id(), remote };
    let mut session = Session::new(conn, client, proto.settings().session);
    let span = tracing::debug_span!("conn", session = %session.client.session_id);
    debug!(parent: &span, ?remote, "client connected");

    proto.send_session(&session);
    if let Some(hook) = &proto.hooks().connect {
        hook(&session.client);
    }

    let mut endpoint = SgcEndpoint { proto: &proto, session: &mut session };
    let close = run(&mut ws, &mut endpoint, &mut rx, &shutdown).instrument(span.clone()).await;

    let changes = proto.hub().unregister(conn);
    let _ = proto.interest_changed(&changes);
    if let Some(hook) = &proto.hooks().disconnect {
        hook(&session.client);
    }
    finish(&mut ws, close).instrument(span).await;
    debug!(session = %session.client.session_id, "client disconnected");
}

/// Serves the presence protocol on an accepted WebSocket until it closes;
/// then every member the connection registered leaves the roster.
pub async fn serve_presence<S>(
    mut ws: WebSocketStream<S>,
    proto: PresenceProtocol,
    remote: Option<SocketAddr>,
    shutdown: CancellationToken,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (mut session, mut rx) = proto.open(remote);
    let span = tracing::debug_span!("conn", session = %session.client.session_id);
    debug!(parent: &span, ?remote, "presence client connected");

    let mut endpoint = PresenceEndpoint { proto: &proto, session: &mut session };
    let close = run(&mut ws, &mut endpoint, &mut rx, &shutdown).instrument(span.clone()).await;

    proto.close(&session);
    finish(&mut ws, close).instrument(span).await;
    debug!(session = %session.client.session_id, "presence client disconnected");
}

/// How the loop ended, and what close frame (if any) we still owe.
enum Ending {
    /// The peer closed or the socket failed; nothing more to send.
    Gone,
    /// The library already queued its close frame (a protocol error, or the
    /// reply to the peer's close); flush it.
    FlushLibraryClose,
    /// We close with this code and reason.
    Close(CloseCode, &'static str),
}

async fn run<S, E>(
    ws: &mut WebSocketStream<S>,
    endpoint: &mut E,
    rx: &mut OutboxReceiver,
    shutdown: &CancellationToken,
) -> Ending
where
    S: AsyncRead + AsyncWrite + Unpin,
    E: Endpoint,
{
    let policy = endpoint.resend();
    let tick = policy.map_or(Duration::from_secs(3600), |p| p.interval);
    let mut resend = tokio::time::interval(tick.max(Duration::from_millis(10)));
    // Built once: a fresh `cancelled()` future per iteration registers and
    // drops a waiter each time (seen at a few percent of fan-out CPU). The
    // outbox's close signal is lock-free; shutdown is rare and shared.
    let killed = rx.close_signal();
    let stopping = shutdown.cancelled();
    let counters = OutCounters::new();
    tokio::pin!(killed, stopping);

    loop {
        let waiting = policy.is_some() && !endpoint.acks().is_empty();
        tokio::select! {
            biased;
            () = &mut killed => return ending_for(rx.reason()),
            () = &mut stopping => return Ending::Close(CloseCode::GOING_AWAY, "server shutting down"),
            frame = ws.next() => match frame {
                None => return Ending::Gone,
                // The library queued its reply; the protocol forgets the
                // connection before that reply is flushed (module docs).
                Some(Ok(msg)) if msg.is_close() => return Ending::FlushLibraryClose,
                Some(Ok(msg)) => {
                    let large = msg.as_payload().len() >= LARGE_FRAME;
                    on_frame(endpoint, &msg);
                    if let Some(barrier) = endpoint.take_barrier() {
                        // Bounded: a peer that never answers is dropped by
                        // the failure timeout, which releases the barrier.
                        let _ = tokio::time::timeout(BARRIER_TIMEOUT, barrier).await;
                    }
                    yield_after(large).await;
                }
                Some(Err(e)) => return ending_for_error(&e),
            },
            batch = rx.recv_batch(BATCH) => {
                if policy.is_some() && !track_acks(endpoint.acks(), &batch) {
                    return ending_for(CloseReason::SlowConsumer);
                }
                tokio::select! {
                    r = write_batch(ws, batch, &counters) => if r.is_err() { return Ending::Gone },
                    () = &mut killed => return ending_for(rx.reason()),
                    () = &mut stopping => return Ending::Close(CloseCode::GOING_AWAY, "server shutting down"),
                }
            }
            _ = resend.tick(), if waiting => {
                let Some(p) = policy else { continue };
                let (due, expired) = endpoint.acks().due(Instant::now(), p.interval, p.timeout);
                if expired > 0 {
                    metrics::counter!("wscluster_qos_expired_total").increment(expired as u64);
                }
                let batch = due.into_iter().map(Outgoing::new).collect();
                if write_batch(ws, batch, &counters).await.is_err() {
                    return Ending::Gone;
                }
            }
        }
    }
}

/// Lets the tasks this one woke run. Frames already in the read buffer are
/// handed out without touching the socket, so tokio's cooperative budget
/// never runs out and a client sending a burst would keep its worker busy:
/// the link writers and the Redis publisher it woke, queued on the same
/// worker, would wait, and with them the heartbeats, until peers declared
/// this node dead. Large frames yield at once; small ones charge the budget.
async fn yield_after(large: bool) {
    if large {
        tokio::task::yield_now().await;
    } else {
        tokio::task::consume_budget().await;
    }
}

fn on_frame(endpoint: &mut impl Endpoint, msg: &Message) {
    if let Some(text) = msg.as_text() {
        endpoint.on_text(text);
    } else if msg.is_binary() {
        endpoint.on_binary();
    }
    // Ping and pong are answered by the WebSocket library.
}

/// Records messages that need an acknowledgement; false when the client
/// lets too many wait (it is then closed as a slow consumer).
fn track_acks(acks: &mut PendingAcks, batch: &[Outgoing]) -> bool {
    let now = Instant::now();
    batch.iter().all(|o| match &o.ack_id {
        Some(id) => acks.track(id.clone(), o.bytes.clone(), now),
        None => true,
    })
}

/// The connection's handles on the counters every write updates. Taken
/// once per connection: looking a counter up by name hashes its key on
/// each call (~1% of fan-out CPU when every batch did it).
struct OutCounters {
    messages: metrics::Counter,
    bytes: metrics::Counter,
}

impl OutCounters {
    fn new() -> Self {
        Self {
            messages: metrics::counter!("wscluster_messages_out_total"),
            bytes: metrics::counter!("wscluster_bytes_out_total"),
        }
    }
}

async fn write_batch<S>(
    ws: &mut WebSocketStream<S>,
    batch: Vec<Outgoing>,
    counters: &OutCounters,
) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let n = batch.len() as u64;
    let bytes: u64 = batch.iter().map(|o| o.bytes.len() as u64).sum();
    for out in batch {
        ws.feed(Message::text(out.bytes)).await?;
    }
    counters.messages.increment(n);
    counters.bytes.increment(bytes);
    ws.flush().await
}

fn ending_for(reason: CloseReason) -> Ending {
    match reason {
        CloseReason::SlowConsumer => Ending::Close(CloseCode::POLICY_VIOLATION, "slow consumer"),
        CloseReason::GoingAway => Ending::Close(CloseCode::GOING_AWAY, "server shutting down"),
    }
}

fn ending_for_error(e: &WsError) -> Ending {
    match e {
        // A message assembled from fragments past the limit is reported
        // without a queued close frame; single oversized frames come with one.
        WsError::PayloadTooLong { .. } => {
            Ending::Close(CloseCode::MESSAGE_TOO_BIG, "message too big")
        }
        WsError::Protocol(_) => Ending::FlushLibraryClose,
        _ => Ending::Gone,
    }
}

/// Sends our close frame (or flushes the library's) and waits briefly for
/// the peer's, so clients see a clean close code. Bounded by [`CLOSE_GRACE`]
/// (or [`SLOW_CLOSE_GRACE`] for a slow consumer).
async fn finish<S>(ws: &mut WebSocketStream<S>, ending: Ending)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let grace = match ending {
        Ending::Close(CloseCode::POLICY_VIOLATION, _) => SLOW_CLOSE_GRACE,
        _ => CLOSE_GRACE,
    };
    let drain = matches!(ending, Ending::Close(CloseCode::MESSAGE_TOO_BIG, _));
    let closing = async {
        match ending {
            Ending::Gone => return,
            Ending::Close(code, reason) => {
                if code == CloseCode::POLICY_VIOLATION {
                    info!(code = u16::from(code), reason, "closing connection");
                }
                let _ = ws.send(Message::close(Some(code), reason)).await;
            }
            Ending::FlushLibraryClose => {}
        }
        while let Some(Ok(_)) = ws.next().await {}

        // After refusing an oversized message the client may still be
        // writing it. Closing the socket on unread bytes makes the kernel
        // send a reset, which can destroy our close frame before the client
        // reads it; so read and discard what it still sends (bounded by the
        // grace period and DRAIN_LIMIT) until it closes its side.
        if !drain {
            return;
        }
        let _ = ws.flush().await;
        // `io::copy` reads through a heap buffer of its own: a buffer on
        // this future's stack would be carried by every idle connection.
        let mut rest = ws.get_mut().take(DRAIN_LIMIT);
        let _ = tokio::io::copy(&mut rest, &mut tokio::io::sink()).await;
    };
    let _ = tokio::time::timeout(grace, closing).await;
}

/// Echoes every text and binary message back; used only by the WebSocket
/// conformance suite (`wscluster serve --echo`).
pub async fn serve_echo<S>(mut ws: WebSocketStream<S>)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(msg) if msg.is_text() || msg.is_binary() => {
                if ws.send(msg).await.is_err() {
                    return;
                }
            }
            Ok(_) => {}
            Err(e) => return finish(&mut ws, ending_for_error(&e)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every idle client holds one of these futures for as long as it stays
    /// connected, so its size is memory per connection (the benchmark's
    /// idle-memory scenario). A buffer kept on its stack across an await
    /// once made it 16 KiB larger; this catches that kind of growth.
    #[tokio::test]
    async fn connection_futures_stay_small() {
        const MAX: usize = 4096;
        let ws = || tokio_websockets::ServerBuilder::new().serve(tokio::io::duplex(64).0);
        let token = CancellationToken::new();
        let sgc = serve_sgc(ws(), SgcProtocol::new(), None, token.clone());
        let presence = serve_presence(ws(), PresenceProtocol::new(), None, token);
        let (sgc, presence) = (std::mem::size_of_val(&sgc), std::mem::size_of_val(&presence));
        assert!(sgc <= MAX, "sgc connection future is {sgc} bytes");
        assert!(presence <= MAX, "presence connection future is {presence} bytes");
    }
}
