//! Subscribe, unsubscribe, publish, broadcast, `sgc@message` and wildcard
//! channels.

mod common;

use std::time::Duration;

use common::{SILENCE_MS, TestServer, broadcast_message, request};
use serde_json::json;
use tokio::sync::mpsc;
use wscluster::hub::kept::QueueLevel;
use wscluster::sgc::{SgcHooks, SgcSettings};

#[tokio::test]
async fn subscribe_replies_naming_the_channel() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    client.send_json(request("sgc@subscribe", json!({"channel": "news"}))).await;
    assert_eq!(
        client.recv_json().await,
        json!({"jsonrpc": "2.0", "result": {"method": "sgc@subscribe", "channel": "news"}})
    );
}

#[tokio::test]
async fn publish_reaches_every_subscriber_including_the_publisher() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    let mut other = server.client().await;
    publisher.subscribe("news").await;
    other.subscribe("news").await;

    publisher.publish("news", "hello").await;
    publisher.expect_event("news", "hello").await;
    other.expect_event("news", "hello").await;
}

#[tokio::test]
async fn publish_does_not_reach_connections_not_subscribed() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    let mut subscriber = server.client().await;
    let mut bystander = server.client().await;
    subscriber.subscribe("news").await;
    bystander.subscribe("sports").await;

    publisher.publish("news", "hello").await;
    subscriber.expect_event("news", "hello").await;
    publisher.expect_silence(SILENCE_MS).await;
    bystander.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn channels_are_compared_byte_for_byte() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.subscribe("News").await;

    client.publish("news", "lower").await;
    client.publish("News", "upper").await;
    client.expect_event("News", "upper").await;
}

#[tokio::test]
async fn a_non_string_message_is_carried_through_as_json() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.subscribe("data").await;

    let message = json!({"price": 1.5, "tags": ["a", "b"], "n": null});
    client.send_json(request("sgc@publish", json!({"channel": "data", "message": message}))).await;
    assert_eq!(
        client.recv_json().await,
        json!({"jsonrpc": "2.0", "result": {"method": "sgc@event", "channel": "data", "message": message}})
    );
}

#[tokio::test]
async fn subscribing_twice_is_answered_again_and_delivers_once() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.subscribe("news").await;
    client.subscribe("news").await;

    client.publish("news", "once").await;
    client.expect_event("news", "once").await;
    client.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn unsubscribe_replies_and_stops_delivery() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.subscribe("news").await;

    client.send_json(request("sgc@unsubscribe", json!({"channel": "news"}))).await;
    assert_eq!(
        client.recv_json().await,
        json!({"jsonrpc": "2.0", "result": {"method": "sgc@unsubscribe", "channel": "news"}})
    );
    client.publish("news", "gone").await;
    client.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn unsubscribe_all_replies_with_an_empty_channel_and_stops_every_delivery() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.subscribe("a").await;
    client.subscribe("b*").await;

    client.send_json(request("sgc@unsubscribe_all", json!({}))).await;
    assert_eq!(
        client.recv_json().await,
        json!({"jsonrpc": "2.0", "result": {"method": "sgc@unsubscribe_all", "channel": ""}})
    );
    client.publish("a", "1").await;
    client.publish("bee", "2").await;
    client.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn broadcast_without_a_channel_reaches_every_connection_with_an_empty_channel() {
    let server = TestServer::start().await;
    let mut sender = server.client().await;
    let mut subscribed = server.client().await;
    let mut idle = server.client().await;
    subscribed.subscribe("news").await;

    sender.send_json(request("sgc@broadcast", json!({"message": "to all"}))).await;
    for client in [&mut sender, &mut subscribed, &mut idle] {
        assert_eq!(client.recv_json().await, broadcast_message("", "to all"));
    }
}

