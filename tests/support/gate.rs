//! A TCP proxy that can be shut like a gate: it cuts every connection it
//! carries and fails every new connection attempt until it is opened again.
//!
//! Put between a node and its Redis (the node is given the gate's address),
//! it makes that node's connection attempts fail for a while, as a network
//! or a load balancer in trouble would, while other nodes reach Redis
//! directly. A refused attempt is accepted and closed at once, so each one
//! is counted ([`Gate::refused`]).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::{AbortHandle, JoinHandle};

/// A running gate; it stops (and cuts its connections) when dropped.
pub struct Gate {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

#[derive(Default)]
struct Shared {
    shut: AtomicBool,
    refused: AtomicUsize,
    accepted: AtomicUsize,
    pipes: std::sync::Mutex<Vec<AbortHandle>>,
}

impl Gate {
    /// Listens on a free port and, while open, forwards every connection to
    /// `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind gate");
        let addr = listener.local_addr().expect("gate address");
        let shared = Arc::new(Shared::default());
        let task = tokio::spawn(serve(listener, target, shared.clone()));
        Self { addr, shared, task }
    }

    /// Where to connect instead of the target.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Cuts every connection and fails every new attempt until
    /// [`Gate::open`].
    pub fn shut(&self) {
        self.shared.shut.store(true, Ordering::SeqCst);
        let pipes =
            std::mem::take(&mut *self.shared.pipes.lock().unwrap_or_else(|e| e.into_inner()));
        for pipe in pipes {
            pipe.abort();
        }
    }

    /// Lets connections through again.
    pub fn open(&self) {
        self.shared.shut.store(false, Ordering::SeqCst);
    }

    /// Connection attempts failed while shut.
    pub fn refused(&self) -> usize {
        self.shared.refused.load(Ordering::SeqCst)
    }

    /// Connections let through so far.
    pub fn accepted(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.task.abort();
        self.shut();
    }
}

async fn serve(listener: TcpListener, target: SocketAddr, shared: Arc<Shared>) {
    while let Ok((inbound, _)) = listener.accept().await {
        if shared.shut.load(Ordering::SeqCst) {
            shared.refused.fetch_add(1, Ordering::SeqCst);
            drop(inbound);
            continue;
        }
        let Ok(outbound) = TcpStream::connect(target).await else {
            continue;
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let pipe = tokio::spawn(async move {
            let (mut inbound, mut outbound) = (inbound, outbound);
            let _ = (inbound.set_nodelay(true), outbound.set_nodelay(true));
            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
        });
        let mut pipes = shared.pipes.lock().unwrap_or_else(|e| e.into_inner());
        pipes.retain(|p| !p.is_finished());
        pipes.push(pipe.abort_handle());
        // Shut while this one was being connected: cut it too.
        if shared.shut.load(Ordering::SeqCst) {
            pipes.drain(..).for_each(|p| p.abort());
        }
    }
}
