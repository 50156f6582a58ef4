//! Cross-node latency at a steady, modest rate.
//!
//! The spec promises delivery "within a few milliseconds on a local
//! network when nothing is failing". A client on a publishes one message per
//! millisecond for a second; subscribers on b and c time each arrival. The
//! figures are printed (run with `--nocapture`); the assertion is loose on
//! purpose (a median under 20 ms in one of three attempts), enough to catch
//! a systematic stall such as Nagle's algorithm or a batching timer, not to
//! benchmark: the benchmark harness measures latency (`bench/`). This file
//! holds only this test so no other test of the suite competes for the CPU
//! while it measures.

#[macro_use]
mod support;

use std::time::Duration;

use support::{Client, Cluster, Engine, now_us, quantile};

engine_tests!(publications_at_a_steady_rate_cross_nodes_within_milliseconds);

const COUNT: u64 = 1_000;

async fn publications_at_a_steady_rate_cross_nodes_within_milliseconds(engine: Engine) {
    let cluster = Cluster::start(engine, &["a", "b", "c"]).await;
    let mut worst = Vec::new();
    for attempt in 1..=ATTEMPTS {
        let median =
            one_second_of_publications(&cluster, engine, &format!("steady-{attempt}")).await;
        if median < MEDIAN_LIMIT_US {
            return;
        }
        worst.push(median);
    }
    panic!("median latency over {MEDIAN_LIMIT_US} us in all {ATTEMPTS} attempts: {worst:?} us");
}

/// A systematic stall (Nagle's algorithm, a batching timer) shows in every
/// attempt; another process hogging this shared machine's two cores (a
/// debug build of three nodes and the clients need them) rarely lasts for
/// three. So a test fails only when every attempt is slow.
const ATTEMPTS: usize = 3;
const MEDIAN_LIMIT_US: u64 = 20_000;

/// Publishes `COUNT` messages at one per millisecond on `channel` from a;
/// returns the worse of the medians seen on b and c, in µs.
async fn one_second_of_publications(cluster: &Cluster, engine: Engine, channel: &str) -> u64 {
    let mut publisher = cluster.node("a").client().await;
    let mut readers = Vec::new();
    for id in ["b", "c"] {
        let mut subscriber = cluster.node(id).client().await;
        subscriber.subscribe(channel).await;
        readers.push((id, tokio::spawn(latencies(subscriber))));
    }

    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for seq in 0..COUNT {
        tick.tick().await;
        publisher.publish(channel, &format!("{seq} {}", now_us())).await;
    }

    let mut worst = 0;
    for (id, reader) in readers {
        let mut latencies = match reader.await {
            Ok(l) => l,
            Err(e) => std::panic::resume_unwind(e.into_panic()),
        };
        latencies.sort_unstable();
        let median = quantile(&latencies, 0.5);
        eprintln!(
            "[{engine:?}] a -> {id}, {COUNT} publications at 1 per ms: latency median {median} us, \
             p99 {} us, max {} us",
            quantile(&latencies, 0.99),
            latencies.last().copied().unwrap_or(0),
        );
        worst = worst.max(median);
    }
    worst
}

/// Reads `COUNT` events in order and returns their latencies in µs.
async fn latencies(mut client: Client) -> Vec<u64> {
    let mut out = Vec::with_capacity(COUNT as usize);
    for expected in 0..COUNT {
        let v = client.recv().await;
        let received = now_us();
        let text = v["result"]["message"].as_str().unwrap_or_default().to_owned();
        let (seq, sent) = text.split_once(' ').unwrap_or_else(|| panic!("unexpected {v}"));
        assert_eq!(seq, expected.to_string(), "order: {v}");
        out.push(received.saturating_sub(sent.parse().unwrap_or(received)));
    }
    out
}
