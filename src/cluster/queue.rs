//! A queue of encoded frames bounded both in frames and in bytes.
//!
//! Backplane queues (one per mesh link, one for the Redis publisher) carry
//! frames up to the maximum message size, so a bound in frames alone would
//! allow gigabytes. What the caller does when a push is refused is its own
//! decision (the mesh drops the link, Redis drops the frame); both count it.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;

/// The sending side.
#[derive(Clone)]
pub struct FrameSender {
    tx: mpsc::Sender<Bytes>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
}

/// The receiving side.
pub struct FrameReceiver {
    rx: mpsc::Receiver<Bytes>,
    queued: Arc<AtomicUsize>,
}

/// A queue of at most `max_frames` frames and `max_bytes` bytes.
pub fn frame_queue(max_frames: usize, max_bytes: usize) -> (FrameSender, FrameReceiver) {
    let (tx, rx) = mpsc::channel(max_frames.max(1));
    let queued = Arc::new(AtomicUsize::new(0));
    (FrameSender { tx, queued: queued.clone(), max_bytes }, FrameReceiver { rx, queued })
}

impl FrameSender {
    /// Queues `frame`; false when either bound would be passed (or the
    /// receiver is gone). One frame larger than the byte bound still fits an
    /// empty queue, so no legal frame is undeliverable.
    pub fn try_send(&self, frame: Bytes) -> bool {
        let len = frame.len();
        let before = self.queued.fetch_add(len, Ordering::AcqRel);
        if (before > 0 && before + len > self.max_bytes) || self.tx.try_send(frame).is_err() {
            self.queued.fetch_sub(len, Ordering::AcqRel);
            return false;
        }
        true
    }

    /// Bytes waiting.
    pub fn queued_bytes(&self) -> usize {
        self.queued.load(Ordering::Acquire)
    }
}

impl FrameReceiver {
    /// The next frame; `None` once every sender is gone.
    pub async fn recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.recv().await?;
        self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }

    /// A frame if one is ready now.
    pub fn try_recv(&mut self) -> Option<Bytes> {
        let frame = self.rx.try_recv().ok()?;
        self.queued.fetch_sub(frame.len(), Ordering::AcqRel);
        Some(frame)
    }

    /// Waits for at least one frame and appends up to `limit`; 0 when closed.
    pub async fn recv_many(&mut self, buf: &mut Vec<Bytes>, limit: usize) -> usize {
        let start = buf.len();
        let n = self.rx.recv_many(buf, limit).await;
        let bytes: usize = buf[start..].iter().map(Bytes::len).sum();
        self.queued.fetch_sub(bytes, Ordering::AcqRel);
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn both_bounds_hold_and_taking_frees_room() {
        let (tx, mut rx) = frame_queue(3, 10);
        assert!(tx.try_send(Bytes::from_static(b"123456")));
        assert!(!tx.try_send(Bytes::from_static(b"123456")), "bytes");
        assert!(tx.try_send(Bytes::from_static(b"1234")));
        assert!(!tx.try_send(Bytes::new()) || tx.queued_bytes() == 10);
        rx.recv().await.expect("frame");
        assert_eq!(tx.queued_bytes(), 4);
        assert!(tx.try_send(Bytes::from_static(b"123456")));
    }

    #[tokio::test]
    async fn one_large_frame_fits_an_empty_queue() {
        let (tx, mut rx) = frame_queue(3, 4);
        assert!(tx.try_send(Bytes::from_static(b"123456789")));
        assert_eq!(rx.try_recv().map(|b| b.len()), Some(9));
        assert_eq!(tx.queued_bytes(), 0);
    }
}
