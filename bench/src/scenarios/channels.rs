//! Many channels: 10,000 channels with one subscriber each, spread over 3
//! nodes; one publisher per node picks a channel at random for every
//! message. The rate steps up as in the fan-out scenario; every message has
//! exactly one receiver, two times in three on another node.

use std::time::Instant;

use anyhow::Result;
use serde_json::{Value, json};

use super::fanout::{best_per_run, field_per_run, ladder_panels, spread, target_run, targets};
use super::{Ctx, count, machine_line, plot_or_warn};
use crate::client::Proto;
use crate::ladder::{self, Driver, LadderOpts, RustLoad};
use crate::plot;
use crate::procs::{Cluster, Engine};
use crate::stats::median;

/// Settings of the many-channels scenario.
#[derive(Debug, Clone, clap::Args)]
pub struct ChannelsArgs {
    /// Channels (one subscriber connection each).
    #[arg(long, default_value_t = 10_000)]
    pub channels: usize,
    /// Message size in bytes.
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    /// Seconds of publishing per rate step.
    #[arg(long, default_value_t = 2.0)]
    pub step_secs: f64,
}

const RATES: &[f64] = &[
    500.0, 1000.0, 2000.0, 5000.0, 10000.0, 20000.0, 30000.0, 50000.0, 70000.0, 100000.0, 150000.0,
];

/// Runs the scenario and writes its report.
pub async fn run(ctx: &Ctx, a: &ChannelsArgs) -> Result<()> {
    let a = if ctx.smoke {
        ChannelsArgs { channels: 60, step_secs: 0.5, ..a.clone() }
    } else {
        a.clone()
    };
    let ladder = LadderOpts::stepped(ctx.smoke, RATES, &[100.0, 500.0], a.step_secs);
    let mut runs: Vec<Value> = Vec::new();
    for run in 0..ctx.runs {
        eprintln!("many-channels run {}/{}", run + 1, ctx.runs);
        for &engine in &ctx.engines {
            runs.push(ours(ctx, &a, engine, &ladder, run).await?);
        }
    }
    report(ctx, &a, &ladder, runs)
}

async fn ours(
    ctx: &Ctx,
    a: &ChannelsArgs,
    engine: Engine,
    ladder: &LadderOpts,
    run: usize,
) -> Result<Value> {
    let cluster = Cluster::start(
        &ctx.node_opts(engine, &[]),
        3,
        &format!("channels-{}-{run}", engine.name()),
    )
    .await?;
    let addrs = cluster.addrs();
    let name = |i: usize| format!("ch.{i}");
    let subs = spread(&addrs, a.channels, name);
    let all: Vec<String> = (0..a.channels).map(name).collect();
    let pubs = addrs.iter().map(|addr| (*addr, all.clone())).collect();
    let t0 = Instant::now();
    let load = RustLoad::open(Proto::Sgc, subs, pubs, a.size).await?;
    let setup_secs = t0.elapsed().as_secs_f64();
    eprintln!("  {} connections subscribed in {setup_secs:.1} s", a.channels);
    let mut driver = Driver::Rust(load);
    let label = format!("wscluster {}", engine.name());
    let steps = ladder::run_ladder(&mut driver, 1, ladder, &cluster.pids(), &label).await;
    drop(driver);
    cluster.stop().await;
    let mut v = target_run(&label, run, steps?);
    v["subscribe_secs"] = json!(setup_secs);
    Ok(v)
}

fn report(ctx: &Ctx, a: &ChannelsArgs, ladder: &LadderOpts, runs: Vec<Value>) -> Result<()> {
    let names = targets(&runs);
    let mut md = String::from("## Many channels\n\n");
    md.push_str(&format!(
        "3 nodes, {} channels with one subscriber each (spread over the nodes), one publisher per node choosing a channel at random per message, {}-byte messages; rate stepped up ({} s per step) until p99 >= {} ms or deliveries fall behind. Median of {} run(s).\n\n",
        a.channels, a.size, a.step_secs, ladder.p99_limit_ms, ctx.runs
    ));
    md.push_str("| target | messages/s delivered (median) | each run | p50 ms | p99 ms | server CPU % | load CPU % | connect + subscribe all (s) | sustained messages/s (median; p99 ms) |\n|---|---:|---|---:|---:|---:|---:|---:|---|\n");
    let mut summary = serde_json::Map::new();
    for t in &names {
        let mut best = best_per_run(&runs, t);
        let each = best.iter().map(|v| count(*v)).collect::<Vec<_>>().join(", ");
        let med = median(&mut best);
        let m = |f: &str| {
            let mut v: Vec<f64> = runs
                .iter()
                .filter(|r| r["target"] == t.as_str())
                .map(|r| r["best"][f].as_f64().unwrap_or(0.0))
                .collect();
            median(&mut v)
        };
        let mut setup: Vec<f64> = runs
            .iter()
            .filter(|r| r["target"] == t.as_str())
            .map(|r| r["subscribe_secs"].as_f64().unwrap_or(0.0))
            .collect();
        let sus = median(&mut field_per_run(&runs, t, "sustained", "deliveries_per_s"));
        let sus_p99 = median(&mut field_per_run(&runs, t, "sustained", "p99_ms"));
        md.push_str(&format!(
            "| {t} | {} | {each} | {:.2} | {:.2} | {:.0} | {:.0} | {:.1} | {} ({sus_p99:.1}) |\n",
            count(med),
            m("p50_ms"),
            m("p99_ms"),
            m("server_cpu_pct"),
            m("load_cpu_pct"),
            median(&mut setup),
            count(sus)
        ));
        summary.insert(
            t.clone(),
            json!({"median_messages_per_s": med, "runs": best_per_run(&runs, t)}),
        );
    }
    md.push_str(&format!("\n{}\n", machine_line()));
    let json = json!({
        "scenario": "many-channels",
        "settings": {"channels": a.channels, "nodes": 3, "size": a.size, "ladder": ladder},
        "summary": summary,
        "results": runs,
    });
    ctx.write("many-channels", &json, &md)?;
    let png = ctx.png("many-channels");
    let title = format!("Many channels: {} channels, 1 subscriber each, 3 nodes", a.channels);
    plot_or_warn(
        &png,
        plot::panels(
            &png,
            &title,
            &ladder_panels(&runs, &names, ladder.p99_limit_ms, "messages/s delivered"),
        ),
    );
    Ok(())
}
