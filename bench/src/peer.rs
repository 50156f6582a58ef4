//! The peer: Socket.IO with its Redis adapter on Node.js, and the Node.js
//! client driver, both from `bench/node/` (installed from the npm registry
//! on first use into `bench/node/node_modules`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use tokio::process::Command;

use crate::ladder::NodeLoad;
use crate::procs::{Proc, Redis};

/// `bench/node`.
pub fn node_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("node")
}

/// Installs the npm packages unless they are there already.
pub async fn ensure_installed() -> Result<()> {
    let dir = node_dir();
    if dir.join("node_modules/socket.io/package.json").exists()
        && dir.join("node_modules/@socket.io/redis-adapter/package.json").exists()
    {
        return Ok(());
    }
    eprintln!("installing the Socket.IO peer from npm into {}", dir.display());
    let verb = if dir.join("package-lock.json").exists() { "ci" } else { "install" };
    let status = Command::new("npm")
        .args([verb, "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status()
        .await
        .context("npm not found (apt-get install nodejs npm)")?;
    if !status.success() {
        bail!("npm {verb} failed in {}", dir.display());
    }
    Ok(())
}

/// A Socket.IO cluster: `n` Node.js servers sharing one private Redis.
pub struct PeerCluster {
    /// The servers.
    pub servers: Vec<(Proc, SocketAddr)>,
    redis: Redis,
}

impl PeerCluster {
    /// Starts Redis and `n` servers.
    pub async fn start(n: usize, logs: &Path, tag: &str) -> Result<Self> {
        ensure_installed().await?;
        let redis = Redis::start(&format!("{tag}-redis"), logs).await?;
        let mut servers = Vec::new();
        for i in 0..n {
            let mut cmd = Command::new("node");
            cmd.arg(node_dir().join("server.js")).env("REDIS_URL", redis.url());
            let mut p = Proc::spawn(&format!("{tag}-socketio-{i}"), cmd, logs)?;
            let addr = p.wait_line("listening ").await?.parse()?;
            servers.push((p, addr));
        }
        Ok(Self { servers, redis })
    }

    /// `http://ADDR` of each server.
    pub fn urls(&self) -> Vec<String> {
        self.servers.iter().map(|(_, a)| format!("http://{a}")).collect()
    }

    /// Process ids of the servers and Redis.
    pub fn pids(&self) -> Vec<u32> {
        let mut pids: Vec<u32> = self.servers.iter().map(|(p, _)| p.pid).collect();
        pids.push(self.redis.proc.pid);
        pids
    }

    /// Stops the servers, then Redis.
    pub async fn stop(self) {
        for (p, _) in self.servers {
            p.stop().await;
        }
        self.redis.proc.stop().await;
    }
}

/// Starts `n` driver processes.
pub async fn drivers(n: usize, logs: &Path, tag: &str) -> Result<NodeLoad> {
    let mut procs = Vec::new();
    for i in 0..n {
        let mut cmd = Command::new("node");
        cmd.arg(node_dir().join("driver.js"));
        procs.push(Proc::spawn(&format!("{tag}-driver-{i}"), cmd, logs)?);
    }
    Ok(NodeLoad { procs })
}
