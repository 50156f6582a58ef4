//! Bad input that earns a JSON-RPC error and keeps the connection: every
//! row is checked on one client while another client of the same server
//! keeps being served.

mod common;

use common::{TestServer, request};
use serde_json::{Value, json};
use tokio_websockets::Message;
use wscluster::sgc::{SgcHooks, SgcSettings};

/// Sends `frame` on one client and expects error `code` with `id`, then
/// checks that this client and a second one are both still served.
async fn refused_and_kept(server: &TestServer, frame: Message, code: i64, id: Value) {
    let mut other = server.client().await;
    other.subscribe("other").await;
    let mut client = server.client().await;

    client.send(frame).await;
    if let Some(id) = id.as_str() {
        client.expect_ack(id).await;
    }
    let v = client.expect_error(code).await;
    assert_eq!(v["id"], id, "error id: {v}");

    client.assert_served().await;
    other.assert_served().await;
    client.publish("other", "still here").await;
    other.expect_event("other", "still here").await;
}

async fn text_refused(text: &str, code: i64) {
    let server = TestServer::start().await;
    refused_and_kept(&server, Message::text(text.to_owned()), code, Value::Null).await;
}

async fn request_refused(req: Value, code: i64) {
    let server = TestServer::start().await;
    refused_and_kept(&server, Message::text(req.to_string()), code, Value::Null).await;
}

#[tokio::test]
async fn text_that_is_not_json_is_a_parse_error() {
    text_refused("this is not json", -32700).await;
}

