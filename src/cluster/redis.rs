//! The Redis engine: every node publishes to, and subscribes to, one Redis
//! Pub/Sub channel.
//!
//! Three tasks run: the subscriber (connect, subscribe, read, and on any
//! loss reconnect with backoff forever, then re-announce and ask the others
//! to re-announce), the publisher (one pipelined connection draining a
//! bounded queue, in order), and a ticker (heartbeats, which double as this
//! node's probe, and expiry of silent peers). The node is ready only while
//! subscribed and while its own probe keeps coming back through Redis, so
//! it never reports ready while deaf.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, error, info, warn};

use super::config::ClusterConfig;
use super::core::Core;
use super::envelope::{Body, Envelope};
use super::events::ClusterEvent;
use super::liveness::{Heard, Liveness};
use super::queue::{FrameReceiver, FrameSender, frame_queue};
use super::transport::{PeerStatus, Target, Transport};
use crate::sync;

/// First retry delay after a failed connection.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest delay between attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Envelopes queued for Redis while it is slow or away (also bounded in
/// bytes by `link_queue_bytes`); beyond either bound the newest are dropped
/// and counted (local delivery is unaffected).
const PUBLISH_QUEUE: usize = 65_536;
/// Most envelopes sent in one pipeline.
const PIPELINE: usize = 256;
/// Connect and command timeout.
const IO_TIMEOUT: Duration = Duration::from_secs(2);

/// A running Redis engine.
pub struct RedisEngine {
    shared: Arc<Shared>,
}

struct Shared {
    core: Arc<Core>,
    config: ClusterConfig,
    client: redis::Client,
    /// Host and port only: the URL may hold a password.
    target: String,
    queue: FrameSender,
    subscribed: AtomicBool,
    last_probe: std::sync::Mutex<Option<Instant>>,
    liveness: std::sync::Mutex<Liveness>,
    /// When a message under our node id from another process was last seen.
    conflict_seen: std::sync::Mutex<Option<Instant>>,
    was_ready: AtomicBool,
    shutdown: CancellationToken,
    tasks: TaskTracker,
}

impl RedisEngine {
    /// Starts the engine. It does not wait for Redis: a node that cannot
    /// reach Redis keeps trying and becomes ready when Redis appears.
    ///
    /// # Errors
    /// When the URL is not a valid Redis URL.
    pub fn start(core: Arc<Core>, config: ClusterConfig) -> redis::RedisResult<Self> {
        let client = redis::Client::open(config.redis_url.as_str())?;
        let target = redacted(&config.redis_url);
        let (queue, rx) = frame_queue(PUBLISH_QUEUE, config.link_queue_bytes);
        let shared = Arc::new(Shared {
            core,
            client,
            target,
            queue,
            subscribed: AtomicBool::new(false),
            last_probe: std::sync::Mutex::new(None),
            liveness: std::sync::Mutex::default(),
            conflict_seen: std::sync::Mutex::new(None),
            was_ready: AtomicBool::new(false),
            shutdown: CancellationToken::new(),
            tasks: TaskTracker::new(),
            config,
        });
        info!(redis = %shared.target, channel = %shared.config.redis_channel, "redis engine starting");

        shared.tasks.spawn(subscriber_loop(shared.clone()));
        shared.tasks.spawn(publisher_loop(shared.clone(), rx));
        shared.tasks.spawn(ticker(shared.clone()));
        Ok(Self { shared })
    }

    /// Publishes a leave notice, then stops every task.
    pub async fn stop(&self) {
        let leave = self.shared.core.unsequenced(Body::Leave).encode();
        let _ = self.shared.queue.try_send(leave);
        // Give the publisher a moment to flush the leave notice.
        let deadline = Instant::now() + Duration::from_secs(1);
        while self.shared.queue.queued_bytes() > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.shared.shutdown.cancel();
        self.shared.tasks.close();
        let _ = tokio::time::timeout(Duration::from_secs(3), self.shared.tasks.wait()).await;
    }
}

impl Shared {
    fn heartbeat_every(&self) -> Duration {
        (self.config.failure_timeout / 3).max(Duration::from_millis(50))
    }

    fn is_ready(&self) -> bool {
        let probe_fresh =
            sync::lock(&self.last_probe).is_some_and(|t| t.elapsed() < self.config.failure_timeout);
        let conflict = sync::lock(&self.conflict_seen)
            .is_some_and(|t| t.elapsed() < 2 * self.config.failure_timeout);
        !self.shutdown.is_cancelled()
            && self.subscribed.load(Ordering::Acquire)
            && probe_fresh
            && !conflict
    }

    /// Emits `ReadyChanged` when readiness flipped since last checked.
    fn check_ready(&self) {
        let ready = self.is_ready();
        if self.was_ready.swap(ready, Ordering::AcqRel) != ready {
            info!(ready, "redis readiness changed");
            metrics::gauge!("wscluster_ready").set(f64::from(u8::from(ready)));
            self.core.emit(ClusterEvent::ReadyChanged { ready });
        }
    }

