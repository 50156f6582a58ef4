//! A minimal HTTP/1.0 GET over raw TCP, for `/cluster`, `/readyz` and
//! `/healthz`: the server closes the connection after the response, so the
//! body is simply everything after the header block.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::STEP;

/// `GET path` on `addr`: the status code and the body, or why it failed
/// (refused, timed out, not HTTP). Never panics, so it can be polled while
/// a node is starting or stopping.
pub async fn get(addr: SocketAddr, path: &str) -> Result<(u16, String), String> {
    get_with(addr, path, &[]).await
}

/// Like [`get`], sending the extra `headers` (name, value).
pub async fn get_with(
    addr: SocketAddr,
    path: &str,
    headers: &[(&str, &str)],
) -> Result<(u16, String), String> {
    let extra: String = headers.iter().map(|(k, v)| format!("{k}: {v}\r\n")).collect();
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let request = format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n{extra}\r\n");
        tcp.write_all(request.as_bytes()).await.map_err(|e| format!("write to {addr}: {e}"))?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.map_err(|e| format!("read from {addr}: {e}"))?;
        parse(&String::from_utf8_lossy(&raw))
    };
    timeout(STEP, exchange).await.unwrap_or_else(|_| Err(format!("GET {path} on {addr} timed out")))
}

fn parse(text: &str) -> Result<(u16, String), String> {
    let (head, body) =
        text.split_once("\r\n\r\n").ok_or_else(|| format!("no header block in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("bad status line in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// `method path` on `addr` with extra `headers` and a `body`: the status
/// code and the body, or why it failed. For the HTTP API.
pub async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(u16, String), String> {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.map_err(|e| format!("connect {addr}: {e}"))?;
        let mut head = format!("{method} {path} HTTP/1.0\r\nHost: {addr}\r\n");
        for (name, value) in headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        head.push_str(&format!("Content-Length: {}\r\n\r\n", body.len()));
        tcp.write_all(head.as_bytes()).await.map_err(|e| format!("write to {addr}: {e}"))?;
        tcp.write_all(body).await.map_err(|e| format!("write to {addr}: {e}"))?;
        let mut raw = Vec::new();
        tcp.read_to_end(&mut raw).await.map_err(|e| format!("read from {addr}: {e}"))?;
        parse(&String::from_utf8_lossy(&raw))
    };
    timeout(STEP, exchange)
        .await
        .unwrap_or_else(|_| Err(format!("{method} {path} on {addr} timed out")))
}
