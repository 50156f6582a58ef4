//! One `wscluster serve` process: start, signal, restart on the same
//! ports, and read its endpoints and logs.
//!
//! The node binds port 0 for both listeners; the ports it got are read
//! from the two lines it prints on stdout. Its stderr (the logs, at info) is
//! kept line by line so a test can wait for a log line, and is printed when
//! the test panics. Dropping a [`Node`] kills its process.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::task::JoinHandle;
use tokio::time::timeout;

use super::presence::Presence;
use super::{Client, Engine, Options, STEP, eventually, http};

/// Lines of a node's log shown when a test fails.
const LOG_TAIL: usize = 60;

/// Everything needed to start (and restart) one node.
#[derive(Debug, Clone)]
pub struct NodeSpec {
    /// `--node-id`.
    pub id: String,
    /// The engine, which decides whether a link address is printed.
    pub engine: Engine,
    /// Engine flags (`--peer ...` on the mesh).
    pub flags: Vec<String>,
    /// Per-node settings.
    pub options: Options,
}

/// A node's stderr, kept for the whole test (restarts included).
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, line: String) {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).push(line);
    }

    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn tail(&self, n: usize) -> String {
        let lines = self.lines();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

/// A running (or stopped) `wscluster` process.
pub struct Node {
    /// The node id.
    pub id: String,
    /// The WebSocket and HTTP address.
    pub ws_addr: SocketAddr,
    /// The mesh link address (`None` on engines without one).
    pub cluster_addr: Option<SocketAddr>,
    spec: NodeSpec,
    child: Option<Child>,
    log: Log,
}

/// A process that printed its addresses.
struct Launched {
    child: Child,
    ws_addr: SocketAddr,
    cluster_addr: Option<SocketAddr>,
}

impl Node {
    /// Starts a node on OS-chosen ports and waits until it is listening.
    pub async fn start(spec: NodeSpec) -> Self {
        let log = Log::default();
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        let launched = launch(&spec, any, any, &log)
            .await
            .unwrap_or_else(|e| panic!("node {} did not start: {e}", spec.id));
        Self {
            id: spec.id.clone(),
            ws_addr: launched.ws_addr,
            cluster_addr: launched.cluster_addr,
            spec,
            child: Some(launched.child),
            log,
        }
    }

    /// Whether the process was started and not yet seen to exit.
    pub fn is_running(&self) -> bool {
        self.child.is_some()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child
            .as_ref()
            .and_then(Child::id)
            .unwrap_or_else(|| panic!("node {} is not running", self.id))
    }

    /// Kills the process with SIGKILL (a crash) and reaps it.
    pub async fn kill(&mut self) {
        let mut child = self.take_child();
        child.start_kill().expect("send SIGKILL");
        timeout(STEP, child.wait())
            .await
            .unwrap_or_else(|_| panic!("node {} still running after SIGKILL", self.id))
            .expect("reap the killed node");
    }

    /// Sends SIGTERM and waits, at most `within`, for the process to exit.
    pub async fn terminate(&mut self, within: Duration) -> ExitStatus {
        self.signal("TERM");
        let mut child = self.take_child();
        match timeout(within, child.wait()).await {
            Ok(status) => status.expect("reap the terminated node"),
            Err(_) => panic!(
                "node {} did not exit within {within:?} of SIGTERM; log:\n{}",
                self.id,
                self.log.tail(LOG_TAIL)
            ),
        }
    }

    /// Stops the process with SIGSTOP: it keeps its sockets open but says
    /// nothing, like a node cut off by the network.
    pub fn freeze(&self) {
        self.signal("STOP");
    }

    /// Resumes a frozen process with SIGCONT.
    pub fn thaw(&self) {
        self.signal("CONT");
    }

    /// Starts the process again with the same id, options and ports.
    pub async fn restart(&mut self) {
        assert!(self.child.is_none(), "node {} is still running", self.id);
        self.log.push("----- test harness: restart -----".into());
        let cluster = self.cluster_addr.unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 0)));

        // The old sockets may linger a moment after the kill; retry briefly.
        let (ws, log, spec) = (self.ws_addr, self.log.clone(), self.spec.clone());
        let launched = eventually("the node to restart on its old ports", STEP, || {
            let (log, spec) = (log.clone(), spec.clone());
            async move { launch(&spec, ws, cluster, &log).await }
        })
        .await;
        assert_eq!(launched.ws_addr, self.ws_addr, "same websocket port");
        assert_eq!(launched.cluster_addr, self.cluster_addr, "same link port");
        self.child = Some(launched.child);
    }

    /// A connected WebSocket client whose session message was read.
    pub async fn client(&self) -> Client {
        Client::connect(self.ws_addr, &self.id).await
    }

    /// A connected presence client whose session message was read;
    /// `label` names it in failures.
    pub async fn presence(&self, label: &str) -> Presence {
        Presence::connect(self.ws_addr, &format!("{label} on {}", self.id)).await
    }

    /// `GET /cluster`, parsed.
    pub async fn status(&self) -> Value {
        self.try_status().await.unwrap_or_else(|e| panic!("node {}: {e}", self.id))
    }

    /// `GET /cluster`, parsed, or what went wrong.
    pub async fn try_status(&self) -> Result<Value, String> {
        let (code, body) = http::get(self.ws_addr, "/cluster").await?;
        if code != 200 {
            return Err(format!("/cluster answered {code}: {body}"));
        }
        serde_json::from_str(&body).map_err(|e| format!("/cluster is not json ({e}): {body}"))
    }

    /// The status code of `GET /readyz`.
    pub async fn readyz(&self) -> u16 {
        let (code, _) = http::get(self.ws_addr, "/readyz")
            .await
            .unwrap_or_else(|e| panic!("node {}: {e}", self.id));
        code
    }

    /// Waits until `/cluster` satisfies `accept`, and returns that document.
    pub async fn wait_status(
        &self,
        what: &str,
        within: Duration,
        accept: impl Fn(&Value) -> bool,
    ) -> Value {
        let what = format!("node {}: {what}", self.id);
        eventually(&what, within, || async {
            let status = self.try_status().await?;
            if accept(&status) { Ok(status) } else { Err(status.to_string()) }
        })
        .await
    }

    /// Waits until the node is ready and linked to exactly `peers` others.
    pub async fn wait_peer_count(&self, peers: usize, within: Duration) -> Value {
        let what = format!("ready with {peers} connected peers");
        self.wait_status(&what, within, |s| {
            s["ready"] == true && s["connected_peer_count"] == peers
        })
        .await
    }

    /// Every log line so far, oldest first.
    pub fn log_lines(&self) -> Vec<String> {
        self.log.lines()
    }

    /// The log lines that contain every one of `needles`.
    pub fn log_matching(&self, needles: &[&str]) -> Vec<String> {
        self.log.lines().into_iter().filter(|l| needles.iter().all(|n| l.contains(n))).collect()
    }

    /// Waits until a log line contains every one of `needles`; returns it.
    pub async fn wait_log(&self, needles: &[&str], within: Duration) -> String {
        let what = format!("node {} to log a line with {needles:?}", self.id);
        eventually(&what, within, || async {
            self.log_matching(needles)
                .into_iter()
                .next()
                .ok_or_else(|| format!("log tail:\n{}", self.log.tail(10)))
        })
        .await
    }

    fn take_child(&mut self) -> Child {
        self.child.take().unwrap_or_else(|| panic!("node {} is not running", self.id))
    }

    fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .args(["-s", name, &self.pid().to_string()])
            .status()
            .expect("run kill(1)");
        assert!(status.success(), "kill -s {name} {} failed", self.pid());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "----- node {} log (last {LOG_TAIL} lines) -----\n{}",
                self.id,
                self.log.tail(LOG_TAIL)
            );
        }
        if let Some(child) = &mut self.child {
            // SIGKILL also ends a frozen process; kill_on_drop reaps it.
            let _ = child.start_kill();
        }
    }
}

