//! The bounded outbound queue of one connection.
//!
//! Everything a connection is sent (replies and fanned-out events alike)
//! goes through its outbox, so the order a client sees is the order the
//! server decided. The queue is bounded twice, by message count and by
//! bytes. When a push would exceed either bound the connection is marked
//! slow and closed with 1008 `slow consumer`: the decision is to drop the
//! one client that does not read rather than grow memory or hold back the
//! others. Each such close is counted in `wscluster_slow_consumer_total`.
//!
//! Only one task (the connection's) waits on a receiver, so one
//! registered waker is enough for the close signal.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;
use tokio::sync::mpsc;

/// One encoded text frame payload, shared by every receiver.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// The JSON text, encoded once.
    pub bytes: Bytes,
    /// Set when the server asks the client to acknowledge this message
    /// (server-to-client QoS 1/2); the connection then tracks it for resend.
    pub ack_id: Option<Arc<str>>,
}

impl Outgoing {
    /// A message that needs no acknowledgement.
    pub fn new(bytes: Bytes) -> Self {
        Self { bytes, ack_id: None }
    }
}

/// Why the server decided to close a connection from outside its own task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The outbound queue or the pending-acknowledgement set overflowed.
    SlowConsumer,
    /// The server is shutting down.
    GoingAway,
}

/// The sending side, held by the hub.
///
/// The channel itself is unbounded: the two bounds are counted here, in
/// atomics a push updates anyway, rather than also by the channel's
/// semaphore (seen at ~1% of fan-out CPU).
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::UnboundedSender<Outgoing>,
    shared: Arc<Shared>,
}

struct Shared {
    queued: AtomicUsize,
    max_messages: usize,
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    /// Set once someone asks the connection to close; checked by every
    /// push. With `waker`, this is the close signal: lock-free, where a
    /// cancellation token takes a lock on each check (seen at ~9% of
    /// fan-out CPU in push, ~1.5% in the connection loop).
    closed: AtomicBool,
    waker: AtomicWaker,
    reason: OnceLock<CloseReason>,
}

/// The receiving side, owned by the connection task.
pub struct OutboxReceiver {
    rx: mpsc::UnboundedReceiver<Outgoing>,
    shared: Arc<Shared>,
}

/// Creates an outbox bounded to `max_messages` and `max_bytes`.
pub fn outbox(max_messages: usize, max_bytes: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::unbounded_channel();
    let shared = Arc::new(Shared {
        queued: AtomicUsize::new(0),
        max_messages: max_messages.max(1),
        queued_bytes: AtomicUsize::new(0),
        max_bytes,
        closed: AtomicBool::new(false),
        waker: AtomicWaker::new(),
        reason: OnceLock::new(),
    });
    let receiver = OutboxReceiver { rx, shared: shared.clone() };
    (Outbox { tx, shared }, receiver)
}

impl Outbox {
    /// Queues `item`; on overflow closes the connection as a slow consumer
    /// and returns false. Never waits.
    pub fn push(&self, item: Outgoing) -> bool {
        let shared = &self.shared;
        if shared.closed.load(Ordering::Acquire) {
            return false;
        }
        let len = item.bytes.len();
        let before = shared.queued_bytes.fetch_add(len, Ordering::Relaxed);
        let count = shared.queued.fetch_add(1, Ordering::Relaxed);

        // A single message larger than the byte bound still goes through on
        // an empty queue, so the bound never makes a legal message undeliverable.
        let over_bytes = before > 0 && before + len > shared.max_bytes;
        let over_count = count >= shared.max_messages;
        if over_bytes || over_count || self.tx.send(item).is_err() {
            shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
            shared.queued.fetch_sub(1, Ordering::Relaxed);
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        true
    }

    /// Asks the connection to close with `reason` (first reason wins).
    pub fn close(&self, reason: CloseReason) {
        if self.shared.reason.set(reason).is_ok() && reason == CloseReason::SlowConsumer {
            metrics::counter!("wscluster_slow_consumer_total").increment(1);
            tracing::info!("closing slow consumer");
        }
        self.shared.closed.store(true, Ordering::Release);
        self.shared.waker.wake();
    }
}

impl OutboxReceiver {
    /// The next queued message; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.recv().await?;
        self.took(&item);
        Some(item)
    }

    /// A queued message if one is ready now.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        let item = self.rx.try_recv().ok()?;
        self.took(&item);
        Some(item)
    }

    /// Resolves when someone asked this connection to close.
    pub async fn closed(&self) -> CloseReason {
        self.close_signal().await;
        self.reason()
    }

    /// A future that resolves once someone asks this connection to close.
    /// It owns its handle, so the connection can wait on it while it also
    /// receives; polling it again after it resolved resolves again.
    pub fn close_signal(&self) -> CloseSignal {
        CloseSignal { shared: self.shared.clone() }
    }

    /// The reason given to close, if any.
    pub fn reason(&self) -> CloseReason {
        *self.shared.reason.get().unwrap_or(&CloseReason::GoingAway)
    }

    fn took(&self, item: &Outgoing) {
        self.shared.queued_bytes.fetch_sub(item.bytes.len(), Ordering::Relaxed);
        self.shared.queued.fetch_sub(1, Ordering::Relaxed);
    }
}

/// See [`OutboxReceiver::close_signal`].
pub struct CloseSignal {
    shared: Arc<Shared>,
}

impl Future for CloseSignal {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let shared = &self.shared;
        // Fast path first; register before the second check so a close
        // between the two still wakes us.
        if shared.closed.load(Ordering::Acquire) {
            return Poll::Ready(());
        }
        shared.waker.register(cx.waker());
        if shared.closed.load(Ordering::Acquire) { Poll::Ready(()) } else { Poll::Pending }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflowing_the_count_closes_as_slow_consumer() {
        let (tx, rx) = outbox(2, 1 << 20);
        assert!(tx.push(Outgoing::new(Bytes::from_static(b"1"))));
        assert!(tx.push(Outgoing::new(Bytes::from_static(b"2"))));
        assert!(!tx.push(Outgoing::new(Bytes::from_static(b"3"))));
        assert_eq!(rx.closed().await, CloseReason::SlowConsumer);
    }

    #[tokio::test]
    async fn overflowing_the_bytes_closes_but_one_big_message_fits_an_empty_queue() {
        let (tx, mut rx) = outbox(100, 4);
        assert!(tx.push(Outgoing::new(Bytes::from_static(b"123456"))));
        rx.recv().await.expect("queued");
        assert!(tx.push(Outgoing::new(Bytes::from_static(b"12"))));
        assert!(!tx.push(Outgoing::new(Bytes::from_static(b"345"))));
        assert_eq!(rx.reason(), CloseReason::SlowConsumer);
    }

    #[tokio::test]
    async fn the_close_signal_wakes_a_waiting_receiver_and_stays_resolved() {
        let (tx, rx) = outbox(10, 1 << 20);
        let mut signal = rx.close_signal();
        assert!(futures_util::poll!(&mut signal).is_pending());
        let closer = tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.close(CloseReason::GoingAway);
            tx
        });
        (&mut signal).await;
        assert!(futures_util::poll!(&mut signal).is_ready());
        assert_eq!(rx.reason(), CloseReason::GoingAway);
        let tx = closer.await.expect("closer");
        assert!(!tx.push(Outgoing::new(Bytes::from_static(b"late"))), "closed refuses pushes");
    }
}
