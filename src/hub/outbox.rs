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
//! Only one task (the connection's) reads a receiver, so one registered
//! waker each is enough for the data and for the close signal.

use std::collections::VecDeque;
use std::future::{Future, poll_fn};
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::task::AtomicWaker;

use crate::sync;

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
/// The queue is a `VecDeque` behind a mutex with a waker for its one
/// reader, not a channel: an empty deque allocates nothing (a tokio
/// channel allocates a block of 32 slots, ~1.5 KB, per connection up
/// front), the reader takes a whole batch under one lock, and a push is a
/// short uncontended lock (the channel's push and pop were ~8% of fan-out
/// CPU).
#[derive(Clone)]
pub struct Outbox {
    shared: Arc<Shared>,
}

struct Shared {
    queue: Mutex<Queue>,
    max_messages: usize,
    max_bytes: usize,
    /// Wakes the reader when the queue stops being empty.
    data: AtomicWaker,
    /// Set once someone asks the connection to close; checked by every
    /// push. With `close`, this is the close signal: lock-free, where a
    /// cancellation token takes a lock on each check (seen at ~9% of
    /// fan-out CPU in push, ~1.5% in the connection loop).
    closed: AtomicBool,
    close: AtomicWaker,
    reason: OnceLock<CloseReason>,
}

#[derive(Default)]
struct Queue {
    items: VecDeque<Outgoing>,
    bytes: usize,
}

/// Capacity an emptied queue may keep; past it the memory of a burst is
/// given back (an idle connection should cost little, see ARCHITECTURE.md).
const KEEP_CAPACITY: usize = 256;

/// The receiving side, owned by the connection task.
pub struct OutboxReceiver {
    shared: Arc<Shared>,
}

/// Creates an outbox bounded to `max_messages` and `max_bytes`.
pub fn outbox(max_messages: usize, max_bytes: usize) -> (Outbox, OutboxReceiver) {
    let shared = Arc::new(Shared {
        queue: Mutex::default(),
        max_messages: max_messages.max(1),
        max_bytes,
        data: AtomicWaker::new(),
        closed: AtomicBool::new(false),
        close: AtomicWaker::new(),
        reason: OnceLock::new(),
    });
    (Outbox { shared: shared.clone() }, OutboxReceiver { shared })
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
        let mut queue = sync::lock(&shared.queue);
        // A single message larger than the byte bound still goes through on
        // an empty queue, so the bound never makes a legal message undeliverable.
        let over_bytes = queue.bytes > 0 && queue.bytes + len > shared.max_bytes;
        if over_bytes || queue.items.len() >= shared.max_messages {
            drop(queue);
            self.close(CloseReason::SlowConsumer);
            return false;
        }
        let was_empty = queue.items.is_empty();
        queue.items.push_back(item);
        queue.bytes += len;
        drop(queue);
        // The reader takes everything queued before it waits again, so
        // only the first message after an empty queue needs to wake it.
        if was_empty {
            shared.data.wake();
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
        self.shared.close.wake();
    }
}

impl OutboxReceiver {
    /// Waits for at least one queued message and takes up to `max` of them,
    /// oldest first. Cancel-safe: nothing is taken unless it is returned.
    pub async fn recv_batch(&mut self, max: usize) -> Vec<Outgoing> {
        poll_fn(|cx| {
            if let Some(batch) = self.take(max) {
                return Poll::Ready(batch);
            }
            // Register before looking again, so a push in between wakes us.
            self.shared.data.register(cx.waker());
            self.take(max).map_or(Poll::Pending, Poll::Ready)
        })
        .await
    }

    /// A queued message if one is ready now.
    pub fn try_recv(&mut self) -> Option<Outgoing> {
        self.take(1).and_then(|mut batch| batch.pop())
    }

    fn take(&self, max: usize) -> Option<Vec<Outgoing>> {
        let mut queue = sync::lock(&self.shared.queue);
        if queue.items.is_empty() {
            return None;
        }
        let n = queue.items.len().min(max.max(1));
        let batch: Vec<Outgoing> = queue.items.drain(..n).collect();
        queue.bytes -= batch.iter().map(|o| o.bytes.len()).sum::<usize>();
        if queue.items.is_empty() && queue.items.capacity() > KEEP_CAPACITY {
            queue.items = VecDeque::new();
        }
        Some(batch)
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
        shared.close.register(cx.waker());
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
        assert_eq!(rx.recv_batch(8).await.len(), 1);
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

    #[tokio::test]
    async fn a_waiting_reader_is_woken_and_takes_everything_queued_in_order() {
        let (tx, mut rx) = outbox(100, 1 << 20);
        let reader = tokio::spawn(async move {
            let mut got = Vec::new();
            while got.len() < 5 {
                got.extend(rx.recv_batch(3).await.into_iter().map(|o| o.bytes));
            }
            got
        });
        tokio::task::yield_now().await;
        for n in [b"1", b"2", b"3", b"4", b"5"] {
            assert!(tx.push(Outgoing::new(Bytes::from_static(n))));
        }
        let got = reader.await.expect("reader");
        assert_eq!(got, [b"1", b"2", b"3", b"4", b"5"].map(|n| Bytes::from_static(n)));
    }

    #[test]
    fn an_emptied_queue_gives_back_the_memory_of_a_burst() {
        let (tx, mut rx) = outbox(10_000, 1 << 30);
        for _ in 0..2 * KEEP_CAPACITY {
            assert!(tx.push(Outgoing::new(Bytes::from_static(b"x"))));
        }
        while rx.try_recv().is_some() {}
        assert_eq!(sync::lock(&rx.shared.queue).items.capacity(), 0);
        assert!(tx.push(Outgoing::new(Bytes::from_static(b"after"))), "still usable");
    }
}
