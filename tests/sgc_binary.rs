//! The real `wscluster` binary: start-up line, serving, and signals.

mod common;

use std::time::Duration;

use common::{Binary, Client, http_request};

#[tokio::test]
async fn the_binary_prints_its_address_and_serves_http_and_sgc() {
    let server = Binary::start(&[]).await;

    let health = http_request(server.addr, "GET /healthz HTTP/1.1").await;
    assert_eq!(health.status, 200, "{health:?}");

    let mut client = Client::connect(server.addr).await;
    client.subscribe("bin").await;
    client.publish("bin", "round trip").await;
    client.expect_event("bin", "round trip").await;
}

#[tokio::test]
async fn sigterm_closes_clients_with_1001_and_exits_0() {
    let server = Binary::start(&[]).await;
    let mut idle = Client::connect(server.addr).await;
    let mut subscribed = Client::connect(server.addr).await;
    subscribed.subscribe("x").await;

    server.signal("TERM").await;
    assert_eq!(idle.expect_close(1001).await, "server shutting down");
    subscribed.expect_close(1001).await;
    let status = server.wait(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn sigint_stops_the_binary_cleanly_too() {
    let server = Binary::start(&[]).await;
    let mut client = Client::connect(server.addr).await;

    server.signal("INT").await;
    client.expect_close(1001).await;
    let status = server.wait(Duration::from_secs(5)).await;
    assert_eq!(status.code(), Some(0), "{status}");
}

#[tokio::test]
async fn sigterm_with_no_clients_exits_0_promptly() {
    let server = Binary::start(&[]).await;

    server.signal("TERM").await;
    let status = server.wait(Duration::from_secs(3)).await;
    assert_eq!(status.code(), Some(0), "{status}");
}
