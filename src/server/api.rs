//! The HTTP API for backends that are not WebSocket clients.
//!
//! Every route needs `Authorization: apikey KEY`; a missing or wrong key
//! gets 401. With no key configured the whole API answers 404: it is never
//! open. Requests are validated completely before anything is published,
//! so a refused request changes nothing.

use axum::Json;
use axum::Router;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use crate::hub::kept::QueueLevel;
use crate::sgc::channel;

/// The API routes, behind the key check.
pub fn router(state: AppState) -> Router<AppState> {
    Router::new()
        .route("/api/publish", post(publish))
        .route("/api/broadcast", post(broadcast))
        .route("/api/channels", get(channels))
        .route("/api/presence/{channel}", get(presence))
        .route("/api/{*rest}", axum::routing::any(unknown))
        .method_not_allowed_fallback(wrong_method)
        .route_layer(middleware::from_fn_with_state(state, authorize))
}

/// A refused API request: its status and a short reason, sent as a JSON
/// body and counted by status.
struct ApiError {
    status: StatusCode,
    reason: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        metrics::counter!("wscluster_api_refused_total", "status" => self.status.as_u16().to_string())
            .increment(1);
        (self.status, Json(json!({ "error": self.reason }))).into_response()
    }
}

fn error(status: StatusCode, reason: impl Into<String>) -> ApiError {
    ApiError { status, reason: reason.into() }
}

async fn authorize(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let Some(key) = state.api_key.as_deref() else {
        return error(StatusCode::NOT_FOUND, "the api is off: no api key is configured")
            .into_response();
    };
    let given = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split_once(' '))
        // Authentication schemes are case-insensitive (RFC 9110, 11.1).
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("apikey"))
        .map(|(_, key)| key.trim());
    match given {
        Some(given) if constant_time_eq(given.as_bytes(), key.as_bytes()) => next.run(req).await,
        _ => error(StatusCode::UNAUTHORIZED, "missing or wrong api key").into_response(),
    }
}

/// Compares without an early exit, so timing does not reveal the key.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    channel: String,
    message: Value,
    #[serde(default)]
    queue: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct BroadcastBody {
    message: Value,
    #[serde(default)]
    channel: Option<String>,
}

/// Parses a JSON body into `T`, answering 400 (or 413) with the reason.
fn parse<T: for<'de> Deserialize<'de>>(state: &AppState, body: &[u8]) -> Result<T, ApiError> {
    if body.len() > state.max_message_size {
        return Err(error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body larger than the maximum message size",
        ));
    }
    serde_json::from_slice(body)
        .map_err(|e| error(StatusCode::BAD_REQUEST, format!("bad json body: {e}")))
}

fn check_channel(state: &AppState, name: &str) -> Result<(), ApiError> {
    channel::check(name, state.sgc.settings().max_channel_len, false)
        .map_err(|e| error(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn publish(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: PublishBody = parse(&state, &body)?;
    check_channel(&state, &req.channel)?;
    if req.message.is_null() {
        return Err(error(StatusCode::BAD_REQUEST, "message is missing"));
    }
    let queue = match req.queue.as_deref().map(QueueLevel::parse) {
        None => QueueLevel::None,
        Some(Some(q)) => q,
        Some(None) => return Err(error(StatusCode::BAD_REQUEST, "unknown queue level")),
    };
    state.sgc.publish(&req.channel, req.message, queue);
    Ok(Json(json!({ "ok": true })).into_response())
}

async fn broadcast(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    let req: BroadcastBody = parse(&state, &body)?;
    let channel = req.channel.as_deref().filter(|c| !c.is_empty());
    if let Some(ch) = channel {
        check_channel(&state, ch)?;
    }
    if req.message.is_null() {
        return Err(error(StatusCode::BAD_REQUEST, "message is missing"));
    }
    state.sgc.broadcast(req.message, channel);
    Ok(Json(json!({ "ok": true })).into_response())
}

async fn unknown() -> ApiError {
    error(StatusCode::NOT_FOUND, "no such api route")
}

async fn wrong_method() -> ApiError {
    error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this api route")
}

async fn channels(State(state): State<AppState>) -> Response {
    let counts = match state.status.channel_counts().await {
        Some(counts) => counts,
        None => state.sgc.hub().channel_counts(),
    };
    let list: Vec<Value> =
        counts.into_iter().map(|(name, n)| json!({ "name": name, "subscribers": n })).collect();
    Json(json!({ "channels": list })).into_response()
}

async fn presence(
    State(state): State<AppState>,
    axum::extract::Path(channel): axum::extract::Path<String>,
) -> Result<Response, ApiError> {
    let Some(presence) = &state.presence else {
        return Err(error(StatusCode::NOT_FOUND, "presence is not served by this node"));
    };
    check_channel(&state, &channel)?;
    // The roster is the union of every live node, so this node can answer.
    let members = presence.channel_members(&channel).unwrap_or_default();
    let list: Vec<Value> = members
        .into_iter()
        .map(|m| json!({ "id": m.id, "name": m.name, "info": m.info }))
        .collect();
    Ok(Json(json!({ "channel": channel, "members": list })).into_response())
}

#[cfg(test)]
mod tests {
    use super::constant_time_eq;

    #[test]
    fn keys_compare_exactly() {
        assert!(constant_time_eq(b"k3y", b"k3y"));
        assert!(!constant_time_eq(b"k3y", b"k3z"));
        assert!(!constant_time_eq(b"k3", b"k3y"));
    }
}