#[tokio::test]
async fn broadcast_with_a_channel_reaches_only_its_subscribers() {
    let server = TestServer::start().await;
    let mut sender = server.client().await;
    let mut subscribed = server.client().await;
    let mut other = server.client().await;
    subscribed.subscribe("news").await;
    other.subscribe("sports").await;

    sender.send_json(request("sgc@broadcast", json!({"channel": "news", "message": "hi"}))).await;
    assert_eq!(subscribed.recv_json().await, broadcast_message("news", "hi"));
    sender.expect_silence(SILENCE_MS).await;
    other.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn sgc_message_fires_the_on_message_hook_and_relays_nothing() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hooks = SgcHooks::default().on_message(move |client, message| {
        let _ = tx.send((client.session_id.to_string(), message.clone()));
    });
    let server = TestServer::with(SgcSettings::default(), hooks).await;
    let mut sender = server.client().await;
    let mut other = server.client().await;
    other.subscribe("news").await;

    sender.send_json(request("sgc@message", json!({"message": "for the app"}))).await;
    let (session, message) = tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("hook within the timeout")
        .expect("hook fired");
    assert_eq!(session, sender.session_id);
    assert_eq!(message, json!("for the app"));
    sender.expect_silence(SILENCE_MS).await;
    other.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn server_side_publish_and_broadcast_reach_clients() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.subscribe("ticks").await;

    server.sgc().publish("ticks", json!("tick"), QueueLevel::None);
    client.expect_event("ticks", "tick").await;
    server.sgc().broadcast(json!("all"), None);
    assert_eq!(client.recv_json().await, broadcast_message("", "all"));
}

#[tokio::test]
async fn a_pattern_matches_channels_that_first_appear_after_subscribing() {
    let server = TestServer::start().await;
    let mut subscriber = server.client().await;
    let mut publisher = server.client().await;
    subscriber.subscribe("news*").await;

    // `newsroom` has never been used when the pattern is subscribed.
    publisher.publish("newsroom", "fresh").await;
    publisher.publish("news", "bare").await;
    publisher.publish("sports", "no").await;
    subscriber.expect_event("newsroom", "fresh").await;
    subscriber.expect_event("news", "bare").await;
    subscriber.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn an_exact_and_a_pattern_match_deliver_a_publication_once() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.subscribe("room:1").await;
    client.subscribe("room:*").await;
    client.subscribe("*").await;

    client.publish("room:1", "once").await;
    client.expect_event("room:1", "once").await;
    client.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn unsubscribing_a_pattern_keeps_exact_subscriptions() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.subscribe("news").await;
    client.subscribe("news*").await;

    client.unsubscribe("news*").await;
    client.publish("newsroom", "not any more").await;
    client.publish("news", "still").await;
    client.expect_event("news", "still").await;
    client.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn unsubscribing_an_exact_channel_keeps_a_matching_pattern() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.subscribe("news").await;
    client.subscribe("news*").await;

    client.unsubscribe("news").await;
    client.publish("news", "via pattern").await;
    client.expect_event("news", "via pattern").await;
}

#[tokio::test]
async fn a_publisher_sees_its_events_in_publishing_order() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.subscribe("seq").await;

    for i in 0..50 {
        client.publish("seq", &i.to_string()).await;
    }
    for i in 0..50 {
        client.expect_event("seq", &i.to_string()).await;
    }
}

#[tokio::test]
async fn event_json_matches_the_wire_shape_exactly() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.subscribe("news").await;

    client.publish("news", "hello").await;
    assert_eq!(
        client.recv_text().await,
        r#"{"jsonrpc":"2.0","result":{"method":"sgc@event","channel":"news","message":"hello"}}"#
    );
}

#[tokio::test]
async fn a_subscription_beyond_the_limit_is_refused_naming_the_channel() {
    let settings = SgcSettings { max_subscriptions: 2, ..SgcSettings::default() };
    let server = TestServer::with(settings, SgcHooks::default()).await;
    let mut client = server.client().await;
    client.subscribe("a").await;
    client.subscribe("b*").await;

    client.send_json(request("sgc@subscribe", json!({"channel": "c"}))).await;
    let v = client.expect_error(-32000).await;
    assert_eq!(v["error"]["data"]["channel"], "c", "{v}");
    client.unsubscribe("a").await;
    client.subscribe("c").await;
}

#[tokio::test]
async fn subscribing_again_at_the_limit_is_still_answered() {
    let settings = SgcSettings { max_subscriptions: 1, ..SgcSettings::default() };
    let server = TestServer::with(settings, SgcHooks::default()).await;
    let mut client = server.client().await;
    client.subscribe("a").await;

    client.subscribe("a").await;
}