    /// Handles one message from the Redis channel.
    fn on_message(&self, payload: &[u8]) {
        let env = match Envelope::decode(payload) {
            Ok(env) => env,
            Err(e) => {
                metrics::counter!("wscluster_backplane_dropped_total", "reason" => "malformed")
                    .increment(1);
                debug!(error = %e, "malformed envelope on the redis channel");
                return;
            }
        };
        if env.origin == *self.core.node_id() {
            if env.incarnation != self.core.incarnation() {
                self.id_conflict(env.incarnation);
            } else if matches!(env.body, Body::Heartbeat) {
                *sync::lock(&self.last_probe) = Some(Instant::now());
                self.check_ready();
            }
            return;
        }

        self.track_liveness(&env);
        self.core.receive(env);
    }

    /// Another process publishes under our node id: both would drop each
    /// other's traffic as their own. Say so loudly and stop reporting ready
    /// while it lasts, so the mistake is seen rather than silently lossy.
    fn id_conflict(&self, other: u64) {
        let previous = sync::lock(&self.conflict_seen).replace(Instant::now());
        let first = previous.is_none_or(|t| t.elapsed() > Duration::from_secs(60));
        if first {
            error!(
                node = %self.core.node_id(),
                other_incarnation = other,
                "another live process uses this node id on the redis channel; \
                 give every node its own --node-id (not ready while this lasts)"
            );
        }
        self.check_ready();
    }

    fn track_liveness(&self, env: &Envelope) {
        if matches!(env.body, Body::Leave) {
            sync::lock(&self.liveness).remove(&env.origin);
            return;
        }
        let heard = sync::lock(&self.liveness).heard(&env.origin, env.incarnation, Instant::now());
        match heard {
            Heard::Known => {}
            Heard::Restarted => {
                self.core.peer_down(&env.origin, "restarted");
                self.core.peer_up(&env.origin);
            }
            Heard::New => {
                // It may never have stopped hearing us, so it has no reason
                // to re-announce by itself (one-way silence): ask it to,
                // or its members would stay gone here.
                self.core.peer_up(&env.origin);
                self.core.request_sync_from(&env.origin);
            }
        }
    }
}

async fn subscriber_loop(shared: Arc<Shared>) {
    let mut backoff = BACKOFF_MIN;
    let mut failures: u64 = 0;
    while !shared.shutdown.is_cancelled() {
        match subscribe_once(&shared).await {
            Ok(()) => {
                backoff = BACKOFF_MIN;
                failures = 0;
            }
            // Warn on the first failure and then about once a minute, not
            // on every retry of an outage.
            Err(e) if failures.is_multiple_of(30) => {
                failures += 1;
                warn!(redis = %shared.target, error = %e, attempts = failures, "redis subscription unavailable; retrying");
            }
            Err(e) => {
                failures += 1;
                debug!(redis = %shared.target, error = %e, attempts = failures, "redis subscription still unavailable");
            }
        }
        // A probe heard before the loss proves nothing about the next
        // subscription: readiness waits for a fresh one.
        shared.subscribed.store(false, Ordering::Release);
        *sync::lock(&shared.last_probe) = None;
        shared.check_ready();

        let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            () = tokio::time::sleep(jittered) => {}
        }
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One subscription, from connect until it is lost. Ok when it was up.
async fn subscribe_once(shared: &Shared) -> redis::RedisResult<()> {
    let mut pubsub = tokio::time::timeout(IO_TIMEOUT, shared.client.get_async_pubsub())
        .await
        .map_err(|_| timeout_error("connect"))??;
    tokio::time::timeout(IO_TIMEOUT, pubsub.subscribe(&shared.config.redis_channel))
        .await
        .map_err(|_| timeout_error("subscribe"))??;
    shared.subscribed.store(true, Ordering::Release);
    info!(redis = %shared.target, channel = %shared.config.redis_channel, "redis subscribed");

    // Probe at once rather than at the next heartbeat, so readiness returns
    // as soon as Redis proves it delivers to us again.
    enqueue(shared, shared.core.unsequenced(Body::Heartbeat).encode());

    // We may have missed changes while deaf: re-announce, ask the others,
    // and pull the kept events of peers still counted as live (those that
    // timed out are pulled when they are heard again, as new).
    shared.core.announce(None);
    shared.core.request_sync();
    shared.core.pull_kept_from_live();

    let mut messages = pubsub.on_message();
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return Ok(()),
            msg = messages.next() => match msg {
                Some(msg) => {
                    shared.on_message(msg.get_payload_bytes());
                    // Let the client writers this delivery woke run.
                    tokio::task::consume_budget().await;
                }
                None => {
                    warn!(redis = %shared.target, "redis subscription lost");
                    return Ok(());
                }
            },
        }
    }
}

