//! A private `redis-server` for one test, on a free port, killed on drop.
//!
//! Not used yet: the Redis engine will start one per [`super::Cluster`]
//! (see the `REDIS:` notes in `mod.rs`). It lives here already so that the
//! engine-specific part of the support stays one small, separate step.

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};

use super::{STEP, eventually};

/// A running `redis-server` with persistence off.
pub struct RedisServer {
    addr: SocketAddr,
    child: Child,
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    pub async fn start() -> Self {
        // The OS picks a free port; it is released just before Redis binds
        // it, a window other tests are very unlikely to hit.
        let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
        let addr = probe.local_addr().expect("local address");
        drop(probe);

        let port = addr.port().to_string();
        let child = Command::new("redis-server")
            .args(["--port", &port, "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        eventually("redis-server to answer PING", STEP, || ping(addr)).await;
        Self { addr, child }
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

async fn ping(addr: SocketAddr) -> Result<(), String> {
    let mut tcp = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
    tcp.write_all(b"PING\r\n").await.map_err(|e| e.to_string())?;
    let mut buf = [0u8; 7];
    tcp.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
    if &buf == b"+PONG\r\n" { Ok(()) } else { Err(format!("{buf:?}")) }
}
