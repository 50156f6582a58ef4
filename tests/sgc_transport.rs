//! The transport around the protocol: handshake and sub-protocols, HTTP
//! health, size and UTF-8 limits, slow consumers, and shutdown.

mod common;

use bytes::Bytes;
use common::{Client, Connect, TestServer, http_request};
use serde_json::json;
use tokio_websockets::Message;
use wscluster::hub::kept::QueueLevel;
use wscluster::server::ServerConfig;
use wscluster::sgc::{Kind, Publication, SgcHooks, SgcSettings};

const UPGRADE: &str = "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
    Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13";

async fn small_limit_server(max_message_size: usize) -> TestServer {
    let config = ServerConfig { max_message_size, ..common::config() };
    TestServer::with_config(config, SgcSettings::default(), SgcHooks::default()).await
}

#[tokio::test]
async fn offering_the_sgc_subprotocol_gets_it_echoed() {
    let server = TestServer::start().await;
    let how = Connect { protocols: Some("esegece.com"), ..Connect::default() };
    let (mut client, response) = Client::open(server.addr(), how).await.unwrap();

    assert_eq!(response.headers()["sec-websocket-protocol"], "esegece.com");
    client.read_session().await;
}

#[tokio::test]
async fn offering_sgc_among_other_subprotocols_picks_sgc() {
    let server = TestServer::start().await;
    let how = Connect { protocols: Some("chat, esegece.com"), ..Connect::default() };
    let (mut client, response) = Client::open(server.addr(), how).await.unwrap();

    assert_eq!(response.headers()["sec-websocket-protocol"], "esegece.com");
    client.read_session().await;
}

#[tokio::test]
async fn offering_no_subprotocol_is_served_sgc_without_the_header() {
    let server = TestServer::start().await;
    let (mut client, response) = Client::open(server.addr(), Connect::default()).await.unwrap();

    assert!(response.headers().get("sec-websocket-protocol").is_none());
    client.read_session().await;
    client.assert_served().await;
}

#[tokio::test]
async fn offering_only_unknown_subprotocols_is_refused_with_400_naming_ours() {
    let server = TestServer::start().await;

    let head = format!("{UPGRADE}\r\nSec-WebSocket-Protocol: chat, mqtt");
    let response = http_request(server.addr(), &head).await;
    assert_eq!(response.status, 400, "{response:?}");
    assert!(response.body.contains("esegece.com"), "{response:?}");

    let how = Connect { protocols: Some("mqtt"), ..Connect::default() };
    assert!(Client::open(server.addr(), how).await.is_err());
}

#[tokio::test]
async fn healthz_answers_200() {
    let server = TestServer::start().await;

    let response = http_request(server.addr(), "GET /healthz HTTP/1.1").await;
    assert_eq!(response.status, 200, "{response:?}");
    assert_eq!(response.body, "ok\n");
}

#[tokio::test]
async fn a_plain_http_request_elsewhere_is_404() {
    let server = TestServer::start().await;

    let response = http_request(server.addr(), "GET / HTTP/1.1").await;
    assert_eq!(response.status, 404, "{response:?}");
}

#[tokio::test]
async fn an_oversized_message_closes_with_1009() {
    let server = small_limit_server(1024).await;
    let mut client = server.client().await;

    let big =
        json!({"jsonrpc": "2.0", "method": "sgc@message", "params": {"message": "x".repeat(2000)}});
    client.send_json(big).await;
    client.expect_close(1009).await;
}

#[tokio::test]
async fn an_oversized_message_sent_in_fragments_closes_with_1009() {
    let server = small_limit_server(1024).await;
    let how = Connect { frame_size: Some(256), ..Connect::default() };
    let (mut client, _) = Client::open(server.addr(), how).await.unwrap();
    client.read_session().await;

    // Every frame is under the limit; only the assembled message is over.
    let big =
        json!({"jsonrpc": "2.0", "method": "sgc@message", "params": {"message": "x".repeat(2000)}});
    client.send_json(big).await;
    client.expect_close(1009).await;
}

