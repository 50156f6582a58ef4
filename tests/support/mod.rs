//! Support for the multi-process cluster tests (`tests/cluster_*.rs`).
//!
//! Every test starts real `wscluster` processes on OS-chosen ports
//! ([`Node`]), groups them into a [`Cluster`] on one backplane [`Engine`],
//! talks to them with a WebSocket [`Client`] and reads their state over
//! plain HTTP ([`http`]). Every wait has a deadline and fails the test with
//! what it waited for and what it saw last; every process is killed when
//! its [`Node`] is dropped, panics included.
//!
//! Test bodies take an [`Engine`] so the same scenario runs on every
//! backplane: [`engine_tests!`] turns each body into one `#[tokio::test]`
//! per engine, in a module named after it (`mesh::...`, `redis::...`); on
//! Redis, [`redis::RedisServer`] starts a private `redis-server` per test.

// Each test crate compiles this module and uses a different subset of it.
#![allow(dead_code)]

pub mod client;
pub mod gate;
pub mod http;
pub mod node;
pub mod presence;
pub mod proxy;
pub mod redis;

use std::future::Future;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::Value;

pub use client::Client;
pub use node::{Node, NodeSpec};

/// The longest a single step (a reply, a delivery, a process start) may
/// take before the test fails.
pub const STEP: Duration = Duration::from_secs(5);

/// How long a cluster may take to link up and report ready.
pub const CONVERGE: Duration = Duration::from_secs(10);

/// How long "nothing more arrives" is watched for: far more than a
/// delivery across loopback takes, short enough to keep the suite fast.
pub const SILENCE: Duration = Duration::from_millis(300);

/// The backplane a test cluster runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// Nodes link directly; each joins through the first node as its seed.
    Mesh,
    /// Every node meets on a private `redis-server` the test starts.
    Redis,
}

impl Engine {
    /// The engine's name in `/cluster`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mesh => "mesh",
            Self::Redis => "redis",
        }
    }
}

/// What an engine needs running besides the nodes themselves.
enum Backplane {
    /// Nothing: the nodes are the backplane.
    Mesh,
    /// A `redis-server` child on a free port, killed on drop, so every
    /// test gets its own Redis.
    Redis(Box<redis::RedisServer>),
}

impl Backplane {
    async fn start(engine: Engine) -> Self {
        match engine {
            Engine::Mesh => Self::Mesh,
            Engine::Redis => Self::Redis(Box::new(redis::RedisServer::start().await)),
        }
    }

    /// The flags that put a new node on this backplane; `seed` is the link
    /// address of the cluster's first node, if it has one yet.
    fn node_flags(&self, seed: Option<SocketAddr>) -> Vec<String> {
        match self {
            Self::Redis(server) => vec![
                "--engine".into(),
                "redis".into(),
                "--redis-url".into(),
                format!("redis://{}/", server.addr()),
            ],
            Self::Mesh => {
                seed.map(|s| vec!["--peer".to_owned(), s.to_string()]).unwrap_or_default()
            }
        }
    }
}

/// Per-node settings a test may change from the defaults.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `--cluster-secret`.
    pub secret: Option<String>,
    /// `--failure-timeout-ms`.
    pub failure_timeout_ms: Option<u64>,
    /// Any further flags, passed as given.
    pub extra: Vec<String>,
    /// Environment variables (`WSCLUSTER_...`) for the process, which
    /// otherwise starts with an empty environment.
    pub env: Vec<(String, String)>,
}

/// Several nodes on one backplane.
pub struct Cluster {
    /// The engine the nodes run.
    pub engine: Engine,
    // Declared before the backplane so nodes stop before their Redis does.
    nodes: Vec<Node>,
    backplane: Backplane,
}

impl Cluster {
    /// Starts one node per id with default options and waits until every
    /// node is ready and linked to all the others.
    pub async fn start(engine: Engine, ids: &[&str]) -> Self {
        Self::start_with(engine, ids, Options::default()).await
    }

