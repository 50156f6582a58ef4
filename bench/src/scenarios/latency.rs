//! Cross-node latency: one publisher on node a, one subscriber on node b,
//! 1 KB messages at 1,000 per second; p50, p99, p99.9 and max. The same
//! shape on Socket.IO (2 Node.js servers, Redis adapter).

use std::time::Duration;

use anyhow::Result;
use serde_json::{Value, json};
use tokio::time::Instant;

use super::{Ctx, machine_line, plot_or_warn, ratio};
use crate::client::Proto;
use crate::ladder::{self, Driver, LadderOpts, RustLoad, StepResult};
use crate::peer::{self, PeerCluster};
use crate::plot::{self, Series};
use crate::procs::{Cluster, Engine};
use crate::stats::{self, Latency, median};

/// Settings of the latency scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct LatencyArgs {
    /// Messages per second.
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Message size in bytes.
    #[arg(long, default_value_t = 1024)]
    pub size: usize,
    /// Seconds measured (after a 1 s warm-up that is not).
    #[arg(long, default_value_t = 10.0)]
    pub secs: f64,
    /// Socket.IO client in the Node.js driver: `lean` or `socket.io-client`
    /// (see `fanout --help`).
    #[arg(long, default_value = "lean")]
    pub peer_client: String,
    /// Skip Socket.IO.
    #[arg(long)]
    pub no_peer: bool,
}

const CHANNEL: &str = "latency";

/// Other work on the machine (% of one core) above which a window is set
/// aside.
const NOISY_PCT: f64 = 25.0;

/// Longest time spent collecting quiet windows for one target.
const BUDGET: Duration = Duration::from_secs(180);

/// Runs the scenario and writes its report.
pub async fn run(ctx: &Ctx, a: &LatencyArgs) -> Result<()> {
    let a = if ctx.smoke { LatencyArgs { secs: 1.0, ..a.clone() } } else { a.clone() };
    let opts = LadderOpts {
        rates: vec![a.rate],
        secs: a.secs,
        drain_secs: 2.0,
        p99_limit_ms: 50.0,
        refine: false,
        budget_secs: 60.0,
        until_behind: false,
    };
    let mut runs = Vec::new();
    for run in 0..ctx.runs {
        eprintln!("latency run {}/{}", run + 1, ctx.runs);
        for &engine in &ctx.engines {
            let step = ours(ctx, &a, engine, &opts, run).await?;
            runs.push(result(&format!("wscluster {}", engine.name()), run, step));
        }
        if !a.no_peer {
            let step = socketio(ctx, &a, &opts, run).await?;
            runs.push(result("socket.io", run, step));
        }
    }
    report(ctx, &a, runs)
}

/// Measures in one-second windows and keeps those during which other
/// processes took at most [`NOISY_PCT`] of the CPU, until `secs` windows
/// are kept or [`BUDGET`] has passed; the kept windows are merged.
///
/// The machine is shared: another tenant's build would otherwise measure
/// itself. The report says how many windows were set aside.
async fn measure(
    driver: &mut Driver,
    opts: &LadderOpts,
    pids: &[u32],
    label: &str,
) -> Result<StepResult> {
    let window = LadderOpts { secs: 1.0, ..opts.clone() };
    let rate = opts.rates[0];
    // Warm-up: connections, allocator and caches; not reported.
    ladder::wait_quiet().await;
    ladder::run_step(driver, 1, rate, 1, &window, pids).await?;

    let wanted = opts.secs.round().max(1.0) as usize;
    let started = Instant::now();
    let mut kept: Vec<StepResult> = Vec::new();
    let mut noisy = 0;
    let mut step = 2;
    while kept.len() < wanted && started.elapsed() < BUDGET {
        let r = ladder::run_step(driver, step, rate, 1, &window, pids).await?;
        step += 1;
        if r.other_cpu_pct <= NOISY_PCT {
            kept.push(r);
        } else {
            noisy += 1;
            if noisy % 5 == 0 {
                ladder::wait_quiet().await;
            }
        }
    }
    let Some(mut r) = merge(kept) else {
        anyhow::bail!("{label}: no quiet window in {} s", BUDGET.as_secs());
    };
    r.why = format!("{noisy} noisy windows set aside");
    eprintln!(
        "  {label}: p50 {:.3} p99 {:.3} p99.9 {:.3} max {:.3} ms ({} of {} received; {noisy} noisy one-second windows set aside)",
        r.latency.p50, r.latency.p99, r.latency.p999, r.latency.max, r.received, r.expected
    );
    Ok(r)
}

