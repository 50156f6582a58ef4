//! QoS: client-to-server `qosLevel2` (pubrec / pubrel) and server-to-client
//! delivery with acknowledgements and re-sends.

mod common;

use std::time::Duration;

use common::{Client, SILENCE_MS, TestServer, request};
use serde_json::{Value, json};
use wscluster::sgc::{Qos, SgcHooks, SgcSettings};

fn qos2_publish(channel: &str, message: &str, id: &str) -> Value {
    json!({
        "jsonrpc": "2.0",
        "method": "sgc@publish",
        "params": {"channel": channel, "message": message},
        "id": id,
        "qos": "qosLevel2",
    })
}

fn pubrel(id: &str) -> Value {
    json!({"jsonrpc": "2.0", "method": "sgc@pubrel", "id": id})
}

/// Sends a QoS 2 publish and reads its acknowledgement and pubrec.
async fn publish_qos2(client: &mut Client, channel: &str, message: &str, id: &str) {
    client.send_json(qos2_publish(channel, message, id)).await;
    client.expect_ack(id).await;
    assert_eq!(
        client.recv_json().await,
        json!({"jsonrpc": "2.0", "result": {"method": "sgc@pubrec"}, "qos": "qosLevel2", "id": id})
    );
}

#[tokio::test]
async fn a_qos2_publish_is_answered_pubrec_and_held_until_pubrel() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("q2").await;

    publish_qos2(&mut publisher, "q2", "exactly", "m-1").await;
    subscriber.expect_silence(SILENCE_MS).await;

    publisher.send_json(pubrel("m-1")).await;
    publisher.expect_ack("m-1").await;
    subscriber.expect_event("q2", "exactly").await;
}

#[tokio::test]
async fn a_qos2_message_is_processed_once_however_often_it_is_released() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("q2").await;
    publish_qos2(&mut publisher, "q2", "once", "m-1").await;

    for _ in 0..3 {
        publisher.send_json(pubrel("m-1")).await;
        publisher.expect_ack("m-1").await;
    }
    subscriber.expect_event("q2", "once").await;
    subscriber.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn a_qos2_id_already_released_cannot_be_published_again() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("q2").await;
    publish_qos2(&mut publisher, "q2", "first", "m-1").await;
    publisher.send_json(pubrel("m-1")).await;
    publisher.expect_ack("m-1").await;
    subscriber.expect_event("q2", "first").await;

    publisher.send_json(qos2_publish("q2", "again", "m-1")).await;
    publisher.expect_ack("m-1").await;
    publisher.expect_error(-32000).await;
    subscriber.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn a_pubrel_for_an_unknown_id_is_only_acknowledged() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    client.send_json(pubrel("nobody")).await;
    client.expect_ack("nobody").await;
    client.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn qos2_in_params_is_honoured_like_top_level_qos() {
    let server = TestServer::start().await;
    let mut publisher = server.client().await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("q2").await;

    publisher
        .send_json(json!({
            "jsonrpc": "2.0",
            "method": "sgc@publish",
            "params": {"channel": "q2", "message": "p", "qos": "qosLevel2"},
            "id": "p-1",
        }))
        .await;
    publisher.expect_ack("p-1").await;
    let pubrec = publisher.recv_json().await;
    assert_eq!(pubrec["result"], json!({"method": "sgc@pubrec"}));
    assert_eq!(pubrec["id"], "p-1");
    subscriber.expect_silence(SILENCE_MS).await;

    publisher.send_json(pubrel("p-1")).await;
    subscriber.expect_event("q2", "p").await;
}

fn qos1_settings() -> SgcSettings {
    SgcSettings {
        qos: Qos::AtLeastOnce,
        resend_interval: Duration::from_millis(100),
        ..SgcSettings::default()
    }
}

/// Reads an `sgc@event` or `sgc@message` and returns its id.
async fn recv_with_id(client: &mut Client, method: &str, channel: &str, message: &str) -> String {
    let v = client.recv_json().await;
    assert_eq!(
        v["result"],
        json!({"method": method, "channel": channel, "message": message}),
        "{v}"
    );
    v["id"]
        .as_str()
        .unwrap_or_else(|| panic!("server QoS 1 gives every delivery an id: {v}"))
        .to_owned()
}

