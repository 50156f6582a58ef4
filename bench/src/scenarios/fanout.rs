//! Fan-out: 3 nodes, 1,000 subscribers of one channel spread over them,
//! one publisher on the first node; the publish rate steps up until the
//! p99 delivery latency reaches 50 ms or deliveries fall behind. The same
//! ladder runs against the ceiling server (same sockets, no protocol) and
//! against Socket.IO with its Redis adapter (3 Node.js servers).

use std::net::SocketAddr;

use anyhow::Result;
use serde_json::{Value, json};

use super::{Ctx, count, machine_line, plot_or_warn, ratio};
use crate::client::Proto;
use crate::ladder::{self, Driver, LadderOpts, RustLoad, StepResult};
use crate::peer::{self, PeerCluster};
use crate::plot::{self, Panel, Series};
use crate::procs::{Cluster, Engine, Proc};
use crate::stats::median;

/// Settings of the fan-out scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct FanoutArgs {
    /// Subscribers of the one channel, spread over the nodes.
    #[arg(long, default_value_t = 1000)]
    pub subscribers: usize,
    /// Message size in bytes (the `message` text).
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Seconds of publishing per rate step.
    #[arg(long, default_value_t = 2.0)]
    pub step_secs: f64,
    /// Server outbound queue per connection (`--outbound-queue`), raised
    /// from the default 1,024 so that a scheduling hiccup of the shared
    /// machine does not close subscribers as slow.
    #[arg(long, default_value_t = 8192)]
    pub outbound_queue: usize,
    /// Node.js driver processes for the Socket.IO run.
    #[arg(long, default_value_t = 2)]
    pub node_drivers: usize,
    /// Socket.IO client in the Node.js driver: `lean` (the wire protocol
    /// over `ws`, events found by string search like the Rust clients) or
    /// `socket.io-client` (the official library).
    #[arg(long, default_value = "lean")]
    pub peer_client: String,
    /// Skip the ceiling.
    #[arg(long)]
    pub no_ceiling: bool,
    /// Skip Socket.IO.
    #[arg(long)]
    pub no_peer: bool,
    /// Publish rates to try instead of the ladder (comma-separated msg/s),
    /// e.g. `--rates 100 --step-secs 20 --perf` to profile one rate.
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
}

/// Publish rates tried, messages per second (x subscribers = deliveries).
const RATES: &[f64] = &[
    5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 300.0, 500.0, 700.0, 1000.0, 1500.0, 2000.0, 3000.0,
    5000.0, 7000.0, 10000.0, 15000.0, 20000.0,
];

const CHANNEL: &str = "fanout";

/// Runs the scenario and writes its report.
pub async fn run(ctx: &Ctx, a: &FanoutArgs) -> Result<()> {
    let a = if ctx.smoke {
        FanoutArgs { subscribers: 30, step_secs: 0.5, node_drivers: 1, ..a.clone() }
    } else {
        a.clone()
    };
    let rates = if a.rates.is_empty() { RATES } else { &a.rates };
    let ladder = LadderOpts::stepped(ctx.smoke, rates, &[10.0, 50.0], a.step_secs);
    let mut runs: Vec<Value> = Vec::new();
    for run in 0..ctx.runs {
        eprintln!("fanout run {}/{}", run + 1, ctx.runs);
        for &engine in &ctx.engines {
            let steps = ours(ctx, &a, engine, &ladder, run).await?;
            runs.push(target_run(&format!("wscluster {}", engine.name()), run, steps));
        }
        if !a.no_ceiling {
            let steps = ceiling(ctx, &a, &ladder, run).await?;
            runs.push(target_run("ceiling", run, steps));
        }
        if !a.no_peer {
            let steps = socketio(ctx, &a, &ladder, run).await?;
            runs.push(target_run("socket.io", run, steps));
        }
    }
    report(ctx, &a, &ladder, runs)
}

