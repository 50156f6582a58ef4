//! Session messages, acknowledgements and `sgc@protocol`.

mod common;

use common::{Client, SILENCE_MS, TestServer, request};
use serde_json::json;

#[tokio::test]
async fn connect_sends_the_session_message_with_a_guid() {
    let server = TestServer::start().await;
    let (mut client, _) = Client::open(server.addr(), Default::default()).await.unwrap();

    let v = client.recv_json().await;
    let sid = v["id"].as_str().expect("string id").to_owned();
    assert_eq!(
        v,
        json!({"jsonrpc": "2.0", "result": {"method": "sgc@session", "message": sid}, "qos": "qosLevel0", "id": sid})
    );
    assert_eq!(sid.len(), 36, "a hyphenated GUID: {sid}");
    assert_eq!(sid.matches('-').count(), 4, "a hyphenated GUID: {sid}");
}

#[tokio::test]
async fn each_connection_gets_its_own_session_id() {
    let server = TestServer::start().await;
    let a = server.client().await;
    let b = server.client().await;
    assert_ne!(a.session_id, b.session_id);
}

#[tokio::test]
async fn sgc_session_sends_the_same_session_again() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let v = client.call("sgc@session", json!({}), "s1").await;
    let sid = client.session_id.as_str();
    assert_eq!(
        v,
        json!({"jsonrpc": "2.0", "result": {"method": "sgc@session", "message": sid}, "qos": "qosLevel0", "id": sid})
    );
}

#[tokio::test]
async fn a_string_id_is_acknowledged_before_the_reply() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    client
        .send_json(json!({"jsonrpc": "2.0", "method": "sgc@subscribe", "params": {"channel": "a"}, "id": "req-1"}))
        .await;
    assert_eq!(
        client.recv_json().await,
        json!({"jsonrpc": "2.0", "result": {"method": "sgc@acknowledgment"}, "id": "req-1"})
    );
    assert_eq!(
        client.recv_json().await,
        json!({"jsonrpc": "2.0", "result": {"method": "sgc@subscribe", "channel": "a"}, "id": "req-1"})
    );
}

#[tokio::test]
async fn a_numeric_id_is_acknowledged_and_echoed_as_a_number() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    client
        .send_json(json!({"jsonrpc": "2.0", "method": "sgc@subscribe", "params": {"channel": "a"}, "id": 42}))
        .await;
    assert_eq!(
        client.recv_json().await,
        json!({"jsonrpc": "2.0", "result": {"method": "sgc@acknowledgment"}, "id": 42})
    );
    assert_eq!(
        client.recv_json().await,
        json!({"jsonrpc": "2.0", "result": {"method": "sgc@subscribe", "channel": "a"}, "id": 42})
    );
}

#[tokio::test]
async fn messages_without_a_direct_reply_are_still_acknowledged() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let silent = [
        ("sgc@publish", json!({"channel": "nobody", "message": "m"})),
        ("sgc@broadcast", json!({"channel": "nobody", "message": "m"})),
        ("sgc@message", json!({"message": "m"})),
        ("sgc@transaction", json!({"channel": "t"})),
        ("sgc@commit", json!({"channel": "t"})),
        ("sgc@rollback", json!({"channel": "t"})),
    ];
    for (i, (method, params)) in silent.into_iter().enumerate() {
        let id = format!("{method}-{i}");
        client
            .send_json(json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id}))
            .await;
        client.expect_ack(&id).await;
    }
    client.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn an_acknowledgment_from_the_client_is_not_acknowledged() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    client.send_json(json!({"jsonrpc": "2.0", "method": "sgc@acknowledgment", "id": "x"})).await;
    client.expect_silence(SILENCE_MS).await;
    client.assert_served().await;
}

#[tokio::test]
async fn a_direct_reply_carries_the_request_top_level_qos() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    client
        .send_json(json!({"jsonrpc": "2.0", "method": "sgc@subscribe", "params": {"channel": "a"}, "id": "q", "qos": "qosLevel1"}))
        .await;
    client.expect_ack("q").await;
    assert_eq!(
        client.recv_json().await,
        json!({"jsonrpc": "2.0", "result": {"method": "sgc@subscribe", "channel": "a"}, "qos": "qosLevel1", "id": "q"})
    );
}

#[tokio::test]
async fn sgc_protocol_answers_with_the_protocol_name_as_text() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    client.send_json(request("sgc@protocol", json!({}))).await;
    assert_eq!(client.recv_text().await, "esegece.com");
}
