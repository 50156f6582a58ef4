//! Idle memory: N idle connections, each subscribed to its own channel,
//! spread over 3 nodes; resident memory (`VmRSS`) of every node before and
//! after, divided by N.
//!
//! The connections are opened by child processes of the harness (the
//! hidden `idle-clients` subcommand, one per node), because one process may
//! hold only as many sockets as its open-file limit allows. Each child
//! connects from its own 127.0.0.x source addresses so that ephemeral ports
//! do not run out.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use futures_util::{StreamExt, stream};
use serde_json::{Value, json};
use tokio::io::AsyncReadExt;

use super::{Ctx, count, machine_line, plot_or_warn};
use crate::client::{self, Ws};
use crate::plot;
use crate::procs::{Cluster, Engine, Proc};
use crate::stats::median;
use crate::sys;

/// Settings of the idle-memory scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct IdleArgs {
    /// Connection counts to measure (comma-separated).
    #[arg(long, value_delimiter = ',', default_value = "10000,50000")]
    pub connections: Vec<usize>,
    /// Put every connection on node a (B and C then show what a remote
    /// channel costs them); written as `idle-memory-one-node.*`.
    #[arg(long)]
    pub one_node: bool,
}

/// Settling time before a memory reading.
const SETTLE: Duration = Duration::from_secs(3);

/// Runs the scenario and writes its report.
pub async fn run(ctx: &Ctx, a: &IdleArgs) -> Result<()> {
    let counts = if ctx.smoke { vec![300] } else { a.connections.clone() };
    let limit = sys::raise_nofile() as usize;
    let mut runs = Vec::new();
    for run in 0..ctx.runs {
        for &n in &counts {
            // Each node and each client process holds n/3 sockets.
            if n / 3 + 64 > limit {
                eprintln!(
                    "idle-memory: {n} connections need {} files per process, the limit is {limit}: skipped",
                    n / 3 + 64
                );
                continue;
            }
            for &engine in &ctx.engines {
                eprintln!(
                    "idle-memory run {}/{}: {n} connections, {}",
                    run + 1,
                    ctx.runs,
                    engine.name()
                );
                runs.push(measure(ctx, engine, n, run, a.one_node).await?);
            }
        }
    }
    report(ctx, &counts, limit, a.one_node, runs)
}

async fn measure(ctx: &Ctx, engine: Engine, n: usize, run: usize, one_node: bool) -> Result<Value> {
    let tag = format!("idle-{}-{n}-{run}", engine.name());
    let cluster = Cluster::start(&ctx.node_opts(engine, &[]), 3, &tag).await?;
    tokio::time::sleep(SETTLE).await;
    let before: Vec<u64> = cluster.nodes.iter().map(|n| n.proc.rss_kib()).collect();

    let t0 = Instant::now();
    let mut clients = Vec::new();
    for (k, node) in cluster.nodes.iter().enumerate() {
        let share = match (one_node, k) {
            (true, 0) => n,
            (true, _) => 0,
            (false, _) => n / 3 + usize::from(k < n % 3),
        };
        if share == 0 {
            continue;
        }
        let mut cmd = tokio::process::Command::new(&ctx.self_exe);
        cmd.args(["idle-clients", "--addr", &node.ws.to_string(), "--count", &share.to_string()])
            .args(["--prefix", &format!("idle.{k}."), "--source-offset", &k.to_string()]);
        clients.push((Proc::spawn(&format!("{tag}-clients-{k}"), cmd, &ctx.logs())?, share));
    }
    for (c, _) in &mut clients {
        c.wait_line_for("ready", Duration::from_secs(600)).await?;
    }
    let open_secs = t0.elapsed().as_secs_f64();
    tokio::time::sleep(SETTLE).await;
    let after: Vec<u64> = cluster.nodes.iter().map(|n| n.proc.rss_kib()).collect();
    let client_kib: u64 = clients.iter().map(|(c, _)| c.rss_kib()).sum();
    for (c, _) in clients {
        c.stop().await;
    }
    tokio::time::sleep(SETTLE).await;
    let closed: Vec<u64> = cluster.nodes.iter().map(|n| n.proc.rss_kib()).collect();
    cluster.stop().await;

    let delta: u64 = after.iter().zip(&before).map(|(a, b)| a.saturating_sub(*b)).sum();
    let per_conn = delta as f64 * 1024.0 / n as f64;
    let per_node: Vec<f64> = after
        .iter()
        .zip(&before)
        .map(|(a, b)| a.saturating_sub(*b) as f64 * 1024.0 / n as f64)
        .collect();
    eprintln!(
        "  {n} idle connections opened and subscribed in {open_secs:.1} s; RSS {:?} -> {:?} KiB: {:.0} bytes per connection",
        before, after, per_conn
    );
    Ok(json!({
        "target": format!("wscluster {}", engine.name()),
        "run": run,
        "connections": n,
        "rss_before_kib": before,
        "rss_after_kib": after,
        "rss_after_close_kib": closed,
        "bytes_per_connection": per_conn,
        "bytes_per_connection_per_node": per_node,
        "client_bytes_per_connection": client_kib as f64 * 1024.0 / n as f64,
        "open_and_subscribe_secs": open_secs,
    }))
}

