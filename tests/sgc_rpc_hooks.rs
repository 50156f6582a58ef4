//! RPC calls, notifications, and the application hooks.

mod common;

use std::time::Duration;

use common::{SILENCE_MS, TestServer, request};
use serde_json::{Value, json};
use tokio::sync::mpsc;
use wscluster::sgc::{PublishDecision, RpcError, SgcHooks, SgcSettings};

async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("hook within the timeout")
        .expect("hook fired")
}

fn rpc_hooks() -> SgcHooks {
    SgcHooks::default().rpc(|_, method, params| match method {
        "math.add" => {
            let a = params["a"].as_i64().unwrap_or_default();
            let b = params["b"].as_i64().unwrap_or_default();
            Ok(json!(a + b))
        }
        "echo" => Ok(params.clone()),
        "fail" => Err(RpcError {
            code: -32000,
            message: "it failed".into(),
            data: Some(json!({"why": "asked to"})),
        }),
        other => Err(RpcError::method_not_found(other)),
    })
}

#[tokio::test]
async fn an_rpc_call_gets_the_handler_result_with_its_id() {
    let server = TestServer::with(SgcSettings::default(), rpc_hooks()).await;
    let mut client = server.client().await;

    let v = client.call("math.add", json!({"a": 2, "b": 3}), "r1").await;
    assert_eq!(v, json!({"jsonrpc": "2.0", "result": 5, "id": "r1"}));
}

#[tokio::test]
async fn an_rpc_call_with_a_numeric_id_gets_it_back_as_a_number() {
    let server = TestServer::with(SgcSettings::default(), rpc_hooks()).await;
    let mut client = server.client().await;

    client
        .send_json(
            json!({"jsonrpc": "2.0", "method": "math.add", "params": {"a": 1, "b": 1}, "id": 7}),
        )
        .await;
    assert_eq!(
        client.recv_json().await,
        json!({"jsonrpc": "2.0", "result": {"method": "sgc@acknowledgment"}, "id": 7})
    );
    assert_eq!(client.recv_json().await, json!({"jsonrpc": "2.0", "result": 2, "id": 7}));
}

#[tokio::test]
async fn an_rpc_call_with_raw_string_params_reaches_the_handler() {
    let server = TestServer::with(SgcSettings::default(), rpc_hooks()).await;
    let mut client = server.client().await;

    let v = client.call("echo", json!("raw text"), "r2").await;
    assert_eq!(v, json!({"jsonrpc": "2.0", "result": "raw text", "id": "r2"}));
}

#[tokio::test]
async fn an_rpc_handler_error_is_sent_as_a_json_rpc_error() {
    let server = TestServer::with(SgcSettings::default(), rpc_hooks()).await;
    let mut client = server.client().await;

    let v = client.call("fail", json!({}), "r3").await;
    assert_eq!(
        v,
        json!({"jsonrpc": "2.0", "error": {"code": -32000, "message": "it failed", "data": {"why": "asked to"}}, "id": "r3"})
    );
    client.assert_served().await;
}

#[tokio::test]
async fn an_rpc_call_without_a_handler_is_method_not_found() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    let v = client.call("math.add", json!({}), "r4").await;
    assert_eq!(v["error"]["code"], -32601, "{v}");
    assert_eq!(v["id"], "r4");
    client.assert_served().await;
}

#[tokio::test]
async fn a_notification_reaches_the_hook_and_gets_no_answer() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let hooks = SgcHooks::default().on_notification(move |_, method, params| {
        let _ = tx.send((method.to_owned(), params.clone()));
    });
    let server = TestServer::with(SgcSettings::default(), hooks).await;
    let mut client = server.client().await;

    client.send_json(request("app.changed", json!({"x": 1}))).await;
    assert_eq!(next(&mut rx).await, ("app.changed".to_owned(), json!({"x": 1})));
    client.expect_silence(SILENCE_MS).await;
}

