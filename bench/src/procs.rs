//! Child processes the harness runs: wscluster nodes, a private
//! `redis-server`, Socket.IO servers and the ceiling server.
//!
//! Each child reports its address on stdout; the harness reads it, sends
//! the child's stderr to a log file under `bench-results/logs/`, and stops
//! the child (SIGTERM, then SIGKILL after a grace period) when done. Every
//! child is also killed if the harness drops it without stopping it.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpStream;
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{Instant, timeout};

use crate::sys;

/// How long a child may take to print its address, or a cluster to link.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A running child process.
pub struct Proc {
    /// A short name for logs and reports.
    pub name: String,
    /// Its process id (for memory and CPU readings).
    pub pid: u32,
    child: Child,
    stdout: Lines<BufReader<ChildStdout>>,
}

impl Proc {
    /// Starts `cmd` with stdout piped and stderr sent to `logs/NAME.log`.
    pub fn spawn(name: &str, mut cmd: Command, logs: &Path) -> Result<Self> {
        std::fs::create_dir_all(logs)?;
        let log = std::fs::File::create(logs.join(format!("{name}.log")))?;
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(log).kill_on_drop(true);
        let mut child = cmd.spawn().with_context(|| format!("cannot start {name}"))?;
        let pid = child.id().ok_or_else(|| anyhow!("{name} exited at once"))?;
        let stdout = child.stdout.take().ok_or_else(|| anyhow!("no stdout"))?;
        Ok(Self { name: name.to_owned(), pid, child, stdout: BufReader::new(stdout).lines() })
    }

    /// Reads stdout until a line starts with `prefix`; returns the rest.
    pub async fn wait_line(&mut self, prefix: &str) -> Result<String> {
        self.wait_line_for(prefix, START_TIMEOUT).await
    }

    /// [`Proc::wait_line`] with its own time limit.
    pub async fn wait_line_for(&mut self, prefix: &str, limit: Duration) -> Result<String> {
        let read = async {
            while let Some(line) = self.stdout.next_line().await? {
                if let Some(rest) = line.strip_prefix(prefix) {
                    return Ok(rest.trim().to_owned());
                }
            }
            bail!("{} exited before printing {prefix:?}", self.name)
        };
        timeout(limit, read).await.map_err(|_| anyhow!("{}: no {prefix:?}", self.name))?
    }

    /// The next stdout line, if any.
    pub async fn next_line(&mut self) -> Result<Option<String>> {
        Ok(self.stdout.next_line().await?)
    }

    /// Writes one line to the child's stdin.
    pub async fn send_line(&mut self, line: &str) -> Result<()> {
        let stdin = self.child.stdin.as_mut().ok_or_else(|| anyhow!("stdin closed"))?;
        stdin.write_all(line.as_bytes()).await?;
        stdin.write_all(b"\n").await?;
        stdin.flush().await?;
        Ok(())
    }

    /// Asks the child to stop (SIGTERM, stdin closed) and waits up to 5 s,
    /// then kills it.
    pub async fn stop(mut self) {
        drop(self.child.stdin.take());
        // SAFETY: plain signal to our own child's pid.
        unsafe { libc::kill(self.pid as i32, libc::SIGTERM) };
        if timeout(Duration::from_secs(5), self.child.wait()).await.is_err() {
            let _ = self.child.kill().await;
        }
    }

    /// Resident memory now, in KiB.
    pub fn rss_kib(&self) -> u64 {
        sys::rss_kib(self.pid).unwrap_or(0)
    }
}

/// Backplane of a wscluster cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Engine {
    /// Nodes link to each other over TCP.
    Mesh,
    /// Redis Pub/Sub (a private redis-server started by the harness).
    Redis,
}

impl Engine {
    /// The engine's name as the server's `--engine` flag spells it.
    pub fn name(self) -> &'static str {
        match self {
            Engine::Mesh => "mesh",
            Engine::Redis => "redis",
        }
    }
}

/// A private `redis-server` on a free loopback port, saving nothing.
pub struct Redis {
    /// The process.
    pub proc: Proc,
    /// Its port.
    pub port: u16,
}

