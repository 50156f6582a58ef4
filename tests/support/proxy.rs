//! TCP proxies for the cluster tests: [`DelayProxy`] delays every byte by a
//! fixed time, both ways; [`CutProxy`] stalls or partitions on command.
//!
//! Put between two nodes (one dials the proxy instead of the other), a
//! [`DelayProxy`] makes their link slow without making it lossy or
//! reordering anything, so a test can tell "guaranteed before" from
//! "usually before". A [`CutProxy`] between a node and the rest (its peer,
//! or its Redis) lets a test stall that node's traffic or partition it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// A running proxy; it stops (and cuts its connections) when dropped.
pub struct DelayProxy {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl DelayProxy {
    /// Listens on a free port and forwards each connection to `target`,
    /// every chunk `delay` after it arrived.
    pub async fn start(target: SocketAddr, delay: Duration) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                let (in_r, in_w) = inbound.into_split();
                let (out_r, out_w) = outbound.into_split();
                pipes.spawn(pipe(in_r, out_w, delay));
                pipes.spawn(pipe(out_r, in_w, delay));
            }
        });
        Self { addr, task }
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Copies `from` to `to`, each chunk held back until `delay` after it was
/// read; order is kept and reading never waits for the delay.
async fn pipe(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, delay: Duration) {
    let (tx, mut rx) = mpsc::unbounded_channel::<(Instant, Vec<u8>)>();
    let writer = tokio::spawn(async move {
        while let Some((due, chunk)) = rx.recv().await {
            tokio::time::sleep_until(due).await;
            if to.write_all(&chunk).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    });
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n @ 1..) = from.read(&mut buf).await {
        if tx.send((Instant::now() + delay, buf[..n].to_vec())).is_err() {
            break;
        }
    }
    drop(tx);
    let _ = writer.await;
}

/// What a [`CutProxy`] does with the bytes it reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Forwards them at once.
    Open,
    /// Holds them (in order) until the proxy is opened again: a stall.
    Paused,
    /// Drops them: a partition.
    Cut,
}

/// One proxied connection.
struct Conn {
    /// Ends both directions (and closes both sockets).
    kill: tokio_util::sync::CancellationToken,
    /// Lived through a cut: it never forwards again and is closed when the
    /// partition heals, as a real connection would be reset by then.
    severed: std::sync::atomic::AtomicBool,
}

struct CutState {
    /// The mode of the bytes going to the target.
    to_target: tokio::sync::watch::Sender<Mode>,
    /// The mode of the bytes coming back from it.
    from_target: tokio::sync::watch::Sender<Mode>,
    conns: std::sync::Mutex<Vec<Arc<Conn>>>,
    accepted: std::sync::atomic::AtomicUsize,
}

/// A TCP proxy a test can stall and partition, both ways at once.
///
/// - [`CutProxy::pause`] holds every byte (connections stay open, nothing
///   is lost) until [`CutProxy::open`]: like a network that stops
///   delivering for a moment.
/// - [`CutProxy::cut`] drops every byte, both ways, on the connections it
///   carries and on new ones (which are accepted but never reach the
///   target): a partition, which only heartbeats can notice.
///   [`CutProxy::heal`] resets the connections that lived through it and
///   forwards new ones again.
///
/// It stops, cutting every connection, when dropped.
pub struct CutProxy {
    addr: SocketAddr,
    state: Arc<CutState>,
    task: JoinHandle<()>,
}

