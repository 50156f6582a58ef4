//! The HTTP side of the listen address: health, readiness, cluster status,
//! and the WebSocket upgrade for every other path.

use std::net::SocketAddr;

use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{StatusCode, header};
use hyper_util::rt::TokioIo;
use tokio_websockets::{Config, Limits, ServerBuilder};

use super::AppState;
use super::connection;
use super::upgrade::{self, Speaks};

/// Initial size of each connection's read buffer. Most clients are idle
/// most of the time and send small JSON messages, and every open
/// connection holds this buffer; the library's default (8 KiB) was most of
/// an idle connection's memory. A larger frame grows the buffer as needed,
/// but a publisher whose messages do not fit pays a second read for each:
/// 1 KiB measured a worse cross-node p99 with 1 KB messages than 8 KiB,
/// so 2 KiB, which still keeps an idle connection under 8 KiB.
const READ_BUFFER: usize = 2048;

/// The router serving one node.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/cluster", get(cluster))
        .route("/metrics", get(metrics_text))
        .merge(super::api::router(state.clone()))
        .fallback(websocket)
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> Response {
    if state.status.ready() {
        (StatusCode::OK, "ready\n").into_response()
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n").into_response()
    }
}

async fn cluster(State(state): State<AppState>) -> Response {
    axum::Json(state.status.describe()).into_response()
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let Some(handle) = super::metrics::handle() else {
        return (StatusCode::NOT_FOUND, "metrics are exported by the application\n")
            .into_response();
    };
    // Gauges read from state at scrape time rather than tracked on every change.
    metrics::gauge!("wscluster_ready").set(f64::from(u8::from(state.status.ready())));
    metrics::gauge!("wscluster_connected_peers").set(state.status.connected_peer_count() as f64);
    let (subscriptions, channels) = state.sgc.hub().totals();
    metrics::gauge!("wscluster_subscriptions").set(subscriptions as f64);
    metrics::gauge!("wscluster_channels").set(channels as f64);
    let body = handle.render();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], body).into_response()
}

/// Upgrades to WebSocket on any path; plain requests get 404.
async fn websocket(
    State(state): State<AppState>,
    ConnectInfo(remote): ConnectInfo<SocketAddr>,
    mut req: Request,
) -> Response {
    if !upgrade::is_upgrade(req.method(), req.headers()) {
        return (StatusCode::NOT_FOUND, "not found; connect with a websocket client\n")
            .into_response();
    }
    let served =
        if state.presence.is_some() { upgrade::SERVED_WITH_PRESENCE } else { upgrade::SERVED };
    let (speaks, accept) = match upgrade::negotiate(req.headers(), served) {
        Ok(ok) => ok,
        Err(refused) => {
            metrics::counter!("wscluster_handshake_refused_total").increment(1);
            let mut resp = (refused.status, refused.reason + "\n").into_response();
            if refused.status == StatusCode::UPGRADE_REQUIRED {
                resp.headers_mut().insert(
                    header::SEC_WEBSOCKET_VERSION,
                    "13".parse().unwrap_or_else(|_| unreachable!()),
                );
            }
            return resp;
        }
    };
    if state.shutdown.is_cancelled() {
        return (StatusCode::SERVICE_UNAVAILABLE, "shutting down\n").into_response();
    }
    if state.sgc.hub().connection_count() >= state.max_connections {
        metrics::counter!("wscluster_refused_total", "reason" => "max_connections").increment(1);
        return (StatusCode::SERVICE_UNAVAILABLE, "too many connections\n").into_response();
    }

    let on_upgrade = hyper::upgrade::on(&mut req);
    let task_state = state.clone();
    state.tasks.spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let limits = Limits::default().max_payload_len(Some(task_state.max_message_size));
        let config = Config::default().read_buffer_size(READ_BUFFER);
        let ws = ServerBuilder::new().config(config).limits(limits).serve(TokioIo::new(upgraded));
        match (task_state.echo, speaks) {
            (true, _) => connection::serve_echo(ws).await,
            (false, Speaks::Sgc { .. }) => {
                connection::serve_sgc(ws, task_state.sgc, Some(remote), task_state.shutdown).await;
            }
            (false, Speaks::Presence) => {
                // Only negotiated when a presence protocol is served.
                if let Some(presence) = task_state.presence {
                    let shutdown = task_state.shutdown;
                    connection::serve_presence(ws, presence, Some(remote), shutdown).await;
                }
            }
        }
    });

    let mut builder = Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header(header::CONNECTION, "upgrade")
        .header(header::UPGRADE, "websocket")
        .header(header::SEC_WEBSOCKET_ACCEPT, accept);
    if let Some(p) = upgrade::protocol_header(speaks) {
        builder = builder.header(header::SEC_WEBSOCKET_PROTOCOL, p);
    }
    builder
        .body(Body::empty())
        .unwrap_or_else(|_| StatusCode::INTERNAL_SERVER_ERROR.into_response())
}
