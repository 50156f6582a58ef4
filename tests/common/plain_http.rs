//! Plain HTTP/1.1 over raw TCP, for what a WebSocket client cannot show:
//! health endpoints and refused handshakes.

use std::net::SocketAddr;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::time::timeout;

use super::TIMEOUT;

/// An HTTP response read by [`http_request`].
#[derive(Debug)]
pub struct HttpResponse {
    /// The status code.
    pub status: u16,
    /// The header block, lowercased, one `name: value` per line.
    pub headers: String,
    /// The body (read by `content-length`).
    pub body: String,
}

/// Sends a raw HTTP/1.1 request (the text up to, not including, the blank
/// line) and reads one response with a `content-length` body.
pub async fn http_request(addr: SocketAddr, head: &str) -> HttpResponse {
    let exchange = async {
        let mut tcp = TcpStream::connect(addr).await.expect("tcp connect");
        let text = format!("{head}\r\nHost: {addr}\r\n\r\n");
        tcp.write_all(text.as_bytes()).await.expect("write request");

        let mut reader = BufReader::new(tcp);
        let mut status_line = String::new();
        reader.read_line(&mut status_line).await.expect("status");
        let status = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("bad status line {status_line:?}"));

        let mut headers = String::new();
        let mut length = 0;
        loop {
            let mut line = String::new();
            reader.read_line(&mut line).await.expect("header line");
            if line.trim_end().is_empty() {
                break;
            }
            let line = line.to_ascii_lowercase();
            if let Some(v) = line.strip_prefix("content-length:") {
                length = v.trim().parse().expect("content-length");
            }
            headers.push_str(&line);
        }
        let mut body = vec![0; length];
        reader.read_exact(&mut body).await.expect("body");
        HttpResponse { status, headers, body: String::from_utf8_lossy(&body).into_owned() }
    };
    timeout(TIMEOUT, exchange).await.expect("http response within the timeout")
}