/// Spawns the binary and reads the addresses it prints.
async fn launch(
    spec: &NodeSpec,
    listen: SocketAddr,
    cluster_listen: SocketAddr,
    log: &Log,
) -> Result<Launched, String> {
    let mut child = command(spec, listen, cluster_listen)
        .spawn()
        .map_err(|e| format!("cannot spawn the wscluster binary: {e}"))?;
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout = child.stdout.take().expect("piped stdout");
    let log_task = tokio::spawn(keep_log(stderr, log.clone()));

    match timeout(STEP, read_addresses(stdout, spec.engine)).await {
        Ok(Ok((ws_addr, cluster_addr))) => Ok(Launched { child, ws_addr, cluster_addr }),
        Ok(Err(why)) => Err(exited(child, log_task, log, &why).await),
        Err(_) => {
            let _ = child.start_kill();
            Err(format!("no listening lines within {STEP:?}; log:\n{}", log.tail(LOG_TAIL)))
        }
    }
}

fn command(spec: &NodeSpec, listen: SocketAddr, cluster_listen: SocketAddr) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wscluster"));
    // A clean environment: WSCLUSTER_* or RUST_LOG of the caller must not
    // change what the test starts.
    cmd.env_clear();
    if let Ok(v) = std::env::var("RUST_BACKTRACE") {
        cmd.env("RUST_BACKTRACE", v);
    }
    cmd.arg("serve")
        .args(["--node-id", &spec.id])
        .args(["--listen", &listen.to_string()])
        .args(["--cluster-listen", &cluster_listen.to_string()])
        .args(["--log-level", "info"])
        .args(&spec.flags);
    if let Some(secret) = &spec.options.secret {
        cmd.args(["--cluster-secret", secret]);
    }
    if let Some(ms) = spec.options.failure_timeout_ms {
        cmd.args(["--failure-timeout-ms", &ms.to_string()]);
    }
    cmd.envs(spec.options.env.iter().map(|(k, v)| (k, v)));
    cmd.args(&spec.options.extra)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    cmd
}

