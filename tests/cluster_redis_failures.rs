//! The Redis engine when Redis fails, and large messages on both engines.
//!
//! Each Redis test starts its own `redis-server` on a free port and two
//! nodes, a and b, on it; then Redis goes away (stopped, frozen, its
//! subscriber connections killed, or unreachable through a gate), refuses a
//! password, or is not there yet. The rules pinned down
//! (`shared/spec/cluster.md`, `shared/cases/deaf-subscriber.md`): a node
//! never reports ready while it cannot hear, publications keep reaching
//! local subscribers meanwhile, and it recovers by itself. The last test is
//! `shared/cases/large-messages.md`, on the mesh and on Redis.

#[macro_use]
mod support;

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::client::{Client, event, publish};
use support::gate::Gate;
use support::redis::{RedisServer, Reply, free_port};
use support::{CONVERGE, Cluster, Engine, Node, NodeSpec, Options, SILENCE, STEP, http};
use tokio::task::JoinHandle;

engine_tests!(a_large_message_burst_never_cuts_a_node_off);

/// Longer than the engine's longest backoff (2 s) plus its connect timeout
/// (2 s): whatever retry budget there is, it is spent.
const REDIS_OUTAGE: Duration = Duration::from_secs(5);

/// The default `--max-message-size`.
const MAX_MESSAGE: usize = 1 << 20;

const API_KEY: &str = "test-api-key";

/// A node on the Redis engine, reaching Redis at `url`.
fn redis_node(id: &str, url: &str, options: Options) -> NodeSpec {
    NodeSpec {
        id: id.to_owned(),
        engine: Engine::Redis,
        flags: vec!["--engine".into(), "redis".into(), "--redis-url".into(), url.to_owned()],
        options,
    }
}

/// Two nodes, a and b, on one private Redis. Nodes are declared before
/// Redis so they stop first.
struct Pair {
    a: Node,
    b: Node,
    redis: RedisServer,
}

impl Pair {
    async fn start() -> Self {
        let redis = RedisServer::start().await;
        Self::start_on(redis, None, Options::default()).await
    }

    /// a reaches Redis at `a_url` (through a gate, say) when given.
    async fn start_on(redis: RedisServer, a_url: Option<String>, options: Options) -> Self {
        let url = redis.url();
        let a_url = a_url.as_deref().unwrap_or(&url);
        let a = Node::start(redis_node("a", a_url, options.clone())).await;
        let b = Node::start(redis_node("b", &url, options)).await;
        a.wait_peer_count(1, CONVERGE).await;
        b.wait_peer_count(1, CONVERGE).await;
        Self { a, b, redis }
    }
}

/// Polls `/readyz` of a node as fast as it answers, in the background,
/// keeping every answer with the time it was asked.
struct ReadyWatch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<Vec<(Instant, u16)>>,
}

impl ReadyWatch {
    fn start(node: &Node) -> Self {
        let (addr, stop) = (node.ws_addr, Arc::new(AtomicBool::new(false)));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let mut seen = Vec::new();
            while !flag.load(Ordering::SeqCst) {
                let asked = Instant::now();
                let code = http::get(addr, "/readyz").await.map_or(0, |(code, _)| code);
                seen.push((asked, code));
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            seen
        });
        Self { stop, task }
    }

    async fn finish(self) -> Vec<(Instant, u16)> {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("readiness watch")
    }
}

/// Waits until `node` answers `/readyz` with `code`.
async fn wait_readyz(node: &Node, code: u16, within: Duration) {
    let what = format!("node {} to answer /readyz {code}", node.id);
    support::eventually(&what, within, || async {
        match http::get(node.ws_addr, "/readyz").await {
            Ok((got, _)) if got == code => Ok(()),
            Ok((got, body)) => Err(format!("{got} {body}")),
            Err(e) => Err(e),
        }
    })
    .await;
}