fn report(
    ctx: &Ctx,
    counts: &[usize],
    limit: usize,
    one_node: bool,
    runs: Vec<Value>,
) -> Result<()> {
    let (name, layout) = if one_node {
        ("idle-memory-one-node", "all on node a (nodes b and c hold only the remote interest)")
    } else {
        ("idle-memory", "spread over 3 nodes")
    };
    let mut md = format!("## Idle memory ({layout})\n\n");
    md.push_str(&format!(
        "Idle connections, each subscribed to its own channel, {layout}; (sum of the nodes' VmRSS after - before) / connections. This counts everything a connection costs the cluster, including the other nodes' interest entries for its channel; \"per node\" is each node's growth / all connections. Median of {} run(s). Open-file limit per process: {limit}.\n\n",
        ctx.runs
    ));
    md.push_str("| target | connections | bytes per connection (median) | each run | KiB per connection | per node (bytes, median run) | open + subscribe (s) | RSS after close, KiB |\n|---|---:|---:|---|---:|---|---:|---|\n");
    let mut bars = Vec::new();
    let mut summary = serde_json::Map::new();
    for (ci, &n) in counts.iter().enumerate() {
        for (ei, engine) in ctx.engines.iter().enumerate() {
            let t = format!("wscluster {}", engine.name());
            let rs: Vec<&Value> = runs
                .iter()
                .filter(|r| r["target"] == t.as_str() && r["connections"] == n)
                .collect();
            if rs.is_empty() {
                continue;
            }
            let mut v: Vec<f64> =
                rs.iter().map(|r| r["bytes_per_connection"].as_f64().unwrap_or(0.0)).collect();
            let each = v.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ");
            let med = median(&mut v);
            let mut secs: Vec<f64> =
                rs.iter().map(|r| r["open_and_subscribe_secs"].as_f64().unwrap_or(0.0)).collect();
            let mid = rs.iter().min_by(|a, b| {
                let d = |r: &Value| (r["bytes_per_connection"].as_f64().unwrap_or(0.0) - med).abs();
                d(a).total_cmp(&d(b))
            });
            let per_node = mid.map_or(String::new(), |r| {
                r["bytes_per_connection_per_node"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|x| format!("{:.0}", x.as_f64().unwrap_or(0.0)))
                    .collect::<Vec<_>>()
                    .join(" / ")
            });
            let closed = mid.map_or(String::new(), |r| r["rss_after_close_kib"].to_string());
            md.push_str(&format!(
                "| {t} | {} | {} | {each} | {:.2} | {per_node} | {:.1} | {closed} |\n",
                count(n as f64),
                count(med),
                med / 1024.0,
                median(&mut secs)
            ));
            bars.push((format!("{} {}k", engine.name(), n / 1000), med / 1024.0, ei + 2 * ci));
            summary.insert(format!("{t} {n}"), json!({"bytes_per_connection": med}));
        }
    }
    md.push_str("\nTarget: at most 8 KiB (8,192 bytes) per idle connection.");
    for (k, v) in &summary {
        let b = v["bytes_per_connection"].as_f64().unwrap_or(0.0);
        md.push_str(&format!(" {k}: {}.", if b <= 8192.0 { "met" } else { "missed" }));
    }
    md.push_str(&format!("\n\n{}\n", machine_line()));
    let json = json!({
        "scenario": "idle-memory",
        "settings": {"connections": counts, "nodes": 3, "nofile_limit": limit, "one_node": one_node},
        "summary": summary,
        "results": runs,
    });
    ctx.write(name, &json, &md)?;
    let png = ctx.png(name);
    plot_or_warn(
        &png,
        plot::bars(
            &png,
            "Resident memory per idle subscribed connection",
            "KiB per connection",
            &bars,
            Some((8.0, "8 KiB target".into())),
        ),
    );
    Ok(())
}

/// The hidden `idle-clients` subcommand: opens `count` connections to
/// `addr`, subscribes each to `PREFIX{i}`, prints `ready`, and holds them
/// until its stdin closes.
pub async fn clients(addr: SocketAddr, count: usize, prefix: &str, offset: usize) -> Result<()> {
    sys::raise_nofile();
    let t0 = Instant::now();
    let opened: Vec<Result<Ws>> = stream::iter(0..count)
        .map(|i| async move {
            let mut ws =
                client::connect(addr, "/", Some(client::source_ip(offset + i * 3))).await?;
            client::subscribe(&mut ws, &format!("{prefix}{i}")).await?;
            Ok(ws)
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let mut held = Vec::with_capacity(count);
    for (i, ws) in opened.into_iter().enumerate() {
        held.push(ws.with_context(|| format!("connection {i}"))?);
    }
    if held.len() != count {
        bail!("opened {} of {count}", held.len());
    }
    println!("ready {count} {:.1}", t0.elapsed().as_secs_f64());
    let mut stdin = tokio::io::stdin();
    let mut buf = [0u8; 64];
    while stdin.read(&mut buf).await.unwrap_or(0) > 0 {}
    drop(held);
    Ok(())
}
