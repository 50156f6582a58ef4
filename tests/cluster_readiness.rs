//! `/readyz` and the `ready` field of `/cluster` follow the backplane.
//!
//! Mesh rule, as built: a node is ready once its listener is open and it
//! has tried every configured peer at least once; a peer that is down does
//! not keep it unready, a peer still in the middle of a handshake does.

#[macro_use]
mod support;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::json;
use support::{Cluster, Engine, Options, STEP, http};
use tokio::net::TcpListener;

engine_tests!(a_lone_node_is_ready_and_healthy);

async fn a_lone_node_is_ready_and_healthy(engine: Engine) {
    let cluster = Cluster::start(engine, &["solo"]).await;
    let node = cluster.node("solo");

    assert_eq!(node.readyz().await, 200);
    let (code, _) = http::get(node.ws_addr, "/healthz").await.expect("GET /healthz");
    assert_eq!(code, 200);
    let status = node.status().await;
    assert_eq!(status["node_id"], "solo", "{status}");
    assert_eq!(status["ready"], true, "{status}");
    assert_eq!(status["connected_peer_count"], 0, "{status}");
    assert_eq!(status["peers"], json!([]), "{status}");
}

/// A mesh cluster of no nodes yet, and the spec of a node `id` that is
/// configured with `peer` as its only peer.
async fn lone_with_peer(id: &str, peer: SocketAddr) -> (Cluster, support::NodeSpec) {
    let cluster = Cluster::start(Engine::Mesh, &[]).await;
    let mut spec = cluster.spec(id, Options::default());
    spec.flags = vec!["--peer".into(), peer.to_string()];
    (cluster, spec)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_a_node_whose_peer_is_down_is_ready_after_its_first_dial_fails() {
    // A port that was just free: nothing listens there.
    let closed = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let down = closed.local_addr().expect("address");
    drop(closed);
    let (mut cluster, spec) = lone_with_peer("x", down).await;
    let node = cluster.add(spec).await;

    node.wait_status("ready with its peer down", STEP, |s| s["ready"] == true).await;
    assert_eq!(node.readyz().await, 200);
    let status = node.status().await;
    assert_eq!(status["connected_peer_count"], 0, "{status}");
    assert_eq!(
        status["peers"],
        json!([{"id": null, "address": down.to_string(), "state": "connecting", "interest": 0}]),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_a_node_is_not_ready_while_its_peer_has_not_finished_the_handshake() {
    // A peer that accepts connections and then says nothing.
    let silent = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let silent_addr = silent.local_addr().expect("address");
    let holder = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((tcp, _)) = silent.accept().await {
            held.push(tcp);
        }
    });
    let started = Instant::now();
    let (mut cluster, spec) = lone_with_peer("x", silent_addr).await;
    let node = cluster.add(spec).await;

    assert_eq!(node.readyz().await, 503, "ready before the handshake ended");
    let status = node.status().await;
    assert_eq!(status["ready"], false, "{status}");
    assert_eq!(status["peers"][0]["state"], "connecting", "{status}");

    // The handshake gives up after 5 s; the peer then counts as tried.
    let within = Duration::from_secs(10);
    node.wait_status("ready once the handshake gave up", within, |s| s["ready"] == true).await;
    assert_eq!(node.readyz().await, 200);
    eprintln!("ready {:?} after start, with a silent peer", started.elapsed());
    holder.abort();
}