async fn ours(
    ctx: &Ctx,
    a: &FanoutArgs,
    engine: Engine,
    ladder: &LadderOpts,
    run: usize,
) -> Result<Vec<StepResult>> {
    let q = a.outbound_queue.to_string();
    let bytes = (a.outbound_queue * 4096).max(4 << 20).to_string();
    let opts = ctx.node_opts(engine, &["--outbound-queue", &q, "--outbound-queue-bytes", &bytes]);
    let cluster = Cluster::start(&opts, 3, &format!("fanout-{}-{run}", engine.name())).await?;
    let addrs = cluster.addrs();
    let subs = spread(&addrs, a.subscribers, |_| CHANNEL.to_owned());
    let pubs = vec![(addrs[0], vec![CHANNEL.to_owned()])];
    let load = RustLoad::open(Proto::Sgc, subs, pubs, a.size).await?;
    let mut driver = Driver::Rust(load);
    let label = format!("wscluster {}", engine.name());
    let steps =
        ladder::run_ladder(&mut driver, a.subscribers as u64, ladder, &cluster.pids(), &label)
            .await;
    drop(driver);
    cluster.stop().await;
    steps
}

async fn ceiling(
    ctx: &Ctx,
    a: &FanoutArgs,
    ladder: &LadderOpts,
    run: usize,
) -> Result<Vec<StepResult>> {
    let mut cmd = tokio::process::Command::new(&ctx.self_exe);
    cmd.args(["ceiling-serve", "--listen", "127.0.0.1:0"]);
    let mut proc = Proc::spawn(&format!("fanout-ceiling-{run}"), cmd, &ctx.logs())?;
    let addr: SocketAddr = proc.wait_line("listening ").await?.parse()?;
    let subs = spread(&[addr], a.subscribers, |_| CHANNEL.to_owned());
    let load =
        RustLoad::open(Proto::Raw, subs, vec![(addr, vec![CHANNEL.to_owned()])], a.size).await?;
    let mut driver = Driver::Rust(load);
    let steps =
        ladder::run_ladder(&mut driver, a.subscribers as u64, ladder, &[proc.pid], "ceiling").await;
    drop(driver);
    proc.stop().await;
    steps
}

async fn socketio(
    ctx: &Ctx,
    a: &FanoutArgs,
    ladder: &LadderOpts,
    run: usize,
) -> Result<Vec<StepResult>> {
    let tag = format!("fanout-{run}");
    let peer = PeerCluster::start(3, &ctx.logs(), &tag).await?;
    let urls = peer.urls();
    let d = a.node_drivers.max(1);
    let mut configs: Vec<Value> = (0..d)
        .map(|_| json!({"subs": [], "pubs": [], "size": a.size, "client": a.peer_client}))
        .collect();
    for i in 0..a.subscribers {
        let sub = json!({"url": urls[i % urls.len()], "channel": CHANNEL});
        configs[i % d]["subs"].as_array_mut().expect("array").push(sub);
    }
    configs[0]["pubs"] = json!([{"url": urls[0], "channels": [CHANNEL]}]);
    let mut load = peer::drivers(d, &ctx.logs(), &tag).await?;
    load.setup(configs).await?;
    let mut driver = Driver::Node(load);
    let steps =
        ladder::run_ladder(&mut driver, a.subscribers as u64, ladder, &peer.pids(), "socket.io")
            .await;
    if let Driver::Node(load) = driver {
        load.stop().await;
    }
    peer.stop().await;
    steps
}

/// `n` subscribers spread round-robin over `addrs`.
pub fn spread(
    addrs: &[SocketAddr],
    n: usize,
    channel: impl Fn(usize) -> String,
) -> Vec<(SocketAddr, String)> {
    (0..n).map(|i| (addrs[i % addrs.len()], channel(i))).collect()
}

