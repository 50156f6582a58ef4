//! The load generator's WebSocket clients: connecting (from several
//! loopback source addresses), subscribing, publishing at a paced rate, and
//! reading events to measure their delivery latency.
//!
//! Every published message carries `STEP:SEQ:T:` followed by padding, where
//! `T` is the send time on the machine-wide monotonic clock
//! ([`sys::now_ns`]). A subscriber finds the `"message":"` field in the
//! frame it receives (no JSON parse: the client must stay cheaper than the
//! server it measures, on the same cores) and records `now - T`.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, anyhow, bail};
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::time::{Instant, timeout};
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

use crate::stats::Stats;
use crate::sys;

/// A client WebSocket over loopback TCP.
pub type Ws = WebSocketStream<TcpStream>;

/// How the server under test expects clients to behave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proto {
    /// wscluster: `sgc@subscribe` and wait for the reply, `sgc@publish`.
    Sgc,
    /// The ceiling server: the path says subscriber or publisher; the
    /// publisher sends the finished event frame, relayed byte for byte.
    Raw,
}

/// Loopback source addresses used in turn, so that more connections than
/// one address has ephemeral ports can reach one server address.
pub fn source_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + (i % 8) as u8))
}

/// Opens a WebSocket to `addr` at `path`, from `source` (port chosen at
/// connect time, so each source address has its own port range).
pub async fn connect(addr: SocketAddr, path: &str, source: Option<IpAddr>) -> Result<Ws> {
    let sock = TcpSocket::new_v4()?;
    if let Some(ip) = source {
        bind_no_port(&sock);
        sock.bind(SocketAddr::new(ip, 0))?;
    }
    let tcp = timeout(Duration::from_secs(10), sock.connect(addr)).await??;
    tcp.set_nodelay(true)?;
    let uri = format!("ws://{addr}{path}");
    let builder = ClientBuilder::new().uri(&uri)?;
    let (ws, _) = timeout(Duration::from_secs(10), builder.connect_on(tcp)).await??;
    Ok(ws)
}