impl CutProxy {
    /// Listens on a free port and forwards each connection to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let state = Arc::new(CutState {
            to_target: tokio::sync::watch::channel(Mode::Open).0,
            from_target: tokio::sync::watch::channel(Mode::Open).0,
            conns: std::sync::Mutex::default(),
            accepted: std::sync::atomic::AtomicUsize::new(0),
        });
        let shared = state.clone();
        let task = tokio::spawn(async move {
            let mut pipes = tokio::task::JoinSet::new();
            while let Ok((inbound, _)) = listener.accept().await {
                shared.accepted.fetch_add(1, Ordering::SeqCst);
                let conn = Arc::new(Conn {
                    kill: tokio_util::sync::CancellationToken::new(),
                    severed: std::sync::atomic::AtomicBool::new(false),
                });
                // Decided under the lock `heal` takes, so no attempt made
                // during a cut outlives it.
                let cut = {
                    let mut conns = shared.conns.lock().unwrap_or_else(|e| e.into_inner());
                    let cut = *shared.to_target.borrow() == Mode::Cut;
                    if cut {
                        conn.severed.store(true, Ordering::SeqCst);
                        conns.push(conn.clone());
                    }
                    cut
                };
                if cut {
                    // The connection attempt goes nowhere: hold the socket
                    // open and silent until the partition heals.
                    pipes.spawn(async move {
                        let (mut r, _w) = inbound.into_split();
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            tokio::select! {
                                () = conn.kill.cancelled() => return,
                                n = r.read(&mut buf) => if !matches!(n, Ok(1..)) { return },
                            }
                        }
                    });
                    continue;
                }
                let Ok(outbound) = TcpStream::connect(target).await else {
                    continue;
                };
                shared.conns.lock().unwrap_or_else(|e| e.into_inner()).push(conn.clone());
                let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
                let (in_r, in_w) = inbound.into_split();
                let (out_r, out_w) = outbound.into_split();
                let (to, from) = (shared.to_target.subscribe(), shared.from_target.subscribe());
                pipes.spawn(cut_pipe(in_r, out_w, conn.clone(), to));
                pipes.spawn(cut_pipe(out_r, in_w, conn, from));
            }
        });
        Self { addr, state, task }
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// How many connections it accepted so far.
    pub fn accepted(&self) -> usize {
        self.state.accepted.load(Ordering::SeqCst)
    }

    /// Holds every byte from now on, until [`CutProxy::open`].
    pub fn pause(&self) {
        self.set(Mode::Paused);
    }

    /// Holds the bytes going to the target only, until [`CutProxy::open`]:
    /// the target stops hearing from the client, the client still hears
    /// the target.
    pub fn pause_to_target(&self) {
        self.state.to_target.send_replace(Mode::Paused);
    }

    /// Holds the bytes coming from the target only, until
    /// [`CutProxy::open`].
    pub fn pause_from_target(&self) {
        self.state.from_target.send_replace(Mode::Paused);
    }

    fn set(&self, mode: Mode) {
        self.state.to_target.send_replace(mode);
        self.state.from_target.send_replace(mode);
    }

    /// Forwards again, held bytes first, in order.
    pub fn open(&self) {
        self.set(Mode::Open);
    }

    /// Partitions: drops every byte, both ways, from now on.
    pub fn cut(&self) {
        let conns = self.state.conns.lock().unwrap_or_else(|e| e.into_inner());
        for c in conns.iter() {
            c.severed.store(true, Ordering::SeqCst);
        }
        self.set(Mode::Cut);
    }

    /// Ends the partition: the connections that lived through it are
    /// reset, new ones are forwarded.
    pub fn heal(&self) {
        let mut conns = self.state.conns.lock().unwrap_or_else(|e| e.into_inner());
        conns.retain(|c| {
            let severed = c.severed.load(Ordering::SeqCst);
            if severed {
                c.kill.cancel();
            }
            !severed && !c.kill.is_cancelled()
        });
        self.set(Mode::Open);
    }
}

impl Drop for CutProxy {
    fn drop(&mut self) {
        self.task.abort();
        for c in self.state.conns.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            c.kill.cancel();
        }
    }
}

/// Copies `from` to `to` as the proxy's mode says; the end of the stream
/// is passed on like the bytes before it (held while paused, dropped while
/// cut). Ends, closing both sockets, on a write error or kill.
async fn cut_pipe(
    mut from: OwnedReadHalf,
    mut to: OwnedWriteHalf,
    conn: Arc<Conn>,
    mut mode: tokio::sync::watch::Receiver<Mode>,
) {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let read = tokio::select! {
            () = conn.kill.cancelled() => return,
            n = from.read(&mut buf) => n,
        };
        let chunk = match read {
            Ok(n @ 1..) => Some(n),
            _ => None,
        };
        // Wait until the chunk may go on, or is dropped.
        let forward = loop {
            if conn.severed.load(Ordering::SeqCst) {
                break false;
            }
            let now = *mode.borrow_and_update();
            match now {
                Mode::Open => break true,
                Mode::Cut => {
                    conn.severed.store(true, Ordering::SeqCst);
                    break false;
                }
                Mode::Paused => tokio::select! {
                    () = conn.kill.cancelled() => return,
                    _ = mode.changed() => {}
                },
            }
        };
        match (chunk, forward) {
            (Some(n), true) => {
                if to.write_all(&buf[..n]).await.is_err() {
                    conn.kill.cancel();
                    return;
                }
            }
            (Some(_), false) => {} // dropped on the floor
            (None, true) => {
                let _ = to.shutdown().await;
                return;
            }
            (None, false) => {
                // Cut: the end is not seen either; wait for the heal.
                conn.kill.cancelled().await;
                return;
            }
        }
    }
}