#[tokio::test]
async fn a_refused_subscription_is_error_32000_naming_the_channel() {
    let hooks = SgcHooks::default().before_subscribe(|_, channel| !channel.starts_with("secret"));
    let server = TestServer::with(SgcSettings::default(), hooks).await;
    let mut client = server.client().await;
    let mut publisher = server.client().await;

    client
        .send_json(json!({"jsonrpc": "2.0", "method": "sgc@subscribe", "params": {"channel": "secret.x"}, "id": "s"}))
        .await;
    client.expect_ack("s").await;
    let v = client.expect_error(-32000).await;
    assert_eq!(v["id"], "s");
    let text = v.to_string();
    assert!(text.contains("secret.x"), "the error names the channel: {v}");

    publisher.publish("secret.x", "hidden").await;
    client.expect_silence(SILENCE_MS).await;
    client.subscribe("public").await;
}

#[tokio::test]
async fn a_publication_refused_by_the_hook_is_an_error_and_not_delivered() {
    let hooks = SgcHooks::default().before_publish(|_, _, message| {
        if message == "spam" {
            PublishDecision::Refuse("no spam".into())
        } else {
            PublishDecision::Accept
        }
    });
    let server = TestServer::with(SgcSettings::default(), hooks).await;
    let mut publisher = server.client().await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("c").await;

    publisher.publish("c", "spam").await;
    let v = publisher.expect_error(-32000).await;
    assert_eq!(v["error"]["message"], "no spam");
    assert_eq!(v["id"], Value::Null);
    subscriber.expect_silence(SILENCE_MS).await;

    publisher.publish("c", "fine").await;
    subscriber.expect_event("c", "fine").await;
}

#[tokio::test]
async fn a_publication_rewritten_by_the_hook_is_delivered_rewritten() {
    let hooks = SgcHooks::default().before_publish(|client, channel, message| {
        let text = message.as_str().unwrap_or_default().to_uppercase();
        let from = &client.session_id[..8];
        PublishDecision::Rewrite(json!(format!("{channel}/{from}: {text}")))
    });
    let server = TestServer::with(SgcSettings::default(), hooks).await;
    let mut publisher = server.client().await;
    let mut subscriber = server.client().await;
    subscriber.subscribe("c").await;

    publisher.publish("c", "quiet").await;
    let expected = format!("c/{}: QUIET", &publisher.session_id[..8]);
    subscriber.expect_event("c", &expected).await;
}

#[tokio::test]
async fn on_connect_and_on_disconnect_fire_with_the_session_id() {
    let (tx, mut rx) = mpsc::unbounded_channel();
    let on_up = tx.clone();
    let hooks = SgcHooks::default()
        .on_connect(move |c| {
            let _ = on_up.send(("connect", c.session_id.to_string(), c.remote));
        })
        .on_disconnect(move |c| {
            let _ = tx.send(("disconnect", c.session_id.to_string(), c.remote));
        });
    let server = TestServer::with(SgcSettings::default(), hooks).await;

    let client = server.client().await;
    let (what, session, remote) = next(&mut rx).await;
    assert_eq!((what, session.as_str()), ("connect", client.session_id.as_str()));
    assert!(remote.is_some_and(|a| a.ip().is_loopback()), "{remote:?}");

    let id = client.session_id.clone();
    drop(client);
    let (what, session, _) = next(&mut rx).await;
    assert_eq!((what, session), ("disconnect", id));
}

#[tokio::test]
async fn an_rpc_error_carries_the_request_top_level_qos() {
    let server = TestServer::with(SgcSettings::default(), rpc_hooks()).await;
    let mut client = server.client().await;

    client
        .send_json(json!({"jsonrpc": "2.0", "method": "fail", "id": "r5", "qos": "qosLevel1"}))
        .await;
    client.expect_ack("r5").await;
    let v = client.expect_error(-32000).await;
    assert_eq!(v["qos"], "qosLevel1", "{v}");
    assert_eq!(v["id"], "r5");
}

#[tokio::test]
async fn an_rpc_result_carries_the_request_top_level_qos() {
    let server = TestServer::with(SgcSettings::default(), rpc_hooks()).await;
    let mut client = server.client().await;

    client
        .send_json(json!({"jsonrpc": "2.0", "method": "echo", "params": 1, "id": "r6", "qos": "qosLevel1"}))
        .await;
    client.expect_ack("r6").await;
    assert_eq!(
        client.recv_json().await,
        json!({"jsonrpc": "2.0", "result": 1, "qos": "qosLevel1", "id": "r6"})
    );
}