/// `IP_BIND_ADDRESS_NO_PORT`: defer the port choice to `connect`.
fn bind_no_port(sock: &TcpSocket) {
    let one: libc::c_int = 1;
    // SAFETY: valid socket fd, option value is a c_int of the stated size.
    unsafe {
        libc::setsockopt(
            sock.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            (&one as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// Subscribes `ws` to `channel` and waits for the reply (sgc only). When it
/// returns, every linked node routes the channel to this connection.
pub async fn subscribe(ws: &mut Ws, channel: &str) -> Result<()> {
    let req = format!(
        r#"{{"jsonrpc":"2.0","method":"sgc@subscribe","params":{{"channel":"{channel}"}},"id":"s"}}"#
    );
    ws.send(Message::text(req)).await?;
    let wait = async {
        while let Some(msg) = ws.next().await {
            let msg = msg?;
            let Some(text) = msg.as_text() else { continue };
            if text.contains("\"sgc@subscribe\"") {
                return Ok(());
            }
            if text.contains("\"error\"") {
                bail!("subscribe refused: {text}");
            }
        }
        bail!("closed before the subscribe reply")
    };
    timeout(Duration::from_secs(30), wait).await.map_err(|_| anyhow!("no subscribe reply"))?
}

/// Opens a subscriber of `channel` on `addr` (`i` picks the source address).
pub async fn open_subscriber(
    proto: Proto,
    addr: SocketAddr,
    channel: &str,
    i: usize,
) -> Result<Ws> {
    match proto {
        Proto::Sgc => {
            let mut ws = connect(addr, "/", Some(source_ip(i))).await?;
            subscribe(&mut ws, channel).await?;
            Ok(ws)
        }
        Proto::Raw => connect(addr, "/sub", Some(source_ip(i))).await,
    }
}

/// Reads events until the connection closes, recording each into `stats`.
pub async fn read_events(mut ws: SplitStream<Ws>, stats: Arc<Stats>, shard: usize) {
    while let Some(frame) = ws.next().await {
        match frame {
            Ok(msg) => {
                if let Some(text) = msg.as_text() {
                    stats.record(shard, text, sys::now_ns());
                } else if msg.is_close() {
                    break;
                }
            }
            Err(_) => break,
        }
    }
    stats.closed();
}

/// Finds `STEP:SEQ:T:` in an event frame.
pub fn parse_stamp(frame: &str) -> Option<(u32, u64)> {
    const KEY: &str = "\"message\":\"";
    let at = frame.find(KEY)? + KEY.len();
    let mut parts = frame[at..].splitn(4, ':');
    let step = parts.next()?.parse().ok()?;
    let _seq = parts.next()?;
    let t = parts.next()?.parse().ok()?;
    Some((step, t))
}

/// One publishing connection and the channels it picks from at random.
pub struct Publisher {
    sink: SplitSink<Ws, Message>,
    proto: Proto,
    channels: Vec<String>,
}

impl Publisher {
    /// Opens a publisher on `addr`; its read side is drained in the
    /// background (nothing is expected there but the session message).
    pub async fn open(proto: Proto, addr: SocketAddr, channels: Vec<String>) -> Result<Self> {
        let path = if proto == Proto::Raw { "/pub" } else { "/" };
        let ws = connect(addr, path, None).await?;
        let (sink, mut stream) = ws.split();
        tokio::spawn(async move { while let Some(Ok(_)) = stream.next().await {} });
        Ok(Self { sink, proto, channels })
    }

    /// Publishes `rate` messages per second for `secs` seconds; returns the
    /// number sent and the publisher's worst lag behind its schedule (ms).
    ///
    /// Messages due are written together at each timer tick (1 ms) and
    /// flushed once; each is stamped just before it is written.
    pub async fn run(
        &mut self,
        step: u32,
        rate: f64,
        secs: f64,
        size: usize,
    ) -> Result<(u64, f64)> {
        let total = (rate * secs).round() as u64;
        let start = Instant::now();
        let mut sent = 0u64;
        let mut worst_lag = 0f64;
        while sent < total {
            let elapsed = start.elapsed().as_secs_f64();
            let due = ((elapsed * rate) as u64 + 1).min(total);
            worst_lag = worst_lag.max((elapsed - sent as f64 / rate) * 1e3);
            while sent < due {
                let channel = &self.channels[fastrand::usize(..self.channels.len())];
                let text = self.frame(channel, step, sent, size);
                self.sink.feed(Message::text(text)).await?;
                sent += 1;
            }
            self.sink.flush().await?;
            let next = start + Duration::from_secs_f64(sent as f64 / rate);
            tokio::time::sleep_until(next).await;
        }
        Ok((sent, worst_lag))
    }

    fn frame(&self, channel: &str, step: u32, seq: u64, size: usize) -> String {
        let stamp = format!("{step}:{seq}:{}:", sys::now_ns());
        let pad = size.saturating_sub(stamp.len());
        let mut message = String::with_capacity(stamp.len() + pad);
        message.push_str(&stamp);
        message.extend(std::iter::repeat_n('x', pad));
        match self.proto {
            Proto::Sgc => format!(
                r#"{{"jsonrpc":"2.0","method":"sgc@publish","params":{{"channel":"{channel}","message":"{message}"}}}}"#
            ),
            Proto::Raw => event_frame(channel, &message),
        }
    }
}

/// The `sgc@event` text wscluster sends its subscribers.
pub fn event_frame(channel: &str, message: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","result":{{"method":"sgc@event","channel":"{channel}","message":"{message}"}}}}"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamps_are_found_in_events() {
        let f = event_frame("c", "3:17:123456789:xxxx");
        assert_eq!(parse_stamp(&f), Some((3, 123456789)));
    }
}
