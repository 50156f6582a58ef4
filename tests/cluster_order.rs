//! Per-publisher order across nodes, under a burst.
//!
//! One client on a publishes 10,000 numbered messages to one channel as
//! fast as it can; subscribers on b and c must see every one, in order. Each
//! message carries its send time, so the test also prints the cross-node
//! latency under that burst (run with `--nocapture` to see it).
//!
//! The nodes get an outbound queue larger than the burst. With the default
//! (1,024 messages) a subscriber reading as fast as it can is often closed
//! as a slow consumer here: a debug-build client sharing two cores with
//! three debug-build nodes reads slower than the burst arrives. That policy
//! is right and is tested on its own; this test is about order.

#[macro_use]
mod support;

use support::client::expect_all_silent;
use support::{Client, Cluster, Engine, Options, now_us, quantile};

engine_tests!(ten_thousand_publications_of_one_client_arrive_complete_and_in_order_on_every_node);

const COUNT: u64 = 10_000;
const CHANNEL: &str = "ordered";

async fn ten_thousand_publications_of_one_client_arrive_complete_and_in_order_on_every_node(
    engine: Engine,
) {
    let options = Options {
        extra: vec!["--outbound-queue".into(), (2 * COUNT).to_string()],
        ..Options::default()
    };
    let cluster = Cluster::start_with(engine, &["a", "b", "c"], options).await;
    let mut publisher = cluster.node("a").client().await;
    let mut readers = Vec::new();
    for id in ["b", "c"] {
        let mut subscriber = cluster.node(id).client().await;
        subscriber.subscribe(CHANNEL).await;
        readers.push((id, tokio::spawn(receive_in_order(subscriber, id))));
    }

    for seq in 0..COUNT {
        publisher.publish(CHANNEL, &format!("{seq} {}", now_us())).await;
    }

    let mut subscribers = Vec::new();
    for (id, reader) in readers {
        let (subscriber, mut latencies) = match reader.await {
            Ok(done) => done,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        latencies.sort_unstable();
        eprintln!(
            "[{engine:?}] a -> {id}, {COUNT} publications in a burst: latency median {} us, \
             p99 {} us, max {} us",
            quantile(&latencies, 0.5),
            quantile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0),
        );
        subscribers.push(subscriber);
    }
    expect_all_silent(&mut subscribers).await;
}

/// Reads `COUNT` events, checking each number; returns the client and the
/// per-message latencies in microseconds.
async fn receive_in_order(mut client: Client, node: &'static str) -> (Client, Vec<u64>) {
    let mut latencies = Vec::with_capacity(COUNT as usize);
    for expected in 0..COUNT {
        let v = client.recv().await;
        let received = now_us();
        assert_eq!(v["result"]["method"], "sgc@event", "on {node}: {v}");
        assert_eq!(v["result"]["channel"], CHANNEL, "on {node}: {v}");
        let text = v["result"]["message"].as_str().unwrap_or_default();
        let (seq, sent) = text
            .split_once(' ')
            .and_then(|(s, t)| Some((s.parse::<u64>().ok()?, t.parse::<u64>().ok()?)))
            .unwrap_or_else(|| panic!("on {node}: unexpected message {v}"));
        assert_eq!(seq, expected, "on {node}: message {seq} arrived where {expected} was due");
        latencies.push(received.saturating_sub(sent));
    }
    (client, latencies)
}
