//! Transactions: messages held between `sgc@transaction` and
//! `sgc@commit` / `sgc@rollback`.

mod common;

use std::time::Duration;

use common::{SILENCE_MS, TestServer, broadcast_message, request};
use serde_json::json;
use tokio::sync::mpsc;
use wscluster::sgc::{SgcHooks, SgcSettings};

fn on_channel(method: &str, channel: &str) -> serde_json::Value {
    request(method, json!({ "channel": channel }))
}

#[tokio::test]
async fn commit_delivers_the_held_publications_in_order() {
    let server = TestServer::start().await;
    let mut sender = server.client().await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("t").await;

    sender.send_json(on_channel("sgc@transaction", "t")).await;
    for m in ["1", "2", "3"] {
        sender.publish("t", m).await;
    }
    sender.assert_served().await;
    subscriber.expect_silence(SILENCE_MS).await;

    sender.send_json(on_channel("sgc@commit", "t")).await;
    for m in ["1", "2", "3"] {
        subscriber.expect_event("t", m).await;
    }
}

#[tokio::test]
async fn rollback_discards_the_held_publications() {
    let server = TestServer::start().await;
    let mut sender = server.client().await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("t").await;

    sender.send_json(on_channel("sgc@transaction", "t")).await;
    sender.publish("t", "dropped").await;
    sender.send_json(on_channel("sgc@rollback", "t")).await;
    sender.publish("t", "after").await;
    subscriber.expect_event("t", "after").await;
    subscriber.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn a_transaction_holds_only_its_own_channel() {
    let server = TestServer::start().await;
    let mut sender = server.client().await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("t").await;
    subscriber.subscribe("free").await;

    sender.send_json(on_channel("sgc@transaction", "t")).await;
    sender.publish("t", "held").await;
    sender.publish("free", "now").await;
    subscriber.expect_event("free", "now").await;

    sender.send_json(on_channel("sgc@commit", "t")).await;
    subscriber.expect_event("t", "held").await;
}

#[tokio::test]
async fn a_transaction_holds_channel_broadcasts_too() {
    let server = TestServer::start().await;
    let mut sender = server.client().await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("t").await;

    sender.send_json(on_channel("sgc@transaction", "t")).await;
    sender.send_json(request("sgc@broadcast", json!({"channel": "t", "message": "b"}))).await;
    sender.publish("t", "e").await;
    sender.assert_served().await;
    subscriber.expect_silence(SILENCE_MS).await;

    sender.send_json(on_channel("sgc@commit", "t")).await;
    assert_eq!(subscriber.recv_json().await, broadcast_message("t", "b"));
    subscriber.expect_event("t", "e").await;
}

#[tokio::test]
async fn a_transaction_is_per_connection() {
    let server = TestServer::start().await;
    let mut in_tx = server.client().await;
    let mut outside = server.client().await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("t").await;

    in_tx.send_json(on_channel("sgc@transaction", "t")).await;
    in_tx.publish("t", "held").await;
    outside.publish("t", "direct").await;
    subscriber.expect_event("t", "direct").await;
    subscriber.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn closing_with_an_open_transaction_discards_it() {
    let (gone_tx, mut gone) = mpsc::unbounded_channel();
    let hooks = SgcHooks::default().on_disconnect(move |c| {
        let _ = gone_tx.send(c.session_id.to_string());
    });
    let server = TestServer::with(SgcSettings::default(), hooks).await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("t").await;

    let mut sender = server.client().await;
    sender.send_json(on_channel("sgc@transaction", "t")).await;
    sender.publish("t", "never").await;
    sender.assert_served().await;
    let sender_id = sender.session_id.clone();
    drop(sender);

    let closed = tokio::time::timeout(Duration::from_secs(5), gone.recv())
        .await
        .expect("disconnect within the timeout");
    assert_eq!(closed.as_deref(), Some(sender_id.as_str()));
    subscriber.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn commit_without_a_channel_is_invalid_params() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    client.send_json(request("sgc@commit", json!({}))).await;
    client.expect_error(-32602).await;
    client.assert_served().await;
}