/// Reads `listening ADDR` and, on the mesh, `cluster-listening ADDR`, in
/// either order; then keeps draining stdout in the background.
async fn read_addresses(
    stdout: ChildStdout,
    engine: Engine,
) -> Result<(SocketAddr, Option<SocketAddr>), String> {
    let want_link = engine == Engine::Mesh;
    let mut lines = BufReader::new(stdout).lines();
    let (mut ws, mut link) = (None, None);
    while ws.is_none() || (want_link && link.is_none()) {
        let line = match lines.next_line().await {
            Ok(Some(line)) => line,
            Ok(None) => return Err("stdout closed before the listening lines".into()),
            Err(e) => return Err(format!("cannot read stdout: {e}")),
        };
        if let Some(addr) = line.strip_prefix("cluster-listening ") {
            link = Some(parse_addr(addr)?);
        } else if let Some(addr) = line.strip_prefix("listening ") {
            ws = Some(parse_addr(addr)?);
        }
    }
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok((ws.unwrap_or_else(|| unreachable!()), link))
}

fn parse_addr(text: &str) -> Result<SocketAddr, String> {
    text.trim().parse().map_err(|e| format!("bad address {text:?} on stdout: {e}"))
}

async fn keep_log(stderr: tokio::process::ChildStderr, log: Log) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        log.push(strip_ansi(&line));
    }
}

/// Removes the colour escapes (`ESC [ ... letter`) of the text log format,
/// so tests can match `field=value`.
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            chars.by_ref().find(char::is_ascii_alphabetic);
        } else {
            out.push(c);
        }
    }
    out
}

/// Describes a process that ended before it was listening.
async fn exited(mut child: Child, log_task: JoinHandle<()>, log: &Log, why: &str) -> String {
    let status = match timeout(STEP, child.wait()).await {
        Ok(Ok(s)) => s.to_string(),
        _ => {
            let _ = child.start_kill();
            "still running".to_owned()
        }
    };
    let _ = timeout(Duration::from_secs(1), log_task).await;
    format!("{why} ({status}); log:\n{}", log.tail(LOG_TAIL))
}