/// One target's ladder in one run, as JSON.
pub fn target_run(target: &str, run: usize, steps: Vec<StepResult>) -> Value {
    let best = ladder::best(&steps).cloned();
    let sustained = ladder::sustained(&steps).cloned();
    json!({
        "target": target,
        "run": run,
        "sustained": sustained.as_ref().map(|b| json!({
            "rate": b.rate,
            "deliveries_per_s": b.drained_per_s,
            "p50_ms": b.latency.p50,
            "p99_ms": b.latency.p99,
            "server_cpu_pct": b.server_cpu_pct,
            "load_cpu_pct": b.load_cpu_pct,
        })),
        "best": best.as_ref().map(|b| json!({
            "rate": b.rate,
            "deliveries_per_s": b.deliveries_per_s,
            "p50_ms": b.latency.p50,
            "p99_ms": b.latency.p99,
            "server_cpu_pct": b.server_cpu_pct,
            "load_cpu_pct": b.load_cpu_pct,
        })),
        "steps": steps,
    })
}

/// Targets in the order they first appear.
pub fn targets(runs: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for r in runs {
        let t = r["target"].as_str().unwrap_or_default().to_owned();
        if !out.contains(&t) {
            out.push(t);
        }
    }
    out
}

/// Best deliveries/s of `target` in each run (0 when no step passed).
pub fn best_per_run(runs: &[Value], target: &str) -> Vec<f64> {
    field_per_run(runs, target, "best", "deliveries_per_s")
}

/// `runs[..][key][field]` of `target`, 0 where absent.
pub fn field_per_run(runs: &[Value], target: &str, key: &str, field: &str) -> Vec<f64> {
    runs.iter()
        .filter(|r| r["target"] == target)
        .map(|r| r[key][field].as_f64().unwrap_or(0.0))
        .collect()
}

/// Per-run ratios of `a`'s to `b`'s deliveries/s under `key` ("best" or
/// "sustained"), and their median.
pub fn run_ratios(runs: &[Value], key: &str, a: &str, b: &str) -> (Vec<f64>, f64) {
    let xs = field_per_run(runs, a, key, "deliveries_per_s");
    let ys = field_per_run(runs, b, key, "deliveries_per_s");
    let mut rs: Vec<f64> = xs.iter().zip(&ys).map(|(x, y)| ratio(*x, *y)).collect();
    let m = median(&mut rs.clone());
    rs.iter_mut().for_each(|r| *r = (*r * 1000.0).round() / 1000.0);
    (rs, m)
}