/// Adds windows together: counts summed, histograms merged, CPU averaged.
fn merge(windows: Vec<StepResult>) -> Option<StepResult> {
    let n = windows.len() as f64;
    let mut it = windows.into_iter();
    let mut total = it.next()?;
    let mut hist = total.hist.take().unwrap_or_else(stats::histogram);
    for w in it {
        total.sent += w.sent;
        total.expected += w.expected;
        total.received += w.received;
        total.late += w.late;
        total.closed = total.closed.max(w.closed);
        total.server_cpu_pct += w.server_cpu_pct;
        total.load_cpu_pct += w.load_cpu_pct;
        total.machine_cpu_pct += w.machine_cpu_pct;
        total.other_cpu_pct += w.other_cpu_pct;
        total.steal_pct += w.steal_pct;
        total.publisher_lag_ms = total.publisher_lag_ms.max(w.publisher_lag_ms);
        if let Some(h) = &w.hist {
            let _ = hist.add(h);
        }
    }
    total.server_cpu_pct /= n;
    total.load_cpu_pct /= n;
    total.machine_cpu_pct /= n;
    total.other_cpu_pct /= n;
    total.steal_pct /= n;
    total.latency = Latency::of(&hist, true);
    total.hist = Some(hist);
    Some(total)
}

async fn ours(
    ctx: &Ctx,
    a: &LatencyArgs,
    engine: Engine,
    opts: &LadderOpts,
    run: usize,
) -> Result<StepResult> {
    let cluster =
        Cluster::start(&ctx.node_opts(engine, &[]), 2, &format!("latency-{}-{run}", engine.name()))
            .await?;
    let addrs = cluster.addrs();
    let load = RustLoad::open(
        Proto::Sgc,
        vec![(addrs[1], CHANNEL.to_owned())],
        vec![(addrs[0], vec![CHANNEL.to_owned()])],
        a.size,
    )
    .await?;
    let mut driver = Driver::Rust(load);
    let r =
        measure(&mut driver, opts, &cluster.pids(), &format!("wscluster {}", engine.name())).await;
    drop(driver);
    cluster.stop().await;
    r
}

async fn socketio(ctx: &Ctx, a: &LatencyArgs, opts: &LadderOpts, run: usize) -> Result<StepResult> {
    let tag = format!("latency-{run}");
    let peer = PeerCluster::start(2, &ctx.logs(), &tag).await?;
    let urls = peer.urls();
    let mut load = peer::drivers(1, &ctx.logs(), &tag).await?;
    load.setup(vec![json!({
        "subs": [{"url": urls[1], "channel": CHANNEL}],
        "pubs": [{"url": urls[0], "channels": [CHANNEL]}],
        "size": a.size,
        "client": a.peer_client,
    })])
    .await?;
    let mut driver = Driver::Node(load);
    let r = measure(&mut driver, opts, &peer.pids(), "socket.io").await;
    if let Driver::Node(load) = driver {
        load.stop().await;
    }
    peer.stop().await;
    r
}

fn result(target: &str, run: usize, step: StepResult) -> Value {
    json!({"target": target, "run": run, "step": step})
}

fn pct(runs: &[Value], target: &str, field: &str) -> Vec<f64> {
    runs.iter()
        .filter(|r| r["target"] == target)
        .map(|r| r["step"]["latency"][field].as_f64().unwrap_or(0.0))
        .collect()
}

