//! Kept queues: `queueLevel1` and `queueLevel2` replay on subscribe.

mod common;

use common::{Client, SILENCE_MS, TestServer, request};
use serde_json::json;
use wscluster::sgc::{SgcHooks, SgcSettings};

async fn publish_kept(client: &mut Client, channel: &str, message: &str, queue: &str) {
    client
        .send_json(request(
            "sgc@publish",
            json!({"channel": channel, "message": message, "queue": queue}),
        ))
        .await;
}

#[tokio::test]
async fn queue_level1_replays_only_the_last_event_to_a_later_subscriber() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    for m in ["1", "2", "3"] {
        publish_kept(&mut publisher, "q", m, "queueLevel1").await;
    }
    // The publisher's own round trip proves its publications were handled.
    publisher.assert_served().await;

    let mut late = server.client().await;
    late.subscribe("q").await;
    late.expect_event("q", "3").await;
    late.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn queue_level2_replays_every_event_oldest_first() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    for m in ["1", "2", "3"] {
        publish_kept(&mut publisher, "q", m, "queueLevel2").await;
    }
    publisher.assert_served().await;

    let mut late = server.client().await;
    late.subscribe("q").await;
    for m in ["1", "2", "3"] {
        late.expect_event("q", m).await;
    }
    late.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn queue_level2_is_capped_dropping_the_oldest() {
    let mut settings = SgcSettings::default();
    settings.hub.kept_per_channel = 3;
    let server = TestServer::with(settings, SgcHooks::default()).await;
    let mut publisher = server.client().await;
    for m in ["1", "2", "3", "4", "5"] {
        publish_kept(&mut publisher, "q", m, "queueLevel2").await;
    }
    publisher.assert_served().await;

    let mut late = server.client().await;
    late.subscribe("q").await;
    for m in ["3", "4", "5"] {
        late.expect_event("q", m).await;
    }
    late.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn queue_level0_and_no_queue_keep_nothing() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    publish_kept(&mut publisher, "q", "explicit", "queueLevel0").await;
    publisher.publish("q", "default").await;
    publisher.assert_served().await;

    let mut late = server.client().await;
    late.subscribe("q").await;
    late.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn kept_events_are_replayed_to_the_new_subscriber_only() {
    let server = TestServer::start().await;
    let mut early = server.client().await;
    early.subscribe("q").await;
    publish_kept(&mut early, "q", "kept", "queueLevel1").await;
    early.expect_event("q", "kept").await;

    let mut late = server.client().await;
    late.subscribe("q").await;
    late.expect_event("q", "kept").await;
    early.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn a_kept_event_is_replayed_before_later_live_events() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    publish_kept(&mut publisher, "q", "old", "queueLevel1").await;
    publisher.assert_served().await;

    let mut late = server.client().await;
    late.subscribe("q").await;
    publisher.publish("q", "live").await;
    late.expect_event("q", "old").await;
    late.expect_event("q", "live").await;
}

#[tokio::test]
async fn a_pattern_subscription_replays_the_kept_events_it_matches() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    publish_kept(&mut publisher, "news.eu", "eu", "queueLevel1").await;
    publish_kept(&mut publisher, "sports", "no", "queueLevel1").await;
    publisher.assert_served().await;

    let mut late = server.client().await;
    late.subscribe("news*").await;
    late.expect_event("news.eu", "eu").await;
    late.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn clearing_a_queue_from_the_server_drops_its_kept_events() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    publish_kept(&mut publisher, "q", "kept", "queueLevel2").await;
    publisher.assert_served().await;

    server.sgc().clear_queue("q");
    let mut late = server.client().await;
    late.subscribe("q").await;
    late.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn an_unknown_queue_level_is_invalid_params() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    publish_kept(&mut publisher, "q", "m", "queueLevel9").await;
    publisher.expect_error(-32602).await;
    publisher.assert_served().await;
}
