//! Nodes that crash, freeze or stop, and what the others see.
//!
//! A crash (SIGKILL) and a freeze (SIGSTOP: sockets open, nothing said)
//! must make the others drop the node within the failure timeout plus one
//! heartbeat, and a node that comes back with the same id and ports must be
//! linked and served again, its fresh sequence numbers accepted. A stop
//! (SIGTERM) must be seen at once, through the node's explicit leave, long
//! before any timeout.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use support::client::event;
use support::{Cluster, Engine, Options, connected_ids};

engine_tests!(
    a_killed_node_is_dropped_within_the_failure_timeout_and_served_again_after_restart,
    a_frozen_node_is_dropped_after_the_failure_timeout_and_served_again_when_thawed,
    a_terminated_node_leaves_at_once_closes_its_clients_with_1001_and_exits_0,
);

/// A short failure timeout keeps the crash scenarios fast.
const FAILURE_TIMEOUT: Duration = Duration::from_millis(1000);

/// Heartbeats go out every third of the failure timeout.
const HEARTBEAT: Duration = Duration::from_millis(334);

/// Room for polling `/cluster` and a busy machine.
const SLACK: Duration = Duration::from_millis(500);

fn options(failure_timeout: Duration) -> Options {
    Options { failure_timeout_ms: Some(failure_timeout.as_millis() as u64), ..Options::default() }
}

/// Waits until a and c no longer count b, at most until `deadline`;
/// returns how long after `since` that was seen.
async fn wait_b_dropped(cluster: &Cluster, since: Instant, deadline: Instant) -> Duration {
    for id in ["a", "c"] {
        let left = deadline.saturating_duration_since(Instant::now());
        cluster
            .node(id)
            .wait_status("b to be dropped", left, |s| {
                s["connected_peer_count"] == 1 && !connected_ids(s).contains(&"b".to_owned())
            })
            .await;
    }
    since.elapsed()
}

/// Checks publications cross between a and b in both directions.
async fn a_and_b_exchange_publications(cluster: &Cluster) {
    let mut on_a = cluster.node("a").client().await;
    let mut on_b = cluster.node("b").client().await;
    on_a.subscribe("to-a").await;
    on_b.subscribe("to-b").await;

    on_a.publish("to-b", "from a").await;
    on_b.expect(&event("to-b", "from a")).await;
    on_b.publish("to-a", "from b").await;
    on_a.expect(&event("to-a", "from b")).await;
}

async fn a_killed_node_is_dropped_within_the_failure_timeout_and_served_again_after_restart(
    engine: Engine,
) {
    let mut cluster = Cluster::start_with(engine, &["a", "b", "c"], options(FAILURE_TIMEOUT)).await;
    // Traffic from b before the crash, so a and c hold sequence numbers of
    // b's first incarnation that the restarted b's must not collide with.
    a_and_b_exchange_publications(&cluster).await;

    cluster.node_mut("b").kill().await;
    let killed = Instant::now();
    let dropped =
        wait_b_dropped(&cluster, killed, killed + FAILURE_TIMEOUT + HEARTBEAT + SLACK).await;
    eprintln!("[{engine:?}] killed b dropped by a and c after {dropped:?}");

    cluster.node_mut("b").restart().await;
    cluster.wait_converged().await;
    a_and_b_exchange_publications(&cluster).await;
}

async fn a_frozen_node_is_dropped_after_the_failure_timeout_and_served_again_when_thawed(
    engine: Engine,
) {
    let cluster = Cluster::start_with(engine, &["a", "b", "c"], options(FAILURE_TIMEOUT)).await;

    cluster.node("b").freeze();
    let frozen = Instant::now();
    let dropped =
        wait_b_dropped(&cluster, frozen, frozen + FAILURE_TIMEOUT + HEARTBEAT + SLACK).await;
    eprintln!("[{engine:?}] frozen b dropped by a and c after {dropped:?}");
    // b's last frame left at most one heartbeat before the freeze.
    assert!(
        dropped >= FAILURE_TIMEOUT - HEARTBEAT,
        "b dropped after {dropped:?}, before its silence reached the failure timeout"
    );
    cluster.node("a").wait_log(&["peer disconnected", "peer=b", "timeout"], SLACK).await;

    cluster.node("b").thaw();
    cluster.wait_converged().await;
    a_and_b_exchange_publications(&cluster).await;
}

async fn a_terminated_node_leaves_at_once_closes_its_clients_with_1001_and_exits_0(engine: Engine) {
    // A long failure timeout: only the explicit leave can explain a fast drop.
    let failure_timeout = Duration::from_secs(10);
    let mut cluster = Cluster::start_with(engine, &["a", "b", "c"], options(failure_timeout)).await;
    let mut on_a = cluster.node("a").client().await;
    let mut on_b = cluster.node("b").client().await;
    on_b.subscribe("anything").await;

    let stopping = Instant::now();
    let b = cluster.node_mut("b");
    let (status, (code, reason)) = tokio::join!(b.terminate(failure_timeout), on_b.expect_close());
    assert_eq!(code, 1001, "close code of b's client (reason {reason:?})");
    assert_eq!(status.code(), Some(0), "b's exit status: {status}");

    let dropped = wait_b_dropped(&cluster, stopping, stopping + Duration::from_secs(2)).await;
    eprintln!("[{engine:?}] terminated b dropped by a and c after {dropped:?}");
    for id in ["a", "c"] {
        let lines = cluster.node(id).log_matching(&["peer disconnected", "peer=b"]);
        assert!(
            lines.iter().any(|l| l.contains("left")),
            "node {id} should log b's leave; logged: {lines:?}"
        );
    }
    on_a.assert_served().await;
}