fn report(ctx: &Ctx, a: &LatencyArgs, runs: Vec<Value>) -> Result<()> {
    let names = super::fanout::targets(&runs);
    let mut md = String::from("## Cross-node latency\n\n");
    md.push_str(&format!(
        "Publisher on node a, subscriber on node b, {}-byte messages at {} per second; {} one-second windows kept per run (after a 1 s warm-up), a window being set aside when other processes took more than {NOISY_PCT}% of a core. Milliseconds, median over {} run(s); every run in brackets.\n\n",
        a.size, a.rate, a.secs, ctx.runs
    ));
    md.push_str("| target | p50 | p99 | p99.9 | max | delivered | server CPU % | other CPU % | noisy windows set aside |\n|---|---:|---:|---:|---:|---:|---:|---:|---|\n");
    let mut summary = serde_json::Map::new();
    for t in &names {
        let cell = |f: &str| {
            let mut v = pct(&runs, t, f);
            let each = v.iter().map(|x| format!("{x:.3}")).collect::<Vec<_>>().join(", ");
            (median(&mut v), each)
        };
        let (p50, e50) = cell("p50");
        let (p99, e99) = cell("p99");
        let (p999, e999) = cell("p999");
        let (max, emax) = cell("max");
        let got: u64 = runs
            .iter()
            .filter(|r| r["target"] == t.as_str())
            .map(|r| r["step"]["received"].as_u64().unwrap_or(0))
            .sum();
        let exp: u64 = runs
            .iter()
            .filter(|r| r["target"] == t.as_str())
            .map(|r| r["step"]["expected"].as_u64().unwrap_or(0))
            .sum();
        let mut cpu: Vec<f64> = runs
            .iter()
            .filter(|r| r["target"] == t.as_str())
            .map(|r| r["step"]["server_cpu_pct"].as_f64().unwrap_or(0.0))
            .collect();
        let mut other: Vec<f64> = runs
            .iter()
            .filter(|r| r["target"] == t.as_str())
            .map(|r| r["step"]["other_cpu_pct"].as_f64().unwrap_or(0.0))
            .collect();
        let noisy: Vec<String> = runs
            .iter()
            .filter(|r| r["target"] == t.as_str())
            .map(|r| {
                r["step"]["why"].as_str().unwrap_or("").split(' ').next().unwrap_or("").to_owned()
            })
            .collect();
        md.push_str(&format!(
            "| {t} | {p50:.3} [{e50}] | {p99:.3} [{e99}] | {p999:.3} [{e999}] | {max:.3} [{emax}] | {got}/{exp} | {:.0} | {:.0} | {} |\n",
            median(&mut cpu),
            median(&mut other),
            noisy.join(", ")
        ));
        summary.insert(
            t.clone(),
            json!({"p50_ms": p50, "p99_ms": p99, "p999_ms": p999, "max_ms": max}),
        );
    }
    let mut ratios = serde_json::Map::new();
    if names.iter().any(|n| n == "socket.io") {
        md.push_str("\n| ratio: Socket.IO latency / ours (higher is better for us) | p50 | p99 | p99.9 |\n|---|---:|---:|---:|\n");
        for ours in names.iter().filter(|n| n.starts_with("wscluster")) {
            let r = |f: &str| {
                ratio(
                    summary["socket.io"][f].as_f64().unwrap_or(0.0),
                    summary[ours.as_str()][f].as_f64().unwrap_or(0.0),
                )
            };
            md.push_str(&format!(
                "| socket.io / {ours} | {:.2} | {:.2} | {:.2} |\n",
                r("p50_ms"),
                r("p99_ms"),
                r("p999_ms")
            ));
            ratios.insert(
                format!("socket.io / {ours}"),
                json!({"p50": r("p50_ms"), "p99": r("p99_ms"), "p999": r("p999_ms")}),
            );
        }
    }
    md.push_str("\nTargets: p99 < 1 ms on the Mesh, < 2 ms on Redis.");
    for (t, goal) in [("wscluster mesh", 1.0), ("wscluster redis", 2.0)] {
        if let Some(p99) = summary.get(t).and_then(|s| s["p99_ms"].as_f64()) {
            md.push_str(&format!(
                " {t}: {p99:.3} ms, {}.",
                if p99 < goal { "met" } else { "missed" }
            ));
        }
    }
    md.push_str(&format!("\n\n{}\n", machine_line()));
    let json = json!({
        "scenario": "latency",
        "settings": {"rate": a.rate, "size": a.size, "secs": a.secs, "nodes": 2, "peer_client": a.peer_client},
        "summary": summary,
        "ratios": ratios,
        "results": runs,
    });
    ctx.write("latency", &json, &md)?;

    // Plot the run whose p99 is the median one, per target.
    let series: Vec<Series> = names
        .iter()
        .enumerate()
        .filter_map(|(i, t)| {
            let mut rs: Vec<&Value> = runs.iter().filter(|r| r["target"] == t.as_str()).collect();
            rs.sort_by(|a, b| {
                let p = |v: &Value| v["step"]["latency"]["p99"].as_f64().unwrap_or(0.0);
                p(a).total_cmp(&p(b))
            });
            let mid = rs.get(rs.len() / 2)?;
            let curve = mid["step"]["latency"]["curve"].as_array()?;
            let points = curve
                .iter()
                .map(|p| (p[0].as_f64().unwrap_or(0.0), p[1].as_f64().unwrap_or(0.0)))
                .collect();
            Some(Series { label: t.clone(), color: i, points })
        })
        .collect();
    let png = ctx.png("latency");
    let title = format!("Cross-node latency, {} B at {}/s (median run)", a.size, a.rate);
    plot_or_warn(
        &png,
        plot::percentiles(&png, &title, &series, Some((1.0, "1 ms (Mesh target)".into()))),
    );
    Ok(())
}
