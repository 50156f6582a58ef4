//! Publish, broadcast, patterns and kept queues across real nodes.
//!
//! Each scenario starts three `wscluster` processes (a, b, c) and puts its
//! clients on different nodes. Publications follow subscribe replies with
//! no pause: the subscribe reply promises that every linked peer already
//! routes the channel here.

#[macro_use]
mod support;

use std::time::Duration;

use support::client::{broadcast_message, event, expect_all_silent};
use support::proxy::DelayProxy;
use support::{Cluster, Engine, Options, SILENCE};

engine_tests!(
    a_publication_on_one_node_reaches_subscribers_on_the_others,
    a_broadcast_without_channel_reaches_every_client_of_every_node,
    a_broadcast_to_a_channel_reaches_only_its_subscribers_on_every_node,
    a_pattern_subscription_matches_a_channel_first_published_on_another_node,
    kept_events_published_on_one_node_are_replayed_to_a_new_subscriber_elsewhere,
    a_client_matching_twice_gets_each_publication_exactly_once,
);

async fn a_publication_on_one_node_reaches_subscribers_on_the_others(engine: Engine) {
    let cluster = Cluster::start(engine, &["a", "b", "c"]).await;
    let mut on_a = cluster.node("a").client().await;
    let mut on_c = cluster.node("c").client().await;
    let mut publisher = cluster.node("b").client().await;
    on_a.subscribe("news").await;
    on_c.subscribe("news").await;

    publisher.publish("news", "hello from b").await;

    on_a.expect(&event("news", "hello from b")).await;
    on_c.expect(&event("news", "hello from b")).await;
    expect_all_silent([&mut on_a, &mut on_c, &mut publisher]).await;
}

async fn a_broadcast_without_channel_reaches_every_client_of_every_node(engine: Engine) {
    let cluster = Cluster::start(engine, &["a", "b", "c"]).await;
    let mut sender = cluster.node("b").client().await;
    let mut others = Vec::new();
    for node in cluster.nodes() {
        others.push(node.client().await);
    }

    sender.broadcast("to everyone", None).await;

    let expected = broadcast_message("", "to everyone");
    sender.expect(&expected).await;
    for client in &mut others {
        client.expect(&expected).await;
    }
    expect_all_silent(others.iter_mut().chain([&mut sender])).await;
}

async fn a_broadcast_to_a_channel_reaches_only_its_subscribers_on_every_node(engine: Engine) {
    let cluster = Cluster::start(engine, &["a", "b", "c"]).await;
    let mut sender = cluster.node("b").client().await;
    let mut subscribers = Vec::new();
    let mut bystanders = Vec::new();
    for node in cluster.nodes() {
        let mut subscriber = node.client().await;
        subscriber.subscribe("alerts").await;
        subscribers.push(subscriber);
        bystanders.push(node.client().await);
    }

    sender.broadcast("alert 1", Some("alerts")).await;

    let expected = broadcast_message("alerts", "alert 1");
    for subscriber in &mut subscribers {
        subscriber.expect(&expected).await;
    }
    let everyone = subscribers.iter_mut().chain(&mut bystanders);
    expect_all_silent(everyone.chain([&mut sender])).await;
}

async fn a_pattern_subscription_matches_a_channel_first_published_on_another_node(engine: Engine) {
    let cluster = Cluster::start(engine, &["a", "b", "c"]).await;
    let mut watcher = cluster.node("a").client().await;
    let mut publisher = cluster.node("c").client().await;
    watcher.subscribe("room:*").await;

    // Neither channel existed anywhere before these publications.
    publisher.publish("lobby", "not a room").await;
    publisher.publish("room:42", "first words in room 42").await;

    watcher.expect(&event("room:42", "first words in room 42")).await;
    watcher.expect_silence(SILENCE).await;
}

async fn kept_events_published_on_one_node_are_replayed_to_a_new_subscriber_elsewhere(
    engine: Engine,
) {
    let cluster = Cluster::start(engine, &["a", "b", "c"]).await;
    let mut publisher = cluster.node("b").client().await;
    let mut barrier_a = cluster.node("a").client().await;
    let mut barrier_c = cluster.node("c").client().await;
    barrier_a.subscribe("barrier").await;
    barrier_c.subscribe("barrier").await;

    publisher.publish_kept("kept:last", "l1", "queueLevel1").await;
    publisher.publish_kept("kept:last", "l2", "queueLevel1").await;
    for m in ["x1", "x2", "x3"] {
        publisher.publish_kept("kept:all", m, "queueLevel2").await;
    }
    // Publications of one connection reach a node in order, so once the
    // barrier event is seen there, the kept events before it are stored.
    publisher.publish("barrier", "after the kept events").await;
    barrier_a.expect(&event("barrier", "after the kept events")).await;
    barrier_c.expect(&event("barrier", "after the kept events")).await;

    for node in ["c", "a"] {
        let mut late = cluster.node(node).client().await;
        late.subscribe("kept:last").await;
        late.expect(&event("kept:last", "l2")).await;
        late.subscribe("kept:all").await;
        for m in ["x1", "x2", "x3"] {
            late.expect(&event("kept:all", m)).await;
        }
        late.expect_silence(SILENCE).await;
    }
}

/// shared/cases/double-delivery.md
async fn a_client_matching_twice_gets_each_publication_exactly_once(engine: Engine) {
    let cluster = Cluster::start(engine, &["a", "b", "c"]).await;
    let mut x = cluster.node("a").client().await;
    x.subscribe("room:1").await;
    x.subscribe("room:*").await;
    // Subscribers elsewhere make every node relay and receive the traffic,
    // so an echo through the backplane would have a path back to x.
    let mut on_b = cluster.node("b").client().await;
    let mut on_c = cluster.node("c").client().await;
    on_b.subscribe("room:*").await;
    on_c.subscribe("room:1").await;
    let mut y = cluster.node("a").client().await;
    let mut z = cluster.node("b").client().await;

    y.publish("room:1", "p1").await;
    z.publish("room:1", "p2").await;

    for client in [&mut x, &mut on_b, &mut on_c] {
        let mut got = vec![client.recv().await, client.recv().await];
        got.sort_by_key(|v| v["result"]["message"].to_string());
        assert_eq!(got, vec![event("room:1", "p1"), event("room:1", "p2")]);
    }
    expect_all_silent([&mut x, &mut on_b, &mut on_c]).await;
}

/// The subscribe reply promises that every linked peer already routes the
/// channel here. On a fast link that is hard to tell from "usually does";
/// a link slowed to 200 ms each way makes the difference certain.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mesh_a_subscribe_reply_comes_only_once_a_slow_peer_routes_the_channel() {
    let mut cluster = Cluster::start(Engine::Mesh, &["a"]).await;
    let a_link = cluster.node("a").cluster_addr.expect("link address");
    let proxy = DelayProxy::start(a_link, Duration::from_millis(200)).await;
    let mut spec = cluster.spec("b", Options::default());
    spec.flags = vec!["--peer".into(), proxy.addr().to_string()];
    cluster.add(spec).await;
    cluster.wait_converged().await;
    let mut subscriber = cluster.node("a").client().await;
    let mut publisher = cluster.node("b").client().await;

    subscriber.subscribe("slow-link").await;
    publisher.publish("slow-link", "right after the reply").await;

    subscriber.expect(&event("slow-link", "right after the reply")).await;
}