#[tokio::test]
async fn truncated_json_is_a_parse_error() {
    text_refused(r#"{"jsonrpc":"2.0","method":"sgc@sub"#, -32700).await;
}

#[tokio::test]
async fn a_json_array_is_a_parse_error() {
    text_refused(r#"[{"jsonrpc":"2.0","method":"sgc@session"}]"#, -32700).await;
}

#[tokio::test]
async fn a_json_scalar_is_a_parse_error() {
    text_refused("42", -32700).await;
}

#[tokio::test]
async fn a_missing_jsonrpc_is_an_invalid_request() {
    request_refused(json!({"method": "sgc@session"}), -32600).await;
}

#[tokio::test]
async fn a_wrong_jsonrpc_version_is_an_invalid_request() {
    request_refused(json!({"jsonrpc": "1.0", "method": "sgc@session"}), -32600).await;
}

#[tokio::test]
async fn a_numeric_jsonrpc_version_is_an_invalid_request() {
    request_refused(json!({"jsonrpc": 2.0, "method": "sgc@session"}), -32600).await;
}

#[tokio::test]
async fn a_missing_method_is_an_invalid_request() {
    request_refused(json!({"jsonrpc": "2.0", "params": {}}), -32600).await;
}

#[tokio::test]
async fn a_method_that_is_not_a_string_is_an_invalid_request() {
    request_refused(json!({"jsonrpc": "2.0", "method": 5}), -32600).await;
}

#[tokio::test]
async fn an_invalid_request_with_an_id_is_answered_with_that_id() {
    let server = TestServer::start().await;
    let frame = Message::text(json!({"jsonrpc": "1.0", "method": "x", "id": "bad-1"}).to_string());
    let mut client = server.client().await;

    client.send(frame).await;
    let v = client.expect_error(-32600).await;
    assert_eq!(v["id"], "bad-1");
    client.assert_served().await;
}

#[tokio::test]
async fn a_binary_frame_is_an_invalid_request() {
    let server = TestServer::start().await;
    let frame = Message::binary(b"{\"jsonrpc\":\"2.0\",\"method\":\"sgc@session\"}".to_vec());
    refused_and_kept(&server, frame, -32600, Value::Null).await;
}

#[tokio::test]
async fn publish_without_a_channel_is_invalid_params() {
    request_refused(request("sgc@publish", json!({"message": "m"})), -32602).await;
}

#[tokio::test]
async fn publish_with_a_non_string_channel_is_invalid_params() {
    let req = request("sgc@publish", json!({"channel": 1, "message": "m"}));
    request_refused(req, -32602).await;
}

#[tokio::test]
async fn publish_without_a_message_is_invalid_params() {
    request_refused(request("sgc@publish", json!({"channel": "c"})), -32602).await;
}

#[tokio::test]
async fn publish_without_params_is_invalid_params() {
    request_refused(json!({"jsonrpc": "2.0", "method": "sgc@publish"}), -32602).await;
}

#[tokio::test]
async fn subscribe_without_a_channel_is_invalid_params() {
    request_refused(request("sgc@subscribe", json!({})), -32602).await;
}

#[tokio::test]
async fn unsubscribe_without_a_channel_is_invalid_params() {
    request_refused(request("sgc@unsubscribe", json!({})), -32602).await;
}

#[tokio::test]
async fn broadcast_without_a_message_is_invalid_params() {
    request_refused(request("sgc@broadcast", json!({})), -32602).await;
}

#[tokio::test]
async fn sgc_message_without_a_message_is_invalid_params() {
    request_refused(request("sgc@message", json!({})), -32602).await;
}

#[tokio::test]
async fn transaction_without_a_channel_is_invalid_params() {
    request_refused(request("sgc@transaction", json!({})), -32602).await;
}

#[tokio::test]
async fn an_invalid_params_error_carries_the_request_id() {
    let server = TestServer::start().await;
    let req = json!({"jsonrpc": "2.0", "method": "sgc@subscribe", "params": {}, "id": "p-1"});
    refused_and_kept(&server, Message::text(req.to_string()), -32602, json!("p-1")).await;
}

#[tokio::test]
async fn subscribing_to_an_empty_channel_is_invalid_params() {
    request_refused(request("sgc@subscribe", json!({"channel": ""})), -32602).await;
}

#[tokio::test]
async fn publishing_to_an_empty_channel_is_invalid_params() {
    let req = request("sgc@publish", json!({"channel": "", "message": "m"}));
    request_refused(req, -32602).await;
}

#[tokio::test]
async fn a_channel_with_a_control_character_is_invalid_params() {
    request_refused(request("sgc@subscribe", json!({"channel": "a\u{1}b"})), -32602).await;
}

#[tokio::test]
async fn a_channel_with_a_newline_is_invalid_params_on_publish() {
    let req = request("sgc@publish", json!({"channel": "a\nb", "message": "m"}));
    request_refused(req, -32602).await;
}

#[tokio::test]
async fn a_channel_longer_than_the_maximum_is_invalid_params() {
    let settings = SgcSettings { max_channel_len: 8, ..SgcSettings::default() };
    let server = TestServer::with(settings, SgcHooks::default()).await;
    let req = request("sgc@subscribe", json!({"channel": "123456789"}));
    refused_and_kept(&server, Message::text(req.to_string()), -32602, Value::Null).await;
}

#[tokio::test]
async fn a_channel_of_exactly_the_maximum_length_is_accepted() {
    let settings = SgcSettings { max_channel_len: 8, ..SgcSettings::default() };
    let server = TestServer::with(settings, SgcHooks::default()).await;
    let mut client = server.client().await;

    // Eight bytes in four characters: the limit counts bytes.
    client.subscribe("éééé").await;
    client.publish("éééé", "fits").await;
    client.expect_event("éééé", "fits").await;
}

#[tokio::test]
async fn the_default_maximum_channel_length_is_255_bytes() {
    let server = TestServer::start().await;
    let mut client = server.client().await;
    client.subscribe(&"x".repeat(255)).await;

    let req = request("sgc@subscribe", json!({"channel": "x".repeat(256)}));
    client.send_json(req).await;
    client.expect_error(-32602).await;
    client.assert_served().await;
}

#[tokio::test]
async fn publishing_to_a_pattern_is_invalid_params() {
    let server = TestServer::start().await;
    let mut watcher = server.client().await;
    watcher.subscribe("a*").await;

    let req = request("sgc@publish", json!({"channel": "a*", "message": "m"}));
    refused_and_kept(&server, Message::text(req.to_string()), -32602, Value::Null).await;
    watcher.expect_silence(common::SILENCE_MS).await;
}