async fn publisher_loop(shared: Arc<Shared>, mut rx: FrameReceiver) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut backoff = BACKOFF_MIN;
    let mut batch: Vec<Bytes> = Vec::with_capacity(PIPELINE);

    loop {
        if batch.is_empty() {
            tokio::select! {
                () = shared.shutdown.cancelled() => return,
                n = rx.recv_many(&mut batch, PIPELINE) => if n == 0 { return },
            }
        }
        if conn.is_none() {
            conn = connect_publisher(&shared).await;
            if conn.is_none() {
                wait_backoff(&shared, &mut backoff).await;
                continue;
            }
        }
        let Some(c) = conn.as_mut() else { continue };

        let mut pipe = redis::pipe();
        for frame in &batch {
            pipe.cmd("PUBLISH").arg(&shared.config.redis_channel).arg(frame.as_ref()).ignore();
        }
        match tokio::time::timeout(IO_TIMEOUT, pipe.query_async::<()>(c)).await {
            Ok(Ok(())) => {
                metrics::counter!("wscluster_backplane_sent_total", "peer" => "redis")
                    .increment(batch.len() as u64);
                batch.clear();
                backoff = BACKOFF_MIN;
            }
            Ok(Err(e)) => {
                warn!(redis = %shared.target, error = %e, "redis publish failed; reconnecting");
                conn = None;
            }
            Err(_) => {
                warn!(redis = %shared.target, "redis publish timed out; reconnecting");
                conn = None;
            }
        }
        // On failure the batch is kept and sent again on the new connection:
        // a publish may then arrive twice, and receivers drop the repeat.
    }
}

async fn connect_publisher(shared: &Shared) -> Option<MultiplexedConnection> {
    let config = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(IO_TIMEOUT))
        .set_response_timeout(Some(IO_TIMEOUT));
    match shared.client.get_multiplexed_async_connection_with_config(&config).await {
        Ok(c) => Some(c),
        Err(e) => {
            debug!(redis = %shared.target, error = %e, "redis publisher cannot connect");
            None
        }
    }
}

async fn wait_backoff(shared: &Shared, backoff: &mut Duration) {
    let jittered = backoff.mul_f64(0.5 + rand::random::<f64>() * 0.5);
    tokio::select! {
        () = shared.shutdown.cancelled() => {}
        () = tokio::time::sleep(jittered) => {}
    }
    *backoff = (*backoff * 2).min(BACKOFF_MAX);
}

async fn ticker(shared: Arc<Shared>) {
    let mut every = tokio::time::interval(shared.heartbeat_every());
    let heartbeat = shared.core.unsequenced(Body::Heartbeat).encode();
    loop {
        tokio::select! {
            () = shared.shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        enqueue(&shared, heartbeat.clone());

        let gone =
            sync::lock(&shared.liveness).expire(Instant::now(), shared.config.failure_timeout);
        for peer in gone {
            shared.core.peer_down(&peer, "heartbeat timeout");
        }
        shared.check_ready();
    }
}

fn enqueue(shared: &Shared, frame: Bytes) {
    if !shared.queue.try_send(frame) {
        metrics::counter!("wscluster_backplane_dropped_total", "reason" => "redis_queue_full")
            .increment(1);
    }
}

fn timeout_error(what: &'static str) -> redis::RedisError {
    redis::RedisError::from((redis::ErrorKind::Io, "timed out", what.to_owned()))
}

/// The URL without user and password, for logs and `/cluster`.
fn redacted(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return "redis".into();
    };
    let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
    format!("{scheme}://{}", host.trim_end_matches('/'))
}

impl Transport for RedisEngine {
    fn send(&self, _target: Target<'_>, frame: Bytes) {
        // One channel for everyone: addressing travels in the envelope.
        enqueue(&self.shared, frame);
    }

    fn peers(&self) -> Vec<PeerStatus> {
        let ids = sync::lock(&self.shared.liveness).ids();
        ids.into_iter()
            .map(|id| PeerStatus { id: Some(id), address: "redis".into(), state: "connected" })
            .collect()
    }

    fn connected_peer_count(&self) -> usize {
        sync::lock(&self.shared.liveness).count()
    }

    fn ready(&self) -> bool {
        self.shared.is_ready()
    }
}

#[cfg(test)]
mod tests {
    use super::redacted;

    #[test]
    fn passwords_never_reach_the_logs() {
        assert_eq!(redacted("redis://user:pw@10.0.0.1:6379/2"), "redis://10.0.0.1:6379/2");
        assert_eq!(redacted("rediss://:pw@h:1/"), "rediss://h:1");
        assert_eq!(redacted("redis://127.0.0.1:6379/"), "redis://127.0.0.1:6379");
    }
}