    /// Like [`Cluster::start`], with `options` for every node.
    pub async fn start_with(engine: Engine, ids: &[&str], options: Options) -> Self {
        let mut cluster =
            Self { engine, nodes: Vec::new(), backplane: Backplane::start(engine).await };
        for id in ids {
            let spec = cluster.spec(id, options.clone());
            cluster.add(spec).await;
        }
        cluster.wait_converged().await;
        cluster
    }

    /// How to start one more node that joins this cluster (through the
    /// first node, on the mesh). Tests may change the spec before
    /// [`Cluster::add`].
    pub fn spec(&self, id: &str, options: Options) -> NodeSpec {
        let seed = self.nodes.first().and_then(|n| n.cluster_addr);
        NodeSpec {
            id: id.to_owned(),
            engine: self.engine,
            flags: self.backplane.node_flags(seed),
            options,
        }
    }

    /// Starts a node and adds it to the cluster, without waiting for it to
    /// link.
    pub async fn add(&mut self, spec: NodeSpec) -> &mut Node {
        let node = Node::start(spec).await;
        self.nodes.push(node);
        self.nodes.last_mut().unwrap_or_else(|| unreachable!())
    }

    /// The node named `id`.
    pub fn node(&self, id: &str) -> &Node {
        self.nodes
            .iter()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id:?} in this cluster"))
    }

    /// The node named `id`, to signal or restart it.
    pub fn node_mut(&mut self, id: &str) -> &mut Node {
        self.nodes
            .iter_mut()
            .find(|n| n.id == id)
            .unwrap_or_else(|| panic!("no node {id:?} in this cluster"))
    }

    /// The private Redis the nodes meet on (`None` on the mesh), for tests
    /// that put something between a node and it.
    pub fn redis_addr(&self) -> Option<SocketAddr> {
        match &self.backplane {
            Backplane::Redis(server) => Some(server.addr()),
            Backplane::Mesh => None,
        }
    }

    /// Every node, in start order.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// Waits until every running node reports ready and linked to every
    /// other running node.
    pub async fn wait_converged(&self) {
        let running: Vec<&Node> = self.nodes.iter().filter(|n| n.is_running()).collect();
        let others = running.len().saturating_sub(1);
        for node in &running {
            node.wait_peer_count(others, CONVERGE).await;
        }
    }
}

/// Polls `probe` until it returns `Ok`, at most `within`; then fails the
/// test naming `what` and the last thing `probe` reported. For state that
/// can only be observed by asking (HTTP endpoints, logs).
pub async fn eventually<T, F, Fut>(what: &str, within: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        let last = match probe().await {
            Ok(value) => return value,
            Err(last) => last,
        };
        if start.elapsed() >= within {
            panic!("timed out after {within:?} waiting for {what}; last seen: {last}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The ids of the peers a `/cluster` document lists as connected.
pub fn connected_ids(status: &Value) -> Vec<String> {
    let mut ids: Vec<String> = status["peers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["state"] == "connected")
        .filter_map(|p| p["id"].as_str().map(str::to_owned))
        .collect();
    ids.sort();
    ids
}

/// Microseconds since the Unix epoch; the clock every process on this
/// machine shares, for latencies measured across processes.
pub fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_micros() as u64)
}

/// The value at quantile `q` (0.0 to 1.0) of `sorted`, nearest rank.
pub fn quantile(sorted: &[u64], q: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

/// Declares one `#[tokio::test]` per engine for each named test body, an
/// `async fn(Engine)` in the calling file: `mesh::name`, later
/// `redis::name`.
macro_rules! engine_tests {
    ($($name:ident),* $(,)?) => {
        mod mesh {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Engine::Mesh).await;
                }
            )*
        }
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name(crate::support::Engine::Redis).await;
                }
            )*
        }
    };
}
