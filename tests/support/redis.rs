//! A private `redis-server` for one test, on a free port, killed on drop.
//!
//! [`super::Cluster`] starts one per Redis cluster. Failure tests start
//! their own and then stop it and start it again on the same port, freeze
//! it (SIGSTOP), require a password, or send it commands such as
//! `CLIENT KILL` through [`RedisServer::command`], a minimal RESP client.

use std::net::SocketAddr;
use std::process::Stdio;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::process::{Child, Command};
use tokio::time::timeout;

use super::{STEP, eventually};

/// A running (or stopped) `redis-server` with persistence off.
pub struct RedisServer {
    addr: SocketAddr,
    password: Option<String>,
    child: Option<Child>,
}

/// One RESP reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+OK`.
    Status(String),
    /// `-ERR ...`.
    Error(String),
    /// `:1`.
    Integer(i64),
    /// `$n` bulk string; `None` for the null bulk string.
    Bulk(Option<String>),
    /// `*n` array; `None` for the null array.
    Array(Option<Vec<Reply>>),
}

impl RedisServer {
    /// Starts `redis-server` on a free port and waits until it answers PING.
    pub async fn start() -> Self {
        Self::start_on(free_port().await, None).await
    }

    /// Starts `redis-server` requiring `password` (`--requirepass`).
    pub async fn start_with_password(password: &str) -> Self {
        Self::start_on(free_port().await, Some(password.to_owned())).await
    }

    /// Starts `redis-server` on `addr` (a port chosen earlier, for example
    /// one a node already tries to reach).
    pub async fn start_on(addr: SocketAddr, password: Option<String>) -> Self {
        let mut server = Self { addr, password, child: None };
        server.spawn().await;
        server
    }

    /// Where it listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A `redis://` URL for it, with the password if it has one.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@{}/", self.addr),
            None => format!("redis://{}/", self.addr),
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().and_then(Child::id).expect("redis-server is running")
    }

    /// Kills the server (SIGKILL: no goodbye to its clients beyond the
    /// kernel closing their sockets) and reaps it.
    pub async fn stop(&mut self) {
        let mut child = self.child.take().expect("redis-server is running");
        let _ = child.start_kill();
        timeout(STEP, child.wait())
            .await
            .expect("redis-server exits after SIGKILL")
            .expect("reap redis-server");
    }

    /// Starts the server again on the same port.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "redis-server is still running");
        self.spawn().await;
    }

    /// SIGSTOP: sockets stay open, nothing is answered.
    pub fn freeze(&self) {
        signal(self.pid(), "STOP");
    }

    /// SIGCONT after [`RedisServer::freeze`].
    pub fn thaw(&self) {
        signal(self.pid(), "CONT");
    }

    /// Sends one command (authenticating first when the server has a
    /// password) and returns the reply.
    pub async fn command(&self, args: &[&str]) -> Result<Reply, String> {
        let exchange = async {
            let tcp = TcpStream::connect(self.addr).await.map_err(|e| e.to_string())?;
            let mut conn = BufReader::new(tcp);
            if let Some(p) = &self.password {
                match call(&mut conn, &["AUTH", p]).await? {
                    Reply::Status(_) => {}
                    other => return Err(format!("AUTH answered {other:?}")),
                }
            }
            call(&mut conn, args).await
        };
        timeout(STEP, exchange).await.unwrap_or_else(|_| Err(format!("{args:?} timed out")))
    }

    /// `CLIENT LIST`, one map of `field=value` pairs per client.
    pub async fn clients(&self) -> Vec<Vec<(String, String)>> {
        let reply = self.command(&["CLIENT", "LIST"]).await.expect("CLIENT LIST");
        let Reply::Bulk(Some(text)) = reply else { panic!("CLIENT LIST answered {reply:?}") };
        text.lines()
            .map(|line| {
                line.split_whitespace()
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect()
            })
            .collect()
    }

    async fn spawn(&mut self) {
        let port = self.addr.port().to_string();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port, "--bind", "127.0.0.1"]).args([
            "--save",
            "",
            "--appendonly",
            "no",
        ]);
        if let Some(p) = &self.password {
            cmd.args(["--requirepass", p]);
        }
        let child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn redis-server (is it installed?)");
        self.child = Some(child);
        eventually("redis-server to answer PING", STEP, || async {
            match self.command(&["PING"]).await? {
                Reply::Status(s) if s == "PONG" => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await;
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            // SIGKILL also ends a frozen server.
            let _ = child.start_kill();
        }
    }
}

/// A port that was free a moment ago. The OS picks it; it is released
/// before Redis (or a node) binds it, a window other tests are very
/// unlikely to hit.
pub async fn free_port() -> SocketAddr {
    let probe = TcpListener::bind("127.0.0.1:0").await.expect("bind port 0");
    probe.local_addr().expect("local address")
}

fn signal(pid: u32, name: &str) {
    let status = std::process::Command::new("kill")
        .args(["-s", name, &pid.to_string()])
        .status()
        .expect("run kill(1)");
    assert!(status.success(), "kill -s {name} {pid} failed");
}

async fn call(conn: &mut BufReader<TcpStream>, args: &[&str]) -> Result<Reply, String> {
    let mut request = format!("*{}\r\n", args.len());
    for a in args {
        request.push_str(&format!("${}\r\n{a}\r\n", a.len()));
    }
    conn.get_mut().write_all(request.as_bytes()).await.map_err(|e| e.to_string())?;
    read_reply(conn).await
}

async fn read_reply(conn: &mut BufReader<TcpStream>) -> Result<Reply, String> {
    let mut line = String::new();
    let n = conn.read_line(&mut line).await.map_err(|e| e.to_string())?;
    if n == 0 {
        return Err("connection closed".into());
    }
    let line = line.trim_end_matches("\r\n");
    let (kind, rest) = line.split_at(1);
    let number = || rest.parse::<i64>().map_err(|e| format!("bad length {rest:?}: {e}"));
    match kind {
        "+" => Ok(Reply::Status(rest.to_owned())),
        "-" => Ok(Reply::Error(rest.to_owned())),
        ":" => Ok(Reply::Integer(number()?)),
        "$" => {
            let Ok(len) = usize::try_from(number()?) else { return Ok(Reply::Bulk(None)) };
            let mut buf = vec![0u8; len + 2];
            conn.read_exact(&mut buf).await.map_err(|e| e.to_string())?;
            buf.truncate(len);
            Ok(Reply::Bulk(Some(String::from_utf8_lossy(&buf).into_owned())))
        }
        "*" => {
            let Ok(len) = usize::try_from(number()?) else { return Ok(Reply::Array(None)) };
            let mut items = Vec::with_capacity(len);
            for _ in 0..len {
                items.push(Box::pin(read_reply(conn)).await?);
            }
            Ok(Reply::Array(Some(items)))
        }
        _ => Err(format!("not a RESP reply: {line:?}")),
    }
}