#[tokio::test]
async fn a_fragmented_message_within_the_limit_is_reassembled_and_served() {
    let server = small_limit_server(1024).await;
    let how = Connect { frame_size: Some(64), ..Connect::default() };
    let (mut client, _) = Client::open(server.addr(), how).await.unwrap();
    client.read_session().await;
    client.subscribe("frag").await;

    let message = "y".repeat(700);
    client.publish("frag", &message).await;
    client.expect_event("frag", &message).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_with_1007() {
    let server = TestServer::start().await;
    let mut client = server.client().await;

    // The client library does not validate what it sends, so this is a
    // genuinely invalid text frame on the wire.
    client.send(Message::text(Bytes::from_static(b"{\"a\":\"\xff\xfe\"}"))).await;
    client.expect_close(1007).await;
}

/// Fans `message` out on `channel` from server code and returns how many
/// connections it was queued for; a connection already closed as slow is
/// not counted.
fn probe(server: &TestServer, channel: &str, message: &str) -> usize {
    server.sgc().deliver(&Publication {
        id: wscluster::sgc::new_id(),
        kind: Kind::Event,
        channel: Some(channel.into()),
        message: json!(message),
        queue: QueueLevel::None,
        at_us: 0,
    })
}

#[tokio::test]
async fn a_client_that_stops_reading_is_closed_as_a_slow_consumer() {
    // Messages per round, and a cap far above what any socket buffers hold.
    const ROUND: usize = 8;
    const MAX_ROUNDS: usize = 500;
    let mut settings = SgcSettings::default();
    settings.hub.outbound_messages = 16;
    let server = TestServer::with(settings, SgcHooks::default()).await;

    // A tiny receive buffer makes the stalled socket back up quickly.
    let how = Connect { recv_buffer: Some(4096), ..Connect::default() };
    let (mut slow, _) = Client::open(server.addr(), how).await.unwrap();
    slow.read_session().await;
    slow.subscribe("flood").await;
    let mut reader = server.client().await;
    reader.subscribe("flood").await;
    let mut publisher = server.client().await;

    // The publisher never runs more than a round ahead of the reader, so
    // only the stalled client can fall behind by more than the bound. A
    // server-side probe ends each round and tells when the stalled client
    // was dropped, so the flood stops as soon as it has done its job.
    let payload = "z".repeat(16 * 1024);
    let mut rounds = 0;
    loop {
        for _ in 1..ROUND {
            publisher.publish("flood", &payload).await;
        }
        let reached = probe(&server, "flood", &payload);
        for _ in 0..ROUND {
            let v = reader.recv_json().await;
            assert_eq!(v["result"]["method"], "sgc@event");
        }
        if reached == 1 {
            break;
        }
        rounds += 1;
        assert!(rounds < MAX_ROUNDS, "the stalled client was never closed");
    }

    let reason = slow.expect_close(1008).await;
    assert_eq!(reason, "slow consumer");
    publisher.publish("flood", "after").await;
    reader.expect_event("flood", "after").await;
}

#[tokio::test]
async fn server_shutdown_closes_clients_with_1001() {
    let server = TestServer::start().await;
    let mut a = server.client().await;
    let mut b = server.client().await;
    b.subscribe("x").await;

    let (_, reason_a, _) =
        tokio::join!(server.shutdown(), a.expect_close(1001), b.expect_close(1001));
    assert_eq!(reason_a, "server shutting down");
}

#[tokio::test]
async fn invalid_utf8_in_a_later_fragment_closes_with_1007() {
    let server = TestServer::start().await;
    let how = Connect { frame_size: Some(4), ..Connect::default() };
    let (mut client, _) = Client::open(server.addr(), how).await.unwrap();
    client.read_session().await;

    client.send(Message::text(Bytes::from_static(b"{\"a\":\"ok\xc3\x28\"}"))).await;
    client.expect_close(1007).await;
}

#[tokio::test]
async fn a_character_split_across_fragments_is_accepted() {
    let server = TestServer::start().await;
    // Seven-byte frames cut the two-byte characters at every other frame.
    let how = Connect { frame_size: Some(7), ..Connect::default() };
    let (mut client, _) = Client::open(server.addr(), how).await.unwrap();
    client.read_session().await;
    client.subscribe("ü").await;

    let message = "äöü€😀".repeat(20);
    client.publish("ü", &message).await;
    client.expect_event("ü", &message).await;
}

#[tokio::test]
async fn a_message_of_exactly_the_maximum_size_is_accepted() {
    let server = small_limit_server(1024).await;
    let mut client = server.client().await;
    client.subscribe("edge").await;

    let empty = common::publish("edge", "").to_string();
    let filler = "m".repeat(1024 - empty.len());
    let text = common::publish("edge", &filler).to_string();
    assert_eq!(text.len(), 1024);
    client.send_text(&text).await;
    client.expect_event("edge", &filler).await;
}

#[tokio::test]
async fn an_unsupported_websocket_version_is_refused_with_426() {
    let server = TestServer::start().await;

    let head = UPGRADE.replace("Version: 13", "Version: 8");
    let response = http_request(server.addr(), &head).await;
    assert_eq!(response.status, 426, "{response:?}");
    assert!(response.headers.contains("sec-websocket-version: 13"), "{response:?}");
}