impl Redis {
    /// Starts one and waits until it answers PING.
    pub async fn start(name: &str, logs: &Path) -> Result<Self> {
        let port = sys::free_port()?;
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", ""]).args([
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--loglevel",
            "warning",
        ]);
        let proc = Proc::spawn(name, cmd, logs).context("is redis-server installed?")?;
        let deadline = Instant::now() + START_TIMEOUT;
        while Instant::now() < deadline {
            if ping(port).await {
                return Ok(Self { proc, port });
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("redis-server on port {port} never answered PING")
    }

    /// `redis://127.0.0.1:PORT/`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

async fn ping(port: u16) -> bool {
    let Ok(mut s) = TcpStream::connect(sys::loopback(port)).await else {
        return false;
    };
    let mut buf = [0u8; 16];
    s.write_all(b"PING\r\n").await.is_ok()
        && matches!(timeout(Duration::from_secs(1), s.read(&mut buf)).await, Ok(Ok(n)) if buf[..n].starts_with(b"+PONG"))
}

/// How to start wscluster nodes.
#[derive(Debug, Clone)]
pub struct NodeOpts {
    /// The `wscluster` binary.
    pub bin: PathBuf,
    /// The backplane.
    pub engine: Engine,
    /// Extra `serve` flags (for example `--outbound-queue`).
    pub extra: Vec<String>,
    /// Where child logs go.
    pub logs: PathBuf,
    /// A command the server runs under, e.g. `valgrind --tool=callgrind
    /// --callgrind-out-file=callgrind.{id}.out` (`{id}` becomes the node's
    /// log name).
    pub wrap: Vec<String>,
    /// Attach `perf record -g` to the nodes while they run, writing
    /// `perf-TAG.data` into the logs folder.
    pub perf: bool,
}

/// One wscluster node.
pub struct Node {
    /// The process.
    pub proc: Proc,
    /// Its WebSocket address.
    pub ws: SocketAddr,
    /// Its mesh link address (mesh engine only).
    pub link: Option<SocketAddr>,
}

/// A cluster of wscluster nodes, linked and ready.
pub struct Cluster {
    /// The nodes, `a`, `b`, `c`, …
    pub nodes: Vec<Node>,
    redis: Option<Redis>,
    perf: Option<Proc>,
}

impl Cluster {
    /// Starts `n` nodes (and a private Redis for the Redis engine) and waits
    /// until each reports ready with `n - 1` connected peers.
    pub async fn start(opts: &NodeOpts, n: usize, tag: &str) -> Result<Self> {
        let redis = match opts.engine {
            Engine::Redis => Some(Redis::start(&format!("{tag}-redis"), &opts.logs).await?),
            Engine::Mesh => None,
        };
        let mut nodes: Vec<Node> = Vec::with_capacity(n);
        for i in 0..n {
            let id = ((b'a' + i as u8) as char).to_string();
            let seed = nodes.first().and_then(|n| n.link);
            let node = start_node(opts, &id, seed, redis.as_ref(), tag).await?;
            nodes.push(node);
        }
        let mut cluster = Self { nodes, redis, perf: None };
        cluster.wait_linked(n - 1).await?;
        if opts.perf {
            cluster.perf = Some(cluster.attach_perf(&opts.logs, tag)?);
        }
        Ok(cluster)
    }

    /// WebSocket addresses of the nodes.
    pub fn addrs(&self) -> Vec<SocketAddr> {
        self.nodes.iter().map(|n| n.ws).collect()
    }

    /// Process ids of every process of the cluster (nodes and Redis).
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.nodes.iter().map(|n| n.proc.pid).collect();
        pids.extend(self.redis.as_ref().map(|r| r.proc.pid));
        pids
    }

    fn attach_perf(&self, logs: &Path, tag: &str) -> Result<Proc> {
        let pids: Vec<String> = self.nodes.iter().map(|n| n.proc.pid.to_string()).collect();
        let out = logs.join(format!("perf-{tag}.data"));
        let mut cmd = Command::new("perf");
        cmd.args(["record", "-e", "cpu-clock", "-F", "499", "-g", "-p", &pids.join(",")])
            .arg("-o")
            .arg(&out);
        eprintln!("perf: recording nodes {} into {}", pids.join(","), out.display());
        Proc::spawn(&format!("{tag}-perf"), cmd, logs)
    }

    /// Stops every node, then Redis.
    pub async fn stop(self) {
        if let Some(perf) = self.perf {
            // perf writes its file on SIGINT.
            // SAFETY: plain signal to our own child's pid.
            unsafe { libc::kill(perf.pid as i32, libc::SIGINT) };
            perf.stop().await;
        }
        for n in self.nodes {
            n.proc.stop().await;
        }
        if let Some(r) = self.redis {
            r.proc.stop().await;
        }
    }

    async fn wait_linked(&self, peers: usize) -> Result<()> {
        let deadline = Instant::now() + START_TIMEOUT;
        for node in &self.nodes {
            loop {
                let status = http_get(node.ws, "/cluster").await.unwrap_or_default();
                let v: serde_json::Value = serde_json::from_str(&status).unwrap_or_default();
                let count = v["connected_peer_count"].as_u64().unwrap_or(0) as usize;
                if v["ready"] == true && count >= peers {
                    break;
                }
                if Instant::now() > deadline {
                    bail!("{} not linked: {status}", node.proc.name);
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
        Ok(())
    }
}

async fn start_node(
    opts: &NodeOpts,
    id: &str,
    seed: Option<SocketAddr>,
    redis: Option<&Redis>,
    tag: &str,
) -> Result<Node> {
    let name = format!("{tag}-node-{id}");
    let mut cmd = match opts.wrap.split_first() {
        Some((program, args)) => {
            let mut c = Command::new(program);
            c.args(args.iter().map(|a| a.replace("{id}", &name))).arg(&opts.bin);
            c
        }
        None => Command::new(&opts.bin),
    };
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"])
        .args(["--node-id", id, "--engine", opts.engine.name(), "--log-level", "warn"])
        .args(&opts.extra);
    if let Some(seed) = seed {
        cmd.args(["--peer", &seed.to_string()]);
    }
    if let Some(r) = redis {
        cmd.args(["--redis-url", &r.url()]);
    }
    let mut proc = Proc::spawn(&name, cmd, &opts.logs)?;
    let link = match opts.engine {
        Engine::Mesh => Some(proc.wait_line("cluster-listening ").await?.parse()?),
        Engine::Redis => None,
    };
    let ws = proc.wait_line("listening ").await?.parse()?;
    Ok(Node { proc, ws, link })
}

/// A bare HTTP/1.1 GET on loopback; returns the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> Result<String> {
    let get = async {
        let mut s = TcpStream::connect(addr).await?;
        let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await?;
        let mut resp = String::new();
        s.read_to_string(&mut resp).await?;
        let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        anyhow::Ok(body.to_owned())
    };
    timeout(Duration::from_secs(2), get).await?
}