fn report(ctx: &Ctx, a: &FanoutArgs, ladder: &LadderOpts, runs: Vec<Value>) -> Result<()> {
    let names = targets(&runs);
    let mut summary = serde_json::Map::new();
    let mut md = String::new();
    md.push_str("## Fan-out\n\n");
    md.push_str(&format!(
        "3 nodes, {} subscribers of one channel spread over them, one publisher on node a, {}-byte messages; rate stepped up ({} s per step) until deliveries fall behind; a step passes while its p99 < {} ms. Server `--outbound-queue {}`. Medians of {} run(s); \"none\" counts as 0.\n\n",
        a.subscribers, a.size, a.step_secs, ladder.p99_limit_ms, a.outbound_queue, ctx.runs
    ));
    for (key, what) in [
        ("best", "Highest rate whose p99 stayed under the limit (the issue's figure)"),
        (
            "sustained",
            "Most deliveries/s with every delivery arriving, whatever the latency: received / (publishing time + time for the last to arrive)",
        ),
    ] {
        md.push_str(&format!("**{what}**\n\n"));
        md.push_str("| target | deliveries/s (median) | each run | p50 ms | p99 ms | server CPU % | load CPU % |\n|---|---:|---|---:|---:|---:|---:|\n");
        let mut part = serde_json::Map::new();
        for t in &names {
            let mut v = field_per_run(&runs, t, key, "deliveries_per_s");
            let each = v
                .iter()
                .map(|x| if *x > 0.0 { count(*x) } else { "none".into() })
                .collect::<Vec<_>>()
                .join(", ");
            let med = median(&mut v);
            let m = |f: &str| median(&mut field_per_run(&runs, t, key, f));
            md.push_str(&format!(
                "| {t} | {} | {each} | {:.2} | {:.2} | {:.0} | {:.0} |\n",
                count(med),
                m("p50_ms"),
                m("p99_ms"),
                m("server_cpu_pct"),
                m("load_cpu_pct")
            ));
            part.insert(t.clone(), json!({"median_deliveries_per_s": med, "runs": field_per_run(&runs, t, key, "deliveries_per_s")}));
        }
        summary.insert(key.to_owned(), Value::Object(part));
        md.push('\n');
    }
    let mut ratios = serde_json::Map::new();
    md.push_str("| ratio (per run, then median) | figure | median | each run | target |\n|---|---|---:|---|---|\n");
    for key in ["best", "sustained"] {
        for ours in names.iter().filter(|n| n.starts_with("wscluster")) {
            for (other, goal, rule) in [("ceiling", 0.5, ">= 0.5"), ("socket.io", 5.0, ">= 5")] {
                if !names.iter().any(|n| n == other) {
                    continue;
                }
                let (each, m) = run_ratios(&runs, key, ours, other);
                if field_per_run(&runs, other, key, "deliveries_per_s").iter().all(|v| *v == 0.0) {
                    md.push_str(&format!("| {ours} / {other} | {key} | n/a | no {other} step qualified | {rule}: n/a |\n"));
                    continue;
                }
                let verdict = if m >= goal { "met" } else { "missed" };
                md.push_str(&format!(
                    "| {ours} / {other} | {key} | {m:.2} | {} | {rule}: {verdict} |\n",
                    each.iter().map(|r| format!("{r:.2}")).collect::<Vec<_>>().join(", ")
                ));
                ratios.insert(
                    format!("{key}: {ours} / {other}"),
                    json!({"median": m, "runs": each, "goal": goal}),
                );
            }
        }
    }
    md.push_str(&format!("\n{}\n", machine_line()));
    let json = json!({
        "scenario": "fanout",
        "settings": {
            "subscribers": a.subscribers, "nodes": 3, "size": a.size,
            "outbound_queue": a.outbound_queue, "node_drivers": a.node_drivers, "ladder": ladder,
            "peer_client": a.peer_client,
        },
        "summary": summary,
        "ratios": ratios,
        "results": runs,
    });
    ctx.write("fanout", &json, &md)?;
    let png = ctx.png("fanout");
    plot_or_warn(
        &png,
        plot::panels(
            &png,
            "Fan-out: 1 publisher, 1,000 subscribers, 3 nodes",
            &ladder_panels(&runs, &names, ladder.p99_limit_ms, "deliveries/s"),
        ),
    );
    Ok(())
}

/// Two panels for a ladder scenario: throughput and p99 against offered rate.
pub fn ladder_panels(runs: &[Value], names: &[String], limit: f64, what: &str) -> Vec<Panel> {
    let mut thr = Vec::new();
    let mut p99 = Vec::new();
    for (i, t) in names.iter().enumerate() {
        for (k, r) in runs.iter().filter(|r| r["target"] == t.as_str()).enumerate() {
            let steps = r["steps"].as_array().cloned().unwrap_or_default();
            let mut pts: Vec<(f64, f64, f64)> = steps
                .iter()
                .map(|s| {
                    (
                        s["rate"].as_f64().unwrap_or(0.0),
                        s["deliveries_per_s"].as_f64().unwrap_or(0.0),
                        s["latency"]["p99"].as_f64().unwrap_or(0.0),
                    )
                })
                .collect();
            pts.sort_by(|a, b| a.0.total_cmp(&b.0));
            let label = if k == 0 { t.clone() } else { String::new() };
            thr.push(Series {
                label: label.clone(),
                color: i,
                points: pts.iter().map(|p| (p.0, p.1)).collect(),
            });
            p99.push(Series { label, color: i, points: pts.iter().map(|p| (p.0, p.2)).collect() });
        }
    }
    vec![
        Panel {
            title: format!("{what} achieved (every run)"),
            x: "offered publish rate (messages/s)".into(),
            y: what.into(),
            series: thr,
            reference: None,
            legend_low: false,
        },
        Panel {
            title: "p99 delivery latency".into(),
            x: "offered publish rate (messages/s)".into(),
            y: "p99 latency (ms)".into(),
            series: p99,
            reference: Some((limit, format!("{limit} ms limit"))),
            legend_low: true,
        },
    ]
}
