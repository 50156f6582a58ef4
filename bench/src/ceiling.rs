//! The ceiling: the least a fan-out server can do on this machine.
//!
//! A WebSocket server with no protocol, no channels and no cluster. A
//! connection to `/sub` is a subscriber; every text frame a connection to
//! `/pub` sends is framed once (unmasked header + the same payload) and the
//! finished bytes are handed to every subscriber's writer task, which writes
//! whatever is queued with one `write_all`. It runs in its own process, on a
//! runtime like the server's, and is driven by the same clients, so
//! "our fan-out / ceiling" compares the server with bare socket writes.

use std::net::SocketAddr;
use std::sync::{Arc, RwLock};

use anyhow::{Result, bail};
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::OwnedReadHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

/// Frames queued per subscriber before it is dropped (as the server would).
const QUEUE: usize = 8192;

/// Most frames written by one `write_all`.
const BATCH: usize = 64;

type Subscribers = Arc<RwLock<Vec<mpsc::Sender<Bytes>>>>;

/// Serves on `listen` until killed; prints `listening ADDR`.
pub async fn serve(listen: SocketAddr) -> Result<()> {
    let listener = TcpListener::bind(listen).await?;
    println!("listening {}", listener.local_addr()?);
    let subs: Subscribers = Arc::default();
    loop {
        let (tcp, _) = listener.accept().await?;
        let _ = tcp.set_nodelay(true);
        let subs = subs.clone();
        tokio::spawn(async move {
            let _ = connection(tcp, subs).await;
        });
    }
}

async fn connection(mut tcp: TcpStream, subs: Subscribers) -> Result<()> {
    let (path, key, rest) = read_request(&mut tcp).await?;
    let accept = accept_key(&key);
    let resp = format!(
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
    );
    if path.starts_with("/pub") {
        tcp.write_all(resp.as_bytes()).await?;
        let (read, _write) = tcp.into_split();
        return relay(read, rest, subs).await;
    }
    let (tx, rx) = mpsc::channel(QUEUE);
    subs.write().unwrap_or_else(|e| e.into_inner()).push(tx);
    tcp.write_all(resp.as_bytes()).await?;
    let (mut read, write) = tcp.into_split();
    tokio::spawn(write_loop(write, rx));
    // Nothing is expected from a subscriber; read until it goes away.
    let mut sink = [0u8; 1024];
    while read.read(&mut sink).await? > 0 {}
    Ok(())
}

async fn write_loop(mut w: tokio::net::tcp::OwnedWriteHalf, mut rx: mpsc::Receiver<Bytes>) {
    let mut buf = BytesMut::with_capacity(16 * 1024);
    while let Some(first) = rx.recv().await {
        buf.clear();
        buf.extend_from_slice(&first);
        let mut n = 1;
        while n < BATCH {
            match rx.try_recv() {
                Ok(next) => buf.extend_from_slice(&next),
                Err(_) => break,
            }
            n += 1;
        }
        if w.write_all(&buf).await.is_err() {
            return;
        }
    }
}

/// Reads the publisher's frames; frames and fans out each text payload.
async fn relay(mut r: OwnedReadHalf, mut buf: BytesMut, subs: Subscribers) -> Result<()> {
    loop {
        while let Some((opcode, payload)) = take_frame(&mut buf)? {
            // Only text frames are relayed; control frames are ignored.
            if opcode != 1 {
                continue;
            }
            let frame = server_frame(&payload);
            let subs = subs.read().unwrap_or_else(|e| e.into_inner());
            for tx in subs.iter() {
                let _ = tx.try_send(frame.clone());
            }
        }
        if r.read_buf(&mut buf).await? == 0 {
            return Ok(());
        }
    }
}

/// Takes one complete client frame off `buf`: its opcode and unmasked payload.
fn take_frame(buf: &mut BytesMut) -> Result<Option<(u8, Bytes)>> {
    if buf.len() < 2 {
        return Ok(None);
    }
    let (b0, b1) = (buf[0], buf[1]);
    if b0 & 0x80 == 0 {
        bail!("fragmented frames are not supported by the ceiling server");
    }
    let (len, mut at) = match b1 & 0x7f {
        126 if buf.len() >= 4 => (u16::from_be_bytes([buf[2], buf[3]]) as usize, 4),
        127 if buf.len() >= 10 => (u64::from_be_bytes(buf[2..10].try_into()?) as usize, 10),
        126 | 127 => return Ok(None),
        n => (n as usize, 2),
    };
    let masked = b1 & 0x80 != 0;
    let need = at + if masked { 4 } else { 0 } + len;
    if buf.len() < need {
        return Ok(None);
    }
    let mut frame = buf.split_to(need);
    let mask = if masked {
        let m = [frame[at], frame[at + 1], frame[at + 2], frame[at + 3]];
        at += 4;
        Some(m)
    } else {
        None
    };
    let mut payload = frame.split_off(at);
    if let Some(m) = mask {
        for (i, b) in payload.iter_mut().enumerate() {
            *b ^= m[i % 4];
        }
    }
    Ok(Some((b0 & 0x0f, payload.freeze())))
}

/// An unmasked final text frame around `payload`.
fn server_frame(payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(payload.len() + 10);
    out.extend_from_slice(&[0x81]);
    match payload.len() {
        n if n < 126 => out.extend_from_slice(&[n as u8]),
        n if n <= 0xffff => {
            out.extend_from_slice(&[126]);
            out.extend_from_slice(&(n as u16).to_be_bytes());
        }
        n => {
            out.extend_from_slice(&[127]);
            out.extend_from_slice(&(n as u64).to_be_bytes());
        }
    }
    out.extend_from_slice(payload);
    out.freeze()
}

/// Reads the upgrade request; returns its path, its key and any bytes read
/// past the header.
async fn read_request(tcp: &mut TcpStream) -> Result<(String, String, BytesMut)> {
    let mut buf = BytesMut::with_capacity(4096);
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).into_owned();
            let rest = buf.split_off(end + 4);
            let path = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
            let key = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.trim().eq_ignore_ascii_case("sec-websocket-key").then(|| v.trim().to_owned())
                })
                .unwrap_or_default();
            return Ok((path, key, rest));
        }
        if buf.len() > 16 * 1024 || tcp.read_buf(&mut buf).await? == 0 {
            bail!("bad upgrade request");
        }
    }
}

fn accept_key(key: &str) -> String {
    let mut sha = sha1_smol::Sha1::new();
    sha.update(key.as_bytes());
    sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
    base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
}