/// Asserts every `/readyz` answer of `node` is 503 for `span`.
async fn assert_unready_for(node: &Node, span: Duration) {
    let end = Instant::now() + span;
    let mut polls = 0;
    while Instant::now() < end {
        let code = node.readyz().await;
        assert_eq!(code, 503, "node {} reported ready while cut off from Redis", node.id);
        polls += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(polls > 0);
}

/// `publisher` sends m2..m11 on `channel`; `subscriber` must get exactly
/// those, in order, and nothing more.
async fn m2_to_m11_arrive(publisher: &mut Client, subscriber: &mut Client, channel: &str) {
    for i in 2..=11 {
        publisher.publish(channel, &format!("m{i}")).await;
    }
    for i in 2..=11 {
        subscriber.expect(&event(channel, &format!("m{i}"))).await;
    }
    subscriber.expect_silence(SILENCE).await;
}

// ----------------------------------------------------------------- outage

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_down_longer_than_any_retry_budget_makes_nodes_unready_then_delivery_resumes() {
    let mut pair = Pair::start().await;
    let mut on_a = pair.a.client().await;
    let mut local = pair.a.client().await;
    let mut on_b = pair.b.client().await;
    on_b.subscribe("news").await;
    local.subscribe("local").await;
    on_a.publish("news", "before").await;
    on_b.expect(&event("news", "before")).await;

    pair.redis.stop().await;
    let stopped = Instant::now();
    for node in [&pair.a, &pair.b] {
        wait_readyz(node, 503, Duration::from_secs(2)).await;
    }
    eprintln!("both nodes unready {:?} after redis stopped", stopped.elapsed());

    // Local delivery goes on while the backplane is away.
    on_a.publish("local", "during").await;
    local.expect(&event("local", "during")).await;
    for node in [&pair.a, &pair.b] {
        let status = node.status().await;
        assert_eq!(status["ready"], false, "node {}: {status}", node.id);
    }
    let left = REDIS_OUTAGE.saturating_sub(stopped.elapsed());
    let (a, b) = (&pair.a, &pair.b);
    tokio::join!(assert_unready_for(a, left), assert_unready_for(b, left));

    pair.redis.restart().await;
    let restarted = Instant::now();
    pair.a.wait_peer_count(1, CONVERGE).await;
    pair.b.wait_peer_count(1, CONVERGE).await;
    eprintln!("both nodes ready and linked {:?} after redis restarted", restarted.elapsed());
    assert_eq!(pair.a.readyz().await, 200);
    assert_eq!(pair.b.readyz().await, 200);

    // Both directions, without anyone touching the nodes.
    on_a.publish("news", "after").await;
    on_b.expect(&event("news", "after")).await;
    on_b.publish("local", "from b").await;
    local.expect(&event("local", "from b")).await;
    on_b.expect_silence(SILENCE).await;
}

// ----------------------------------------------------------------- deaf subscriber

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_subscriptions_keep_a_unready_while_redis_is_frozen_then_a_hears_m2_to_m11() {
    let pair = Pair::start().await;
    let mut x = pair.a.client().await;
    let mut y = pair.b.client().await;
    x.subscribe("room:1").await;
    y.publish("room:1", "m1").await;
    x.expect(&event("room:1", "m1")).await;

    // Kill every subscriber connection, then freeze Redis before the nodes
    // can subscribe again: they cannot hear until it is thawed.
    let killed = pair.redis.command(&["CLIENT", "KILL", "TYPE", "pubsub"]).await;
    pair.redis.freeze();
    assert_eq!(killed, Ok(Reply::Integer(2)), "one subscriber connection per node");

    wait_readyz(&pair.a, 503, Duration::from_secs(2)).await;
    let watch = ReadyWatch::start(&pair.a);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    pair.redis.thaw();
    let thawed = Instant::now();
    // Answers asked before the thaw must all be 503.
    let seen = watch.finish().await;
    let before_thaw: Vec<u16> =
        seen.iter().filter(|(at, _)| *at < thawed).map(|(_, code)| *code).collect();
    assert!(before_thaw.len() > 10, "too few polls: {}", before_thaw.len());
    assert!(
        before_thaw.iter().all(|&c| c == 503),
        "a reported ready while frozen: {before_thaw:?}"
    );

    pair.a.wait_peer_count(1, CONVERGE).await;
    pair.b.wait_peer_count(1, CONVERGE).await;
    eprintln!("a ready again {:?} after the thaw", thawed.elapsed());
    pair.a.wait_log(&["redis subscription lost"], STEP).await;
    m2_to_m11_arrive(&mut y, &mut x, "room:1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_silent_redis_makes_nodes_unready_within_the_failure_timeout_and_they_recover() {
    // Frozen, Redis keeps every connection open: nothing tells the nodes
    // but their own probes not coming back.
    let failure_timeout = Duration::from_millis(1000);
    let options = Options {
        failure_timeout_ms: Some(failure_timeout.as_millis() as u64),
        ..Options::default()
    };
    let redis = RedisServer::start().await;
    let pair = Pair::start_on(redis, None, options).await;
    let mut x = pair.a.client().await;
    let mut y = pair.b.client().await;
    x.subscribe("room:1").await;
    y.publish("room:1", "m1").await;
    x.expect(&event("room:1", "m1")).await;

    pair.redis.freeze();
    let frozen = Instant::now();
    // The probe goes out every third of the timeout; allow that and polling.
    let bound = failure_timeout + failure_timeout / 3 + Duration::from_millis(500);
    for node in [&pair.a, &pair.b] {
        wait_readyz(node, 503, bound.saturating_sub(frozen.elapsed())).await;
    }
    eprintln!("both nodes unready {:?} after redis froze", frozen.elapsed());
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(pair.a.readyz().await, 503, "still deaf, still unready");

    pair.redis.thaw();
    let thawed = Instant::now();
    pair.a.wait_peer_count(1, CONVERGE).await;
    pair.b.wait_peer_count(1, CONVERGE).await;
    eprintln!("both ready and linked {:?} after the thaw", thawed.elapsed());
    m2_to_m11_arrive(&mut y, &mut x, "room:1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_as_subscriber_killed_a_recovers_b_stays_ready_and_x_hears_m2_to_m11() {
    let pair = Pair::start().await;
    let mut x = pair.a.client().await;
    let mut y = pair.b.client().await;
    x.subscribe("room:1").await;
    y.publish("room:1", "m1").await;
    x.expect(&event("room:1", "m1")).await;

    let id = subscriber_client_id(&pair.redis, pair.a.pid()).await;
    let (watch_a, watch_b) = (ReadyWatch::start(&pair.a), ReadyWatch::start(&pair.b));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed = pair.redis.command(&["CLIENT", "KILL", "ID", &id.to_string()]).await;
    assert_eq!(killed, Ok(Reply::Integer(1)), "a's subscriber connection killed");
    let kill_time = Instant::now();

    pair.a.wait_log(&["redis subscription lost"], STEP).await;
    pair.a.wait_peer_count(1, CONVERGE).await;
    let recovered = kill_time.elapsed();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let (seen_a, seen_b) = (watch_a.finish().await, watch_b.finish().await);

    let a_unready = seen_a.iter().filter(|(at, c)| *at > kill_time && *c == 503).count();
    eprintln!(
        "a ready again {recovered:?} after the kill; {} of {} polls of a after the kill saw 503",
        a_unready,
        seen_a.iter().filter(|(at, _)| *at > kill_time).count()
    );
    let b_codes: HashSet<u16> = seen_b.iter().map(|(_, c)| *c).collect();
    assert_eq!(b_codes, HashSet::from([200]), "b's readiness while a's subscription was killed");
    m2_to_m11_arrive(&mut y, &mut x, "room:1").await;
}

/// Redis's id for the subscriber connection of the process `pid`: the
/// client in `CLIENT LIST` with flag `P` whose port is one of the
/// process's sockets.
async fn subscriber_client_id(redis: &RedisServer, pid: u32) -> u64 {
    let ports = local_ports(pid, redis.addr().port());
    let mut found = Vec::new();
    for client in redis.clients().await {
        let field = |k: &str| client.iter().find(|(n, _)| n == k).map(|(_, v)| v.as_str());
        let port = field("addr").and_then(|a| a.rsplit_once(':')).and_then(|(_, p)| p.parse().ok());
        let subscriber = field("flags").is_some_and(|f| f.contains('P'));
        if subscriber && port.is_some_and(|p: u16| ports.contains(&p)) {
            found.push(field("id").and_then(|i| i.parse::<u64>().ok()).expect("client id"));
        }
    }
    assert_eq!(found.len(), 1, "subscriber connections of pid {pid} (ports {ports:?})");
    found[0]
}

/// The local ports of the TCP sockets process `pid` holds to `remote_port`
/// on loopback, read from `/proc`.
fn local_ports(pid: u32, remote_port: u16) -> HashSet<u16> {
    let mut inodes = HashSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).expect("read /proc/PID/fd").flatten() {
        let Ok(target) = std::fs::read_link(fd.path()) else { continue };
        let target = target.to_string_lossy().into_owned();
        if let Some(inode) = target.strip_prefix("socket:[").and_then(|t| t.strip_suffix(']')) {
            inodes.insert(inode.to_owned());
        }
    }
    let table = std::fs::read_to_string("/proc/net/tcp").expect("read /proc/net/tcp");
    let port_of =
        |addr: &str| addr.rsplit_once(':').and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let (local, remote, inode) = (cols.get(1)?, cols.get(2)?, cols.get(9)?);
            (port_of(remote)? == remote_port && inodes.contains(*inode)).then(|| port_of(local))?
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_redis_connections_fail_for_a_while_stays_unready_then_hears_m2_to_m11() {
    let redis = RedisServer::start().await;
    let gate = Gate::start(redis.addr()).await;
    let a_url = Some(format!("redis://{}/", gate.addr()));
    let pair = Pair::start_on(redis, a_url, Options::default()).await;
    let mut x = pair.a.client().await;
    let mut y = pair.b.client().await;
    x.subscribe("room:1").await;
    y.publish("room:1", "m1").await;
    x.expect(&event("room:1", "m1")).await;

    // Cut a's connections and fail its next attempts (at least three).
    gate.shut();
    let shut = Instant::now();
    wait_readyz(&pair.a, 503, Duration::from_secs(2)).await;
    let deadline = Instant::now() + Duration::from_secs(8);
    while gate.refused() < 3 {
        assert!(Instant::now() < deadline, "a made only {} attempts", gate.refused());
        assert_eq!(pair.a.readyz().await, 503, "a reported ready while its attempts fail");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(pair.a.readyz().await, 503);
    eprintln!("a failed {} connection attempts in {:?}", gate.refused(), shut.elapsed());
    assert_eq!(pair.b.readyz().await, 200, "b reaches redis directly");

    gate.open();
    let opened = Instant::now();
    pair.a.wait_peer_count(1, CONVERGE).await;
    pair.b.wait_peer_count(1, CONVERGE).await;
    eprintln!("a ready again {:?} after the gate opened", opened.elapsed());
    m2_to_m11_arrive(&mut y, &mut x, "room:1").await;
}

// ----------------------------------------------------------------- auth and start-up

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_with_the_password_relay_and_a_wrong_password_stays_unready_and_is_never_logged() {
    const PASSWORD: &str = "Pa55-right-7c1e9a";
    const WRONG: &str = "Pa55-wrong-3f0b2d";
    let redis = RedisServer::start_with_password(PASSWORD).await;
    assert!(redis.url().contains(PASSWORD));
    let pair = Pair::start_on(redis, None, Options::default()).await;
    let mut on_a = pair.a.client().await;
    let mut on_b = pair.b.client().await;
    on_b.subscribe("secure").await;
    on_a.publish("secure", "through auth").await;
    on_b.expect(&event("secure", "through auth")).await;

    let wrong_url = format!("redis://:{WRONG}@{}/", pair.redis.addr());
    let bare_url = format!("redis://{}/", pair.redis.addr());
    let wrong = Node::start(redis_node("wrong", &wrong_url, Options::default())).await;
    let bare = Node::start(redis_node("bare", &bare_url, Options::default())).await;
    wrong.wait_log(&["redis"], STEP).await;
    // Long enough for several attempts (backoff starts at 100 ms).
    tokio::join!(
        assert_unready_for(&wrong, Duration::from_secs(2)),
        assert_unready_for(&bare, Duration::from_secs(2))
    );
    for node in [&wrong, &bare] {
        let status = node.status().await;
        assert_eq!(status["ready"], false, "{status}");
        assert_eq!(status["connected_peer_count"], 0, "{status}");
        assert!(!status.to_string().contains(WRONG), "/cluster shows the password: {status}");
    }
    let warned = wrong.log_matching(&["redis", "WARN"]);
    assert!(!warned.is_empty(), "the refused node should warn about redis");
    eprintln!("wrong password logged as: {}", warned[0]);

    for node in [&pair.a, &pair.b, &wrong, &bare] {
        let leaks: Vec<String> = node
            .log_lines()
            .into_iter()
            .filter(|l| l.contains(PASSWORD) || l.contains(WRONG))
            .collect();
        assert!(leaks.is_empty(), "node {} logged a password: {leaks:?}", node.id);
    }
    // The nodes with the password did not notice the refused ones.
    assert_eq!(pair.a.status().await["connected_peer_count"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_before_redis_keeps_trying_and_is_ready_when_redis_appears() {
    let addr = free_port().await;
    let url = format!("redis://{addr}/");
    // Retries after the first are logged at debug (an outage warns once a
    // minute, not on every retry): turn that on to count them.
    let debug = vec![("RUST_LOG".to_owned(), "info,wscluster::cluster::redis=debug".to_owned())];
    let a = Node::start(redis_node("a", &url, Options { env: debug, ..Options::default() })).await;
    a.wait_log(&["redis subscription unavailable"], STEP).await;
    // Past the longest backoff: it must still be trying.
    assert_unready_for(&a, Duration::from_secs(3)).await;
    let attempts = a.log_matching(&["redis subscription", "unavailable"]).len();
    assert!(attempts >= 3, "only {attempts} attempts logged in 3 s");

    let redis = RedisServer::start_on(addr, None).await;
    let appeared = Instant::now();
    a.wait_peer_count(0, Duration::from_secs(5)).await;
    eprintln!(
        "a ready {:?} after redis appeared ({attempts} failed attempts before)",
        appeared.elapsed()
    );
    assert_eq!(a.readyz().await, 200);

    let b = Node::start(redis_node("b", &redis.url(), Options::default())).await;
    a.wait_peer_count(1, CONVERGE).await;
    b.wait_peer_count(1, CONVERGE).await;
    let mut on_a = a.client().await;
    let mut on_b = b.client().await;
    on_a.subscribe("to-a").await;
    on_b.publish("to-a", "hello a").await;
    on_a.expect(&event("to-a", "hello a")).await;
    drop((a, b));
    drop(redis);
}

// ----------------------------------------------------------------- large messages

/// Watches `/cluster` of every node in the background and keeps what was
/// wrong: a node not ready, or not counting every other node.
struct HealthWatch {
    stop: Arc<AtomicBool>,
    task: JoinHandle<(usize, Vec<String>)>,
}

impl HealthWatch {
    fn start(cluster: &Cluster) -> Self {
        let nodes: Vec<(String, std::net::SocketAddr)> =
            cluster.nodes().iter().map(|n| (n.id.clone(), n.ws_addr)).collect();
        let others = nodes.len() - 1;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let task = tokio::spawn(async move {
            let (mut polls, mut bad) = (0, Vec::new());
            while !flag.load(Ordering::SeqCst) {
                for (id, addr) in &nodes {
                    let seen = match http::get(*addr, "/cluster").await {
                        Ok((200, body)) => serde_json::from_str::<Value>(&body).ok(),
                        _ => None,
                    };
                    polls += 1;
                    match seen {
                        Some(s) if s["ready"] == true && s["connected_peer_count"] == others => {}
                        Some(s) => bad.push(format!(
                            "{id}: ready {} peers {}",
                            s["ready"], s["connected_peer_count"]
                        )),
                        None => bad.push(format!("{id}: no /cluster answer")),
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            (polls, bad)
        });
        Self { stop, task }
    }

    async fn finish(self) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::SeqCst);
        self.task.await.expect("health watch")
    }
}

/// An `sgc@publish` of exactly `size` bytes on the wire.
fn publish_of_size(channel: &str, tag: &str, size: usize) -> String {
    let bare = publish(channel, tag, None).to_string();
    let padded = format!("{tag}{}", "x".repeat(size - bare.len()));
    let text = publish(channel, &padded, None).to_string();
    assert_eq!(text.len(), size);
    text
}

/// An API publish body of exactly `size` bytes.
fn api_body_of_size(channel: &str, tag: &str, size: usize) -> String {
    let bare = json!({"channel": channel, "message": tag}).to_string();
    let padded = format!("{tag}{}", "x".repeat(size - bare.len()));
    let text = json!({"channel": channel, "message": padded}).to_string();
    assert_eq!(text.len(), size);
    text
}

async fn api_publish(node: &Node, body: &str) -> (u16, String) {
    let auth = format!("apikey {API_KEY}");
    http::request(
        node.ws_addr,
        "POST",
        "/api/publish",
        &[("Authorization", &auth)],
        body.as_bytes(),
    )
    .await
    .unwrap_or_else(|e| panic!("POST /api/publish on {}: {e}", node.id))
}

/// The message of the next event `client` gets, which must be on `big`.
async fn next_big(client: &mut Client) -> String {
    let v = client.recv().await;
    assert_eq!(v["result"]["method"], "sgc@event", "{}", abbreviated(&v));
    assert_eq!(v["result"]["channel"], "big");
    v["result"]["message"].as_str().expect("a string message").to_owned()
}

fn abbreviated(v: &Value) -> String {
    let text = v.to_string();
    if text.len() > 200 { format!("{}... ({} bytes)", &text[..200], text.len()) } else { text }
}

/// Peak resident memory of a process, in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0);
    kib / 1024
}

const BURST: usize = 1000;
const BURST_SIZE: usize = 100 * 1024;

async fn a_large_message_burst_never_cuts_a_node_off(engine: Engine) {
    let options = Options { extra: vec!["--api-key".into(), API_KEY.into()], ..Options::default() };
    let cluster = Cluster::start_with(engine, &["a", "b"], options).await;
    let (a, b) = (cluster.node("a"), cluster.node("b"));
    let mut subscriber = b.client().await;
    subscriber.subscribe("big").await;
    let health = HealthWatch::start(&cluster);

    // One byte over the maximum: refused where it enters, nothing relayed.
    let mut publisher = a.client().await;
    publisher.send_text(publish_of_size("big", "too-big", MAX_MESSAGE + 1)).await;
    let (code, reason) = publisher.expect_close().await;
    assert_eq!(code, 1009, "close of a publisher over the maximum (reason {reason:?})");
    let (status, body) = api_publish(a, &api_body_of_size("big", "too-big", MAX_MESSAGE + 1)).await;
    assert_eq!(status, 413, "API publish over the maximum: {body}");
    assert!(serde_json::from_str::<Value>(&body).is_ok_and(|v| v["error"].is_string()), "{body}");
    subscriber.expect_silence(SILENCE).await;

    // Exactly the maximum: delivered, over the socket and through the API.
    let mut publisher = a.client().await;
    publisher.send_text(publish_of_size("big", "max-ws", MAX_MESSAGE)).await;
    let got = next_big(&mut subscriber).await;
    assert!(got.starts_with("max-ws") && got.len() > MAX_MESSAGE - 100, "{}", got.len());
    let (status, body) = api_publish(a, &api_body_of_size("big", "max-api", MAX_MESSAGE)).await;
    assert_eq!(status, 200, "API publish of exactly the maximum: {body}");
    let got = next_big(&mut subscriber).await;
    assert!(got.starts_with("max-api") && got.len() > MAX_MESSAGE - 100, "{}", got.len());

    // A burst of 100 KB publications, then a small ping.
    let started = Instant::now();
    let reader = tokio::spawn(read_burst(subscriber));
    let padding = "y".repeat(BURST_SIZE);
    for i in 0..BURST {
        publisher.publish("big", &format!("burst-{i:04}-{padding}")).await;
    }
    publisher.publish("big", "ping").await;
    let sent = started.elapsed();
    let outcome = reader.await.expect("burst reader");
    eprintln!("[{engine:?}] burst of {BURST} x {BURST_SIZE} B sent in {sent:?}");

    // Everything seen is gathered first, so one run reports every problem.
    let mut problems = Vec::new();
    match outcome {
        Burst::Complete { elapsed } => {
            eprintln!("[{engine:?}] b's subscriber got all {BURST} and the ping in {elapsed:?}");
        }
        Burst::ClosedSlow { received, code, reason } => {
            eprintln!("[{engine:?}] b's subscriber closed after {received}: {code} {reason:?}");
            if (code, reason.as_str()) != (1008, "slow consumer") {
                problems.push(format!("b's subscriber closed with {code} {reason:?}"));
            }
        }
        Burst::Incomplete { received, last } => problems.push(format!(
            "b's subscriber neither got all {BURST} publications and the ping nor was closed \
             as slow: {received} in order, then {last:?}"
        )),
    }

    // A fresh subscriber on b hears a new ping (once b is through the burst).
    let mut fresh = b.client().await;
    if let Err(e) = subscribe_within(&mut fresh, "after-burst", BACKLOG_WAIT).await {
        problems.push(format!("a fresh subscriber on b: {e}"));
    } else {
        publisher.publish("after-burst", "ping-2").await;
        match fresh.recv_or_close(BACKLOG_WAIT).await {
            Some(Ok(v)) if v == event("after-burst", "ping-2") => {}
            other => problems.push(format!("a fresh subscriber on b got {other:?}, not ping-2")),
        }
    }

    let (polls, bad) = health.finish().await;
    eprintln!(
        "[{engine:?}] {polls} health polls; peak RSS a {} MiB, b {} MiB",
        peak_rss_mib(a.pid()),
        peak_rss_mib(b.pid())
    );
    if !bad.is_empty() {
        let mut kinds = std::collections::BTreeMap::<&str, usize>::new();
        for b in &bad {
            *kinds.entry(b).or_default() += 1;
        }
        problems.push(format!("{} of {polls} health polls were bad: {kinds:?}", bad.len()));
    }
    for node in [a, b] {
        let dead = node.log_matching(&["peer disconnected"]);
        if let Some(first) = dead.first() {
            let n = dead.len();
            problems
                .push(format!("node {} declared a peer gone {n} times, first: {first}", node.id));
        }
    }
    assert!(problems.is_empty(), "[{engine:?}] {problems:#?}");
}

/// How long b may take to work through a burst that queued up.
const BACKLOG_WAIT: Duration = Duration::from_secs(15);

/// Subscribes and waits, at most `within`, for the reply: longer than
/// [`Client::subscribe`] allows, for a node still busy with a burst.
async fn subscribe_within(
    client: &mut Client,
    channel: &str,
    within: Duration,
) -> Result<(), String> {
    let request = json!({
        "jsonrpc": "2.0", "method": "sgc@subscribe", "params": {"channel": channel}, "id": "s1",
    });
    client.send(&request).await;
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.recv_or_close(left).await {
            None => return Err(format!("no subscribe reply within {within:?}")),
            Some(Err(close)) => return Err(format!("closed {close:?}")),
            Some(Ok(v)) if v["result"]["method"] == "sgc@subscribe" => return Ok(()),
            Some(Ok(_)) => {}
        }
    }
}

/// What the subscriber saw of the burst.
enum Burst {
    /// Every burst publication, in order, then the ping.
    Complete { elapsed: Duration },
    /// Closed (slow consumer expected) after `received` burst publications.
    ClosedSlow { received: usize, code: u16, reason: String },
    /// Anything else: a gap, or the ping without every publication, or
    /// nothing more for a while.
    Incomplete { received: usize, last: String },
}

async fn read_burst(mut subscriber: Client) -> Burst {
    let started = Instant::now();
    let mut received = 0;
    loop {
        let next = subscriber.recv_or_close(BACKLOG_WAIT).await;
        let v = match next {
            None => {
                let last = format!("nothing for {BACKLOG_WAIT:?}");
                return Burst::Incomplete { received, last };
            }
            Some(Err((code, reason))) => return Burst::ClosedSlow { received, code, reason },
            Some(Ok(v)) => v,
        };
        let message = v["result"]["message"].as_str().unwrap_or_default();
        if message == "ping" {
            if received == BURST {
                return Burst::Complete { elapsed: started.elapsed() };
            }
            return Burst::Incomplete { received, last: "ping".into() };
        }
        let expected = format!("burst-{received:04}-");
        if !message.starts_with(&expected) {
            let last = message.chars().take(20).collect();
            return Burst::Incomplete { received, last };
        }
        received += 1;
    }
}
