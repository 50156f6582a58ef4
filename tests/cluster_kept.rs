//! Kept queues reach nodes that were not there when the events were kept:
//! a node that joins later, a node restarted with the same id, and a
//! transfer that takes many pages.
//!
//! A node pulls its peers' kept events when they become live, and logs
//! `kept events synced` with the peer, the record count and the page count
//! when a pull that brought something ends; the tests wait for that line
//! before subscribing, since a subscriber is replayed what the node holds
//! when it subscribes.

#[macro_use]
mod support;

use support::client::{Client, event};
use support::{CONVERGE, Cluster, Engine, Node, Options, SILENCE, eventually};

engine_tests!(
    a_node_started_after_kept_events_were_published_replays_them,
    a_restarted_node_gets_back_the_kept_events_including_those_kept_while_it_was_down,
    kept_events_that_take_many_pages_all_arrive_in_order,
);

/// What the harness writes into a node's log when it restarts it.
const RESTART_MARK: &str = "test harness: restart";

async fn a_node_started_after_kept_events_were_published_replays_them(engine: Engine) {
    let mut cluster = Cluster::start(engine, &["a", "b"]).await;
    let mut publisher = cluster.node("a").client().await;
    let mut on_b = cluster.node("b").client().await;
    publisher.subscribe("barrier").await;
    on_b.subscribe("barrier").await;

    publisher.publish_kept("kept:last", "l1", "queueLevel1").await;
    publisher.publish_kept("kept:last", "l2", "queueLevel1").await;
    for m in ["x1", "x2", "x3"] {
        publisher.publish_kept("kept:all", m, "queueLevel2").await;
    }
    // One connection's publications are applied in order on every node:
    // once the barrier event is seen on a and b, both hold the kept events.
    publisher.publish("barrier", "after the kept events").await;
    publisher.expect(&event("barrier", "after the kept events")).await;
    on_b.expect(&event("barrier", "after the kept events")).await;

    let spec = cluster.spec("c", Options::default());
    cluster.add(spec).await;
    cluster.wait_converged().await;
    let c = cluster.node("c");
    for line in wait_synced(c, &["a", "b"]).await {
        assert!(line.contains("records=4"), "one kept:last and three kept:all: {line}");
    }

    let mut late = c.client().await;
    expect_replay(&mut late, "kept:last", &["l2"]).await;
    expect_replay(&mut late, "kept:all", &["x1", "x2", "x3"]).await;
}

async fn a_restarted_node_gets_back_the_kept_events_including_those_kept_while_it_was_down(
    engine: Engine,
) {
    let options = Options { failure_timeout_ms: Some(1000), ..Options::default() };
    let mut cluster = Cluster::start_with(engine, &["a", "b", "c"], options).await;
    let mut publisher = cluster.node("a").client().await;
    publisher.subscribe("barrier").await;
    publisher.publish_kept("kept:last", "l1", "queueLevel1").await;
    publisher.publish_kept("kept:all", "x1", "queueLevel2").await;

    cluster.node_mut("c").kill().await;
    publisher.publish_kept("kept:last", "l2", "queueLevel1").await;
    for m in ["x2", "x3"] {
        publisher.publish_kept("kept:all", m, "queueLevel2").await;
    }
    let mut on_b = cluster.node("b").client().await;
    on_b.subscribe("barrier").await;
    publisher.publish("barrier", "after the kept events").await;
    publisher.expect(&event("barrier", "after the kept events")).await;
    on_b.expect(&event("barrier", "after the kept events")).await;

    cluster.node_mut("c").restart().await;
    cluster.wait_converged().await;
    let c = cluster.node("c");
    wait_synced(c, &["a", "b"]).await;

    let mut reconnected = c.client().await;
    expect_replay(&mut reconnected, "kept:last", &["l2"]).await;
    expect_replay(&mut reconnected, "kept:all", &["x1", "x2", "x3"]).await;
}

async fn kept_events_that_take_many_pages_all_arrive_in_order(engine: Engine) {
    // A page holds at most the maximum message size of kept events: at
    // 2 KiB, three of these events fill one, so 24 need about 8 pages, and
    // most pages end in the middle of a channel.
    let extra = vec!["--max-message-size".to_owned(), "2048".to_owned()];
    let options = Options { extra, ..Options::default() };
    let mut cluster = Cluster::start_with(engine, &["a"], options.clone()).await;
    let mut publisher = cluster.node("a").client().await;
    publisher.subscribe("barrier").await;
    let channels = ["paged:1", "paged:2", "paged:3"];
    let message = |channel: &str, i: usize| format!("{channel} #{i} {}", "x".repeat(400));
    for channel in channels {
        for i in 0..8 {
            publisher.publish_kept(channel, &message(channel, i), "queueLevel2").await;
        }
    }
    publisher.publish("barrier", "after the kept events").await;
    publisher.expect(&event("barrier", "after the kept events")).await;

    let spec = cluster.spec("b", options);
    cluster.add(spec).await;
    cluster.wait_converged().await;
    let b = cluster.node("b");
    let line = wait_synced(b, &["a"]).await.remove(0);
    assert!(line.contains("records=24"), "{line}");
    let pages: u32 = field(&line, "pages").parse().expect("a page count");
    assert!(pages >= 5, "24 events of ~500 bytes in 2 KiB pages: {line}");

    let mut late = b.client().await;
    for channel in channels {
        let expected: Vec<String> = (0..8).map(|i| message(channel, i)).collect();
        let expected: Vec<&str> = expected.iter().map(String::as_str).collect();
        expect_replay(&mut late, channel, &expected).await;
    }
}

/// Subscribes `client` to `channel` and expects exactly `messages`, in
/// order, then nothing more.
async fn expect_replay(client: &mut Client, channel: &str, messages: &[&str]) {
    client.subscribe(channel).await;
    for m in messages {
        client.expect(&event(channel, m)).await;
    }
    client.expect_silence(SILENCE).await;
}

/// Waits until `node` logged, since it last started, that it synced the
/// kept events of every one of `peers`; returns those lines, in `peers`
/// order.
async fn wait_synced(node: &Node, peers: &[&str]) -> Vec<String> {
    let what = format!("node {} to sync kept events from {peers:?}", node.id);
    eventually(&what, CONVERGE, || async {
        let lines = node.log_lines();
        let since = lines.iter().rposition(|l| l.contains(RESTART_MARK)).map_or(0, |i| i + 1);
        let synced: Vec<&String> =
            lines[since..].iter().filter(|l| l.contains("kept events synced")).collect();
        peers
            .iter()
            .map(|peer| {
                let tag = format!("peer={peer} ");
                synced
                    .iter()
                    .find(|l| l.contains(&tag))
                    .map(|l| (*l).clone())
                    .ok_or_else(|| format!("no line for {peer}; synced so far: {synced:?}"))
            })
            .collect()
    })
    .await
}

/// The value of `name=value` in a text log line.
fn field<'a>(line: &'a str, name: &str) -> &'a str {
    let start = line.find(&format!("{name}=")).map(|i| i + name.len() + 1);
    let rest = start.map_or("", |i| &line[i..]);
    rest.split_whitespace().next().unwrap_or("")
}
