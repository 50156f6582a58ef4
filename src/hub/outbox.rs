//! The bounded outbound queue of one connection.
//!
//! Everything a connection is sent (replies and fanned-out events alike)
//! goes through its outbox, so the order a client sees is the order the
//! server decided. The queue is bounded twice, by message count and by
//! bytes. When a push would exceed either bound the connection is marked
//! slow and closed with 1008 `slow consumer`: the decision is to drop the
//! one client that does not read rather than grow memory or hold back the
//! others. Each such close is counted in `wscluster_slow_consumer_total`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

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
#[derive(Clone)]
pub struct Outbox {
    tx: mpsc::Sender<Outgoing>,
    shared: Arc<Shared>,
}

struct Shared {
    queued_bytes: AtomicUsize,
    max_bytes: usize,
    close: CancellationToken,
    /// Mirrors `close` for the hot path: a push checks this atomic rather
    /// than the token, whose check takes a lock (seen at ~9% of fan-out CPU).
    closed: AtomicBool,
    reason: OnceLock<CloseReason>,
}

/// The receiving side, owned by the connection task.
pub struct OutboxReceiver {
    rx: mpsc::Receiver<Outgoing>,
    shared: Arc<Shared>,
}

/// Creates an outbox bounded to `max_messages` and `max_bytes`.
pub fn outbox(max_messages: usize, max_bytes: usize) -> (Outbox, OutboxReceiver) {
    let (tx, rx) = mpsc::channel(max_messages.max(1));
    let shared = Arc::new(Shared {
        queued_bytes: AtomicUsize::new(0),
        max_bytes,
        close: CancellationToken::new(),
        closed: AtomicBool::new(false),
        reason: OnceLock::new(),
    });
    let receiver = OutboxReceiver { rx, shared: shared.clone() };
    (Outbox { tx, shared }, receiver)
}

impl Outbox {
    /// Queues `item`; on overflow closes the connection as a slow consumer
    /// and returns false. Never waits.
    pub fn push(&self, item: Outgoing) -> bool {
        if self.shared.closed.load(Ordering::Acquire) {
            return false;
        }
        let len = item.bytes.len();
        let before = self.shared.queued_bytes.fetch_add(len, Ordering::Relaxed);

        // A single message larger than the byte bound still goes through on
        // an empty queue, so the bound never makes a legal message undeliverable.
        let over_bytes = before > 0 && before + len > self.shared.max_bytes;
        if over_bytes || self.tx.try_send(item).is_err() {
            self.shared.queued_bytes.fetch_sub(len, Ordering::Relaxed);
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
        self.shared.close.cancel();
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
        self.shared.close.cancelled().await;
        self.reason()
    }

    /// A token cancelled when someone asks this connection to close.
    pub fn close_signal(&self) -> CancellationToken {
        self.shared.close.clone()
    }

    /// The reason given to close, if any.
    pub fn reason(&self) -> CloseReason {
        *self.shared.reason.get().unwrap_or(&CloseReason::GoingAway)
    }

    fn took(&self, item: &Outgoing) {
        self.shared.queued_bytes.fetch_sub(item.bytes.len(), Ordering::Relaxed);
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
}
