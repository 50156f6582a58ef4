//! Who is in the cluster: joining through one seed, refusing strangers.

#[macro_use]
mod support;

use std::time::{Duration, Instant};

use serde_json::Value;
use support::{CONVERGE, Cluster, Engine, Options, STEP, connected_ids};

engine_tests!(three_nodes_started_from_one_seed_all_link_and_list_each_other);

async fn three_nodes_started_from_one_seed_all_link_and_list_each_other(engine: Engine) {
    // On the mesh, b and c are given only a's link address (see Cluster::spec).
    let cluster = Cluster::start(engine, &["a", "b", "c"]).await;

    for node in cluster.nodes() {
        let others: Vec<_> = cluster.nodes().iter().filter(|n| n.id != node.id).collect();
        let mut other_ids: Vec<String> = others.iter().map(|n| n.id.clone()).collect();
        other_ids.sort();
        let status = node
            .wait_status("the two other nodes, and only them, listed", CONVERGE, |s| {
                s["peers"].as_array().is_some_and(|p| p.len() == 2) && connected_ids(s) == other_ids
            })
            .await;

        assert_eq!(status["node_id"], node.id.as_str(), "{status}");
        assert_eq!(status["engine"], engine.name(), "{status}");
        assert_eq!(status["ready"], true, "{status}");
        assert_eq!(status["connected_peer_count"], 2, "{status}");
        for peer in status["peers"].as_array().into_iter().flatten() {
            assert!(peer["interest"].is_u64(), "interest count of {peer}");
            let other = others.iter().find(|n| peer["id"] == n.id.as_str()).expect("known id");
            if engine == Engine::Mesh {
                let addr = other.cluster_addr.map(|a| a.to_string());
                assert_eq!(peer["address"].as_str(), addr.as_deref(), "{peer}");
            }
        }
    }
}

fn secret(s: &str) -> Options {
    Options { secret: Some(s.to_owned()), ..Options::default() }
}

/// Whether a `/cluster` document mentions node `id` or link address `addr`.
fn mentions(status: &Value, id: &str, addr: &str) -> bool {
    status["peers"].as_array().into_iter().flatten().any(|p| p["id"] == id || p["address"] == addr)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_a_node_with_the_wrong_secret_is_refused_never_listed_and_the_reason_logged() {
    let mut cluster = Cluster::start_with(Engine::Mesh, &["a", "c"], secret("right-secret")).await;
    let spec = cluster.spec("b", secret("wrong-secret"));
    let b_addr = cluster.add(spec).await.cluster_addr.expect("link address").to_string();
    let refusal = ["mesh link refused", "wrong cluster secret"];

    // b re-dials with backoff; watch a and c until a has refused b twice.
    let start = Instant::now();
    while cluster.node("a").log_matching(&refusal).len() < 2 {
        assert!(start.elapsed() < STEP, "a did not refuse b twice within {STEP:?}");
        for id in ["a", "c"] {
            let status = cluster.node(id).status().await;
            assert!(!mentions(&status, "b", &b_addr), "node {id} lists b: {status}");
            assert_eq!(status["connected_peer_count"], 1, "node {id}: {status}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("a logged: {}", cluster.node("a").log_matching(&refusal)[0]);
    assert_eq!(cluster.node("b").status().await["connected_peer_count"], 0);
}

/// A node that cannot join because its seed refuses it is cut off from
/// every publication made elsewhere. The spec makes a mesh node ready when
/// "every configured peer that is reachable is linked"; its seed is
/// reachable and not linked, so it must not take traffic.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_a_node_its_seed_refuses_is_not_ready() {
    let mut cluster = Cluster::start_with(Engine::Mesh, &["a"], secret("right-secret")).await;
    let spec = cluster.spec("b", secret("wrong-secret"));
    cluster.add(spec).await;
    cluster.node("a").wait_log(&["mesh link refused", "wrong cluster secret"], STEP).await;
    cluster.node("b").wait_log(&["mesh link refused", "wrong cluster secret"], STEP).await;

    let b = cluster.node("b");
    let status = b.status().await;
    assert_eq!(status["ready"], false, "b is refused by its only peer: {status}");
    assert_eq!(b.readyz().await, 503, "/readyz of b, refused by its only peer");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_a_second_process_with_the_id_of_its_seed_is_refused_and_not_ready() {
    let mut cluster = Cluster::start(Engine::Mesh, &["a"]).await;
    // Its only peer is the node whose id it took: it must not mistake that
    // for having dialled itself and serve alone as if ready.
    let spec = cluster.spec("a", Options::default());
    let twin = cluster.add(spec).await;
    twin.wait_log(&["mesh link refused", "already linked to another live process"], STEP).await;

    let status = twin.status().await;
    assert_eq!(status["ready"], false, "a duplicate of its only peer: {status}");
    assert_eq!(twin.readyz().await, 503, "/readyz of the duplicate");
    assert_eq!(status["peers"][0]["state"], "refused", "{status}");
}
