//! Running wscluster as an operator would (issue 6): configuration from
//! flags, environment and a file; the HTTP API across two nodes; SIGTERM
//! on a node whose clients are presence members.
//!
//! Precedence is flag over environment over file over default, read back
//! both from `check-config` and from what a running node does. Every bad
//! configuration fails naming its key. The API publishes and broadcasts
//! into the whole cluster, counts subscribers cluster-wide, and refuses
//! (401, 404, 400 with a JSON body) without publishing anything. `/metrics`
//! is checked against a scripted workload in `tests/interop/test_metrics.py`
//! with the Python Prometheus parser.

#[macro_use]
mod support;

#[path = "presence_support/mod.rs"]
mod presence_support;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::client::{broadcast_message, event, expect_all_silent, publish};
use support::{Cluster, Engine, Node, NodeSpec, Options, STEP, http};
use tokio::process::Command;

engine_tests!(
    the_api_publishes_broadcasts_and_counts_across_nodes_and_refusals_change_nothing,
    sigterm_removes_a_nodes_presence_members_everywhere_long_before_the_failure_timeout,
);

const API_KEY: &str = "ops-api-key-4f1c";

/// `--drain-timeout-ms` of the node stopped with SIGTERM.
const DRAIN: Duration = Duration::from_millis(1500);

// ----------------------------------------------------------------- helpers

/// A TOML file in the temporary directory, removed on drop.
struct TempToml(PathBuf);

impl TempToml {
    fn new(text: &str) -> Self {
        let name = format!("wscluster-ops-{}.toml", uuid::Uuid::new_v4());
        let path = std::env::temp_dir().join(name);
        std::fs::write(&path, text).expect("write a temporary config file");
        Self(path)
    }

    fn path(&self) -> String {
        self.0.display().to_string()
    }
}

