//! The accept loop of the listen address, on hyper's HTTP/1 server.
//!
//! Written out (rather than `axum::serve`) for one setting axum does not
//! expose: a header read timeout. A client that connects and sends no
//! request, or half a request, or idles on a keep-alive connection, is
//! closed after [`HEADER_TIMEOUT`] instead of holding a file descriptor for
//! ever. Upgraded WebSocket connections leave hyper and are not affected.

use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

/// How long a client may take to send a request's headers, and how long an
/// idle keep-alive connection is kept.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long shutdown waits for in-flight HTTP requests.
const HTTP_DRAIN: Duration = Duration::from_secs(2);

/// Accepts connections until `stop`, serving `app` on each.
pub async fn serve(listener: TcpListener, app: Router, stop: CancellationToken) {
    loop {
        let (tcp, remote) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of descriptors and the like: back off, do not spin.
                    warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        // Small messages must not wait for Nagle's algorithm.
        let _ = tcp.set_nodelay(true);

        let service =
            TowerToHyperService::new(app.clone().layer(axum::Extension(ConnectInfo(remote))));
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(HEADER_TIMEOUT)
            .serve_connection(TokioIo::new(tcp), service)
            .with_upgrades();
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut conn = std::pin::pin!(conn);
            let ended = tokio::select! {
                ended = conn.as_mut() => ended,
                () = stop.cancelled() => {
                    // Finish the request in flight, then close.
                    conn.as_mut().graceful_shutdown();
                    tokio::time::timeout(HTTP_DRAIN, conn).await.unwrap_or(Ok(()))
                }
            };
            if let Err(e) = ended {
                debug!(%remote, error = %e, "http connection ended with an error");
            }
        });
    }
}