#[tokio::test]
async fn with_server_qos1_an_event_is_resent_until_acknowledged() {
    let server = TestServer::with(qos1_settings(), SgcHooks::default()).await;
    let mut client = server.client().await;
    client.subscribe("q1").await;

    client.publish("q1", "again").await;
    let id = recv_with_id(&mut client, "sgc@event", "q1", "again").await;
    let resent = recv_with_id(&mut client, "sgc@event", "q1", "again").await;
    assert_eq!(resent, id, "a re-send keeps the id");
    let resent = recv_with_id(&mut client, "sgc@event", "q1", "again").await;
    assert_eq!(resent, id, "re-sent while unacknowledged");

    client.send_json(json!({"jsonrpc": "2.0", "method": "sgc@acknowledgment", "id": id})).await;
    // A re-send may already be on the wire when the ack lands; after that,
    // nothing more comes.
    let quiet = async {
        loop {
            match tokio::time::timeout(Duration::from_millis(400), client.recv_json()).await {
                Err(_) => break,
                Ok(v) => assert_eq!(v["id"], id.as_str(), "only the acked event: {v}"),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(3), quiet)
        .await
        .expect("re-sends stop after the acknowledgement");
}

#[tokio::test]
async fn with_server_qos1_an_acknowledged_event_is_not_resent() {
    // A re-send interval well above a loopback round trip, so the ack
    // lands before the first re-send is due.
    let mut settings = qos1_settings();
    settings.resend_interval = Duration::from_millis(300);
    let server = TestServer::with(settings, SgcHooks::default()).await;
    let mut client = server.client().await;
    client.subscribe("q1").await;

    client.publish("q1", "acked").await;
    let id = recv_with_id(&mut client, "sgc@event", "q1", "acked").await;
    client.send_json(json!({"jsonrpc": "2.0", "method": "sgc@acknowledgment", "id": id})).await;
    client.expect_silence(800).await;
}

#[tokio::test]
async fn with_server_qos1_broadcast_messages_carry_an_id_too() {
    let server = TestServer::with(qos1_settings(), SgcHooks::default()).await;
    let mut client = server.client().await;

    client.send_json(request("sgc@broadcast", json!({"message": "all"}))).await;
    let id = recv_with_id(&mut client, "sgc@message", "", "all").await;
    client.send_json(json!({"jsonrpc": "2.0", "method": "sgc@acknowledgment", "id": id})).await;
    client.assert_served().await;
}

#[tokio::test]
async fn with_server_qos0_events_carry_no_id() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.subscribe("q0").await;

    client.publish("q0", "plain").await;
    let v = client.recv_json().await;
    assert!(v.get("id").is_none(), "no id at QoS 0: {v}");
    client.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn with_server_qos1_resending_stops_at_the_resend_timeout() {
    let mut settings = qos1_settings();
    settings.resend_interval = Duration::from_millis(50);
    settings.resend_timeout = Duration::from_millis(300);
    let server = TestServer::with(settings, SgcHooks::default()).await;
    let mut client = server.client().await;
    client.subscribe("q1").await;

    client.publish("q1", "given up").await;
    let id = recv_with_id(&mut client, "sgc@event", "q1", "given up").await;
    let mut resends = 0;
    let count = async {
        while let Ok(v) = tokio::time::timeout(Duration::from_millis(400), client.recv_json()).await
        {
            assert_eq!(v["id"], id.as_str(), "{v}");
            resends += 1;
        }
    };
    tokio::time::timeout(Duration::from_secs(3), count).await.expect("re-sends stop");
    assert!(resends >= 2, "re-sent before the timeout, {resends} times");
}

#[tokio::test]
async fn a_client_that_never_acknowledges_is_closed_when_its_pending_set_is_full() {
    let mut settings = qos1_settings();
    settings.resend_interval = Duration::from_secs(5);
    settings.session.pending_acks = 4;
    let server = TestServer::with(settings, SgcHooks::default()).await;
    let mut client = server.client().await;
    client.subscribe("q1").await;
    let mut publisher = server.client().await;

    for i in 0..5 {
        publisher.publish("q1", &i.to_string()).await;
    }
    assert_eq!(client.expect_close(1008).await, "slow consumer");
    publisher.assert_served().await;
}