impl Drop for TempToml {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// What a short-lived run of the binary said.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs `wscluster ARGS` with only `env` in its environment, bounded.
async fn run(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_wscluster"));
    cmd.env_clear()
        .envs(env.iter().copied())
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(STEP, cmd.output())
        .await
        .unwrap_or_else(|_| panic!("wscluster {args:?} did not exit within {STEP:?}"))
        .expect("run wscluster");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// A single node (mesh, no peers) started with `options`.
async fn lone_node(id: &str, options: Options) -> Node {
    Node::start(NodeSpec { id: id.to_owned(), engine: Engine::Mesh, flags: Vec::new(), options })
        .await
}

fn auth(key: &str) -> String {
    format!("apikey {key}")
}

async fn api(node: &Node, method: &str, path: &str, key: Option<&str>, body: &str) -> (u16, Value) {
    let header = key.map(auth);
    let headers: Vec<(&str, &str)> =
        header.as_deref().map(|h| vec![("Authorization", h)]).unwrap_or_default();
    let (code, text) = http::request(node.ws_addr, method, path, &headers, body.as_bytes())
        .await
        .unwrap_or_else(|e| panic!("{method} {path} on node {}: {e}", node.id));
    let parsed = serde_json::from_str(&text).unwrap_or_else(|e| {
        panic!("{method} {path} on {}: {code} not json ({e}): {text}", node.id)
    });
    (code, parsed)
}

/// `/api/channels` of `node` as a map from name to subscribers.
async fn channel_counts(node: &Node) -> BTreeMap<String, u64> {
    let (code, body) = api(node, "GET", "/api/channels", Some(API_KEY), "").await;
    assert_eq!(code, 200, "GET /api/channels on {}: {body}", node.id);
    body["channels"]
        .as_array()
        .unwrap_or_else(|| panic!("no channels array: {body}"))
        .iter()
        .map(|c| {
            (
                c["name"].as_str().expect("name").to_owned(),
                c["subscribers"].as_u64().expect("count"),
            )
        })
        .collect()
}

/// The value of one sample in `/metrics` text (0 when absent).
async fn metric(node: &Node, sample: &str) -> f64 {
    let (code, text) = http::get(node.ws_addr, "/metrics").await.expect("GET /metrics");
    assert_eq!(code, 200, "{text}");
    text.lines()
        .find_map(|l| l.strip_prefix(sample).and_then(|rest| rest.strip_prefix(' ')))
        .map_or(0.0, |v| v.trim().parse().unwrap_or_else(|e| panic!("{sample} = {v:?}: {e}")))
}

// ----------------------------------------------------------------- configuration

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_applies_flag_over_env_over_file_and_masks_every_secret() {
    let file = TempToml::new(
        r#"
max_message_size = 2048
max_connections = 50
failure_timeout_ms = 1500
redis_channel = "from-file"
peers = ["file-peer:1"]
api_key = "file-api-key-9d2e"
"#,
    );
    let env = [
        ("WSCLUSTER_MAX_MESSAGE_SIZE", "4096"),
        ("WSCLUSTER_MAX_CONNECTIONS", "60"),
        ("WSCLUSTER_PEERS", "env-peer:2,env-peer:3"),
        ("WSCLUSTER_CLUSTER_SECRET", "env-secret-51ab"),
    ];
    let path = file.path();
    let flags = [
        "check-config",
        &path,
        "--max-message-size",
        "8192",
        "--failure-timeout-ms",
        "2500",
        "--kept-per-channel",
        "7",
        "--redis-url",
        "redis://ops:flag-pw-77c3@redis.example:6380/2",
    ];
    let out = run(&flags, &env).await;
    assert_eq!(out.code, Some(0), "check-config of a valid file; stderr: {}", out.stderr);

    let shown: toml::Table = out
        .stdout
        .parse()
        .unwrap_or_else(|e| panic!("check-config output is not TOML ({e}):\n{}", out.stdout));
    let expect = |key: &str, value: toml::Value, why: &str| {
        assert_eq!(shown.get(key), Some(&value), "{key}: {why}\n{}", out.stdout);
    };
    expect("max_message_size", 8192.into(), "flag over environment over file");
    expect("max_connections", 60.into(), "environment over file");
    expect("failure_timeout_ms", 2500.into(), "flag over file");
    expect("redis_channel", "from-file".into(), "file over default");
    expect("kept_per_channel", 7.into(), "flag over default");
    expect("max_subscriptions", 1024.into(), "default");
    let peers = toml::Value::Array(vec!["env-peer:2".into(), "env-peer:3".into()]);
    expect("peers", peers, "environment list over file");

    expect("api_key", "***".into(), "masked");
    expect("cluster_secret", "***".into(), "masked");
    for secret in ["file-api-key-9d2e", "env-secret-51ab", "flag-pw-77c3"] {
        assert!(!out.stdout.contains(secret), "check-config shows {secret}:\n{}", out.stdout);
        assert!(!out.stderr.contains(secret), "check-config logs {secret}:\n{}", out.stderr);
    }
    let url = shown.get("redis_url").and_then(toml::Value::as_str).unwrap_or_default();
    assert!(url.contains("redis.example:6380/2") && url.contains("***"), "redis_url: {url}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_runs_with_flag_over_env_over_file() {
    let file = TempToml::new(
        r#"
node_id = "file-node"
max_message_size = 2048
max_channel_length = 20
api_key = "file-key"
"#,
    );
    let options = Options {
        extra: vec!["--config".into(), file.path(), "--max-message-size".into(), "8192".into()],
        env: vec![
            ("WSCLUSTER_MAX_MESSAGE_SIZE".into(), "4096".into()),
            ("WSCLUSTER_API_KEY".into(), "env-key".into()),
        ],
        ..Options::default()
    };
    // The harness names the node with --node-id: a flag over the file.
    let node = lone_node("flag-node", options).await;
    assert_eq!(node.status().await["node_id"], "flag-node", "--node-id over the file");

    // The environment's API key, not the file's.
    let (code, body) = api(&node, "GET", "/api/channels", Some("env-key"), "").await;
    assert_eq!(code, 200, "the environment's key: {body}");
    let (code, body) = api(&node, "GET", "/api/channels", Some("file-key"), "").await;
    assert_eq!(code, 401, "the file's key is overridden: {body}");

    // The file's channel limit (default 255).
    let mut client = node.client().await;
    let long = "c".repeat(30);
    let request = json!({
        "jsonrpc": "2.0", "method": "sgc@subscribe", "params": {"channel": long}, "id": "long",
    });
    client.send(&request).await;
    let refusal = loop {
        let v = client.recv().await;
        if v.get("error").is_some() {
            break v;
        }
    };
    assert_eq!(refusal["error"]["code"], -32602, "a 30-byte channel over the file's 20: {refusal}");

    // The flag's size limit (8192), not the environment's or the file's.
    client.subscribe("sized").await;
    let text = publish_of_size("sized", 6000);
    client.send_text(text).await;
    let v = client.recv().await;
    assert_eq!(v["result"]["channel"], "sized", "a 6000-byte message is accepted: {v}");
    client.send_text(publish_of_size("sized", 9000)).await;
    let (code, reason) = client.expect_close().await;
    assert_eq!(code, 1009, "a 9000-byte message is over the flag's 8192 ({reason:?})");
}

/// An `sgc@publish` on `channel` of exactly `size` bytes.
fn publish_of_size(channel: &str, size: usize) -> String {
    let bare = publish(channel, "", None).to_string();
    let text = publish(channel, &"z".repeat(size - bare.len()), None).to_string();
    assert_eq!(text.len(), size);
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_configuration_fails_with_a_message_naming_the_key() {
    // (file text, the key the message must name)
    let cases = [
        ("max_mesage_size = 4096\n", "max_mesage_size"),
        ("[cluster]\nsecret = \"x\"\n", "cluster"),
        ("max_message_size = \"big\"\n", "max_message_size"),
        ("max_message_size = -5\n", "max_message_size"),
        ("listen = \"nowhere\"\n", "listen"),
        ("engine = \"kafka\"\n", "engine"),
        ("peers = \"a:1\"\n", "peers"),
        ("qos = \"qosLevel9\"\n", "qos"),
        ("max_message_size = 10\n", "max_message_size"),
        ("failure_timeout_ms = 0\n", "failure_timeout_ms"),
        ("api_key = \"\"\n", "api_key"),
        ("redis_url = \"http://example\"\n", "redis_url"),
        ("max_connections = 0\n", "max_connections"),
    ];
    let mut wrong = Vec::new();
    for (text, key) in cases {
        let file = TempToml::new(text);
        let out = run(&["check-config", &file.path()], &[]).await;
        let fine = out.code.is_some_and(|c| c != 0) && out.stderr.contains(key);
        if !fine {
            wrong.push(format!(
                "{text:?}: exit {:?}, stderr {:?} (should name `{key}`)",
                out.code,
                out.stderr.trim()
            ));
        }
    }

    // `serve` refuses to start the same way, before listening.
    let file = TempToml::new("qos = \"qosLevel9\"\n");
    let path = file.path();
    let args =
        ["serve", "--config", &path, "--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"];
    let out = run(&args, &[]).await;
    if out.code.is_none_or(|c| c == 0)
        || !out.stderr.contains("qos")
        || out.stdout.contains("listening")
    {
        wrong.push(format!("serve with a bad file: exit {:?}, {:?}", out.code, out.stderr));
    }

    // A bad environment value names its variable or flag.
    let env = [("WSCLUSTER_MAX_MESSAGE_SIZE", "big")];
    let out = run(&["check-config", &path], &env).await;
    let named = out.stderr.contains("max-message-size") || out.stderr.contains("MAX_MESSAGE_SIZE");
    if out.code.is_none_or(|c| c == 0) || !named {
        wrong
            .push(format!("WSCLUSTER_MAX_MESSAGE_SIZE=big: exit {:?}, {:?}", out.code, out.stderr));
    }
    assert!(
        wrong.is_empty(),
        "configuration errors that do not name their key:\n{}",
        wrong.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn help_never_shows_secret_values_from_the_environment() {
    let env = [
        ("WSCLUSTER_API_KEY", "help-api-key-e81"),
        ("WSCLUSTER_CLUSTER_SECRET", "help-secret-c02"),
        ("WSCLUSTER_REDIS_URL", "redis://:help-pw-a93@h:1/"),
    ];
    let out = run(&["serve", "--help"], &env).await;
    assert_eq!(out.code, Some(0), "{}", out.stderr);
    for (_, secret) in env {
        assert!(!out.stdout.contains(secret), "serve --help shows {secret}");
    }
    assert!(out.stdout.contains("WSCLUSTER_API_KEY"), "the variable is still documented");
}

// ----------------------------------------------------------------- HTTP API

async fn the_api_publishes_broadcasts_and_counts_across_nodes_and_refusals_change_nothing(
    engine: Engine,
) {
    let options = Options { extra: vec!["--api-key".into(), API_KEY.into()], ..Options::default() };
    let mut cluster = Cluster::start_with(engine, &["a", "b"], options).await;
    let spec = cluster.spec("c", Options::default());
    cluster.add(spec).await;
    cluster.wait_converged().await;
    let (a, b, c) = (cluster.node("a"), cluster.node("b"), cluster.node("c"));

    let mut x = b.client().await;
    let mut y1 = a.client().await;
    let mut y2 = a.client().await;
    let mut z = b.client().await;
    let mut idle = b.client().await;
    for client in [&mut x, &mut y1, &mut y2] {
        client.subscribe("news").await;
    }
    z.subscribe("other").await;

    // Publish on a reaches subscribers on a and b; the message is any JSON.
    let (code, body) =
        api(a, "POST", "/api/publish", Some(API_KEY), r#"{"channel":"news","message":"via api"}"#)
            .await;
    assert_eq!((code, body), (200, json!({"ok": true})));
    for client in [&mut x, &mut y1, &mut y2] {
        client.expect(&event("news", "via api")).await;
    }
    let body = r#"{"channel":"news","message":{"price":7,"tags":["a"]}}"#;
    assert_eq!(api(a, "POST", "/api/publish", Some(API_KEY), body).await.0, 200);
    let v = x.recv().await;
    assert_eq!(v["result"]["message"], json!({"price": 7, "tags": ["a"]}), "{v}");
    y1.recv().await;
    y2.recv().await;

    // Broadcast to everyone, then to one channel's subscribers only.
    let body = r#"{"message":"to all"}"#;
    assert_eq!(api(a, "POST", "/api/broadcast", Some(API_KEY), body).await.0, 200);
    for client in [&mut x, &mut y1, &mut y2, &mut z, &mut idle] {
        client.expect(&broadcast_message("", "to all")).await;
    }
    let body = r#"{"message":"to news","channel":"news"}"#;
    assert_eq!(api(b, "POST", "/api/broadcast", Some(API_KEY), body).await.0, 200);
    for client in [&mut x, &mut y1, &mut y2] {
        client.expect(&broadcast_message("news", "to news")).await;
    }
    expect_all_silent([&mut z, &mut idle]).await;

    // Subscriber counts are the sum over the nodes, asked of either.
    for node in [a, b] {
        let counts = channel_counts(node).await;
        assert_eq!(counts.get("news"), Some(&3), "news on {}: {counts:?}", node.id);
        assert_eq!(counts.get("other"), Some(&1), "other on {}: {counts:?}", node.id);
    }

    // Refusals: each a JSON error body, none publishes anything.
    let publish_ok = r#"{"channel":"news","message":"refused"}"#;
    let refusals: Vec<(&str, &str, Option<&str>, String, u16)> = vec![
        ("POST", "/api/publish", None, publish_ok.into(), 401),
        ("POST", "/api/publish", Some("wrong-key"), publish_ok.into(), 401),
        ("POST", "/api/broadcast", None, r#"{"message":"refused"}"#.into(), 401),
        ("GET", "/api/channels", Some("wrong-key"), String::new(), 401),
        ("POST", "/api/publish", Some(API_KEY), "{not json".into(), 400),
        (
            "POST",
            "/api/publish",
            Some(API_KEY),
            r#"{"channel":"news","message":"refused","extra":1}"#.into(),
            400,
        ),
        (
            "POST",
            "/api/publish",
            Some(API_KEY),
            r#"{"channel":"news*","message":"refused"}"#.into(),
            400,
        ),
        ("POST", "/api/publish", Some(API_KEY), r#"{"channel":"news"}"#.into(), 400),
        ("POST", "/api/publish", Some(API_KEY), r#"{"channel":"news","message":null}"#.into(), 400),
        ("POST", "/api/publish", Some(API_KEY), r#"{"message":"refused"}"#.into(), 400),
        (
            "POST",
            "/api/publish",
            Some(API_KEY),
            r#"{"channel":"","message":"refused"}"#.into(),
            400,
        ),
        (
            "POST",
            "/api/publish",
            Some(API_KEY),
            format!(r#"{{"channel":"{}","message":"refused"}}"#, "n".repeat(300)),
            400,
        ),
        (
            "POST",
            "/api/publish",
            Some(API_KEY),
            r#"{"channel":"news","message":"refused","queue":"queueLevel9"}"#.into(),
            400,
        ),
        (
            "POST",
            "/api/broadcast",
            Some(API_KEY),
            r#"{"message":"refused","channel":"news*"}"#.into(),
            400,
        ),
        ("POST", "/api/broadcast", Some(API_KEY), r#"{"channel":"news"}"#.into(), 400),
        (
            "POST",
            "/api/broadcast",
            Some(API_KEY),
            r#"{"message":"refused","extra":true}"#.into(),
            400,
        ),
    ];
    let mut wrong = Vec::new();
    let mut counted: BTreeMap<u16, f64> = BTreeMap::new();
    for (method, path, key, body, status) in &refusals {
        let (code, answer) = api(a, method, path, *key, body).await;
        if code != *status || answer["error"].as_str().is_none_or(str::is_empty) {
            wrong.push(format!("{method} {path} key {key:?} body {body:.60}: {code} {answer}"));
        }
        *counted.entry(*status).or_default() += 1.0;
    }
    // No key configured: the API is off, whatever is sent.
    for (method, path, body) in [
        ("POST", "/api/publish", publish_ok),
        ("POST", "/api/broadcast", r#"{"message":"refused"}"#),
        ("GET", "/api/channels", ""),
        ("GET", "/api/presence/room", ""),
    ] {
        for key in [None, Some(API_KEY)] {
            let (code, answer) = api(c, method, path, key, body).await;
            if code != 404 || !answer["error"].is_string() {
                wrong.push(format!(
                    "node without a key: {method} {path} key {key:?}: {code} {answer}"
                ));
            }
        }
    }
    assert!(wrong.is_empty(), "refusals answered wrongly:\n{}", wrong.join("\n"));
    expect_all_silent([&mut x, &mut y1, &mut y2, &mut z, &mut idle]).await;

    // Each refusal is counted by status.
    for (status, n) in counted {
        let sample = format!("wscluster_api_refused_total{{status=\"{status}\"}}");
        assert_eq!(metric(a, &sample).await, n, "{sample} on a");
    }
    assert_eq!(metric(c, "wscluster_api_refused_total{status=\"404\"}").await, 8.0);

    // The path still works: the next publish is the next thing x sees.
    let body = r#"{"channel":"news","message":"after refusals"}"#;
    assert_eq!(api(a, "POST", "/api/publish", Some(API_KEY), body).await.0, 200);
    x.expect(&event("news", "after refusals")).await;
}

// ----------------------------------------------------------------- SIGTERM

async fn sigterm_removes_a_nodes_presence_members_everywhere_long_before_the_failure_timeout(
    engine: Engine,
) {
    use presence_support::Client as Presence;

    // Only the explicit leave can explain a removal well inside this.
    let failure_timeout = Duration::from_secs(10);
    let options = Options {
        failure_timeout_ms: Some(failure_timeout.as_millis() as u64),
        extra: vec![
            "--api-key".into(),
            API_KEY.into(),
            "--drain-timeout-ms".into(),
            DRAIN.as_millis().to_string(),
        ],
        ..Options::default()
    };
    let mut cluster = Cluster::start_with(engine, &["a", "b"], options).await;
    let mut watcher = Presence::connect(cluster.node("a").ws_addr).await;
    watcher.register("watcher").await;
    watcher.join("watcher", "room").await;
    let mut leaver = Presence::connect(cluster.node("b").ws_addr).await;
    leaver.register("leaver").await;
    leaver.join("leaver", "room").await;
    let mut sgc_on_b = cluster.node("b").client().await;
    // A client that never answers the close: only the drain timeout ends it.
    let stuck = cluster.node("b").client().await;

    // The watcher hears of the leaver (member@new, then its join).
    wait_presence(&mut watcher, "a member@new of leaver", |v| {
        v["method"] == "sgc@presence@channel@member@new" && v["member"]["id"] == "leaver"
    })
    .await;
    assert_eq!(presence_ids(cluster.node("a"), "room").await, ["leaver", "watcher"]);

    // The watcher on a is read while b stops, so the removal is timed as
    // a sees it, not after b is gone.
    let stopping = Instant::now();
    let removal = async {
        let channel_remove = wait_presence(&mut watcher, "channel@member@remove of leaver", |v| {
            v["method"] == "sgc@presence@channel@member@remove" && v["member"]["id"] == "leaver"
        })
        .await;
        assert_eq!(channel_remove["channel"]["name"], "room", "{channel_remove}");
        wait_presence(&mut watcher, "member@remove of leaver", |v| {
            v["method"] == "sgc@presence@member@remove" && v["member"]["id"] == "leaver"
        })
        .await;
        stopping.elapsed()
    };
    let b = cluster.node_mut("b");
    let (status, (code, _), (), removed) = tokio::join!(
        b.terminate(DRAIN + Duration::from_secs(2)),
        sgc_on_b.expect_close(),
        leaver.expect_close(1001),
        removal
    );
    let exited = stopping.elapsed();
    assert_eq!(status.code(), Some(0), "b's exit status: {status}");
    assert_eq!(code, 1001, "b's sgc client is closed as going away");
    eprintln!("[{engine:?}] leaver removed on a {removed:?}, b exited {exited:?} after SIGTERM");
    assert!(removed < failure_timeout / 4, "removal took {removed:?}: no explicit leave?");
    assert!(exited >= DRAIN / 2, "b exited after {exited:?} without waiting for its stuck client");
    drop(stuck);

    let a = cluster.node("a");
    watcher.expect_silence().await;

    assert_eq!(presence_ids(a, "room").await, ["watcher"]);
    let status = a.status().await;
    assert_eq!(status["connected_peer_count"], 0, "{status}");
}

/// Reads presence messages until one satisfies `accept`; fails after
/// [`STEP`] naming `what`.
async fn wait_presence(
    client: &mut presence_support::Client,
    what: &str,
    accept: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + STEP;
    let mut seen = Vec::new();
    while Instant::now() < deadline {
        let v = client.recv().await;
        if accept(&v) {
            return v;
        }
        seen.push(v);
    }
    panic!("no {what} within {STEP:?}; saw {seen:?}");
}

/// The member ids `/api/presence/CHANNEL` of `node` lists, sorted.
async fn presence_ids(node: &Node, channel: &str) -> Vec<String> {
    let path = format!("/api/presence/{channel}");
    let (code, body) = api(node, "GET", &path, Some(API_KEY), "").await;
    assert_eq!(code, 200, "{path} on {}: {body}", node.id);
    let mut ids: Vec<String> = body["members"]
        .as_array()
        .unwrap_or_else(|| panic!("no members array: {body}"))
        .iter()
        .map(|m| m["id"].as_str().expect("member id").to_owned())
        .collect();
    ids.sort();
    ids
}
