//! `wscluster-bench`: the benchmark harness of wscluster.
//!
//! One command per scenario (`fanout`, `latency`, `many-channels`,
//! `idle-memory`, or `all`). Each starts the nodes itself on loopback ports
//! chosen free, opens the client connections, drives the load, measures
//! delivery latency from a timestamp carried in every message, and writes
//! JSON, a Markdown table and a PNG plot under `bench-results/`. `--smoke`
//! runs everything tiny, to check the harness in CI.

mod ceiling;
mod client;
mod ladder;
mod peer;
mod plot;
mod procs;
mod scenarios;
mod stats;
mod sys;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};

use procs::Engine;
use scenarios::Ctx;
use scenarios::channels::ChannelsArgs;
use scenarios::fanout::FanoutArgs;
use scenarios::idle::IdleArgs;
use scenarios::latency::LatencyArgs;

/// Benchmarks of wscluster: throughput, latency and memory, against the
/// ceiling of this machine and against Socket.IO.
#[derive(Debug, Parser)]
#[command(name = "wscluster-bench", version, about)]
struct Cli {
    /// Tiny sizes and one run: checks the harness in seconds, measures nothing.
    #[arg(long, global = true)]
    smoke: bool,
    /// Runs of each target (figures are medians over them); default 3, 1 with --smoke.
    #[arg(long, global = true)]
    runs: Option<usize>,
    /// Engines to run: mesh, redis (comma-separated).
    #[arg(long, global = true, value_delimiter = ',', default_value = "mesh,redis")]
    engine: Vec<Engine>,
    /// Results folder (default: bench-results/ at the workspace root,
    /// bench-results/smoke/ with --smoke).
    #[arg(long, global = true)]
    out: Option<PathBuf>,
    /// The wscluster binary (default: build and use target/release/wscluster).
    #[arg(long, global = true, env = "WSCLUSTER_BIN")]
    server_bin: Option<PathBuf>,
    /// Run each server under this command, e.g. "valgrind --tool=callgrind
    /// --callgrind-out-file=bench-results/callgrind.{id}.out" ({id}: the
    /// node's name).
    #[arg(long, global = true)]
    server_wrap: Option<String>,
    /// Attach `perf record -g` to the nodes of each cluster (files under
    /// the results' logs/ folder).
    #[arg(long, global = true)]
    perf: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// 3 nodes, 1,000 subscribers of one channel, one publisher: rate
    /// stepped up; also the ceiling and Socket.IO.
    Fanout(FanoutArgs),
    /// Publisher on node a, subscriber on node b, 1 KB at 1,000/s; also Socket.IO.
    Latency(LatencyArgs),
    /// 10,000 channels with one subscriber each, random publishers.
    ManyChannels(ChannelsArgs),
    /// Resident memory per idle subscribed connection (10,000 and 50,000).
    IdleMemory(IdleArgs),
    /// Every scenario with its default settings, then `summary.md`.
    All,
    /// Writes `summary.md` from the scenarios' reports already written.
    Summary,
    /// The ceiling server (started by the fan-out scenario).
    #[command(hide = true)]
    CeilingServe {
        #[arg(long)]
        listen: SocketAddr,
    },
    /// Idle connections held for the idle-memory scenario.
    #[command(hide = true)]
    IdleClients {
        #[arg(long)]
        addr: SocketAddr,
        #[arg(long)]
        count: usize,
        #[arg(long)]
        prefix: String,
        #[arg(long, default_value_t = 0)]
        source_offset: usize,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> Result<()> {
    match &cli.command {
        Cmd::CeilingServe { listen } => return ceiling::serve(*listen).await,
        Cmd::IdleClients { addr, count, prefix, source_offset } => {
            return scenarios::idle::clients(*addr, *count, prefix, *source_offset).await;
        }
        _ => {}
    }
    let ctx = context(&cli).await?;
    match cli.command {
        Cmd::Fanout(a) => scenarios::fanout::run(&ctx, &a).await,
        Cmd::Latency(a) => scenarios::latency::run(&ctx, &a).await,
        Cmd::ManyChannels(a) => scenarios::channels::run(&ctx, &a).await,
        Cmd::IdleMemory(a) => scenarios::idle::run(&ctx, &a).await,
        Cmd::All => all(&ctx).await,
        Cmd::Summary => summary(&ctx),
        Cmd::CeilingServe { .. } | Cmd::IdleClients { .. } => unreachable!("handled above"),
    }
}

async fn all(ctx: &Ctx) -> Result<()> {
    scenarios::latency::run(ctx, &defaults::<LatencyArgs>()).await?;
    scenarios::fanout::run(ctx, &defaults::<FanoutArgs>()).await?;
    scenarios::channels::run(ctx, &defaults::<ChannelsArgs>()).await?;
    scenarios::idle::run(ctx, &defaults::<IdleArgs>()).await?;
    summary(ctx)
}

/// Joins the scenarios' Markdown reports (and plots) into `summary.md`.
fn summary(ctx: &Ctx) -> Result<()> {
    let mut summary = String::from("# wscluster benchmarks\n\n");
    for name in ["fanout", "latency", "many-channels", "idle-memory", "idle-memory-one-node"] {
        let Ok(md) = std::fs::read_to_string(ctx.out.join(format!("{name}.md"))) else {
            continue;
        };
        summary.push_str(&md);
        summary.push_str(&format!("\n![{name}]({name}.png)\n\n"));
    }
    std::fs::write(ctx.out.join("summary.md"), summary)?;
    eprintln!("summary: {}", ctx.out.join("summary.md").display());
    Ok(())
}

/// A scenario's settings with every default of its command line.
fn defaults<T: clap::Args>() -> T {
    #[derive(Parser)]
    struct Only<T: clap::Args> {
        #[command(flatten)]
        args: T,
    }
    Only::<T>::parse_from(["all"]).args
}

async fn context(cli: &Cli) -> Result<Ctx> {
    let root = workspace_root();
    let out = cli.out.clone().unwrap_or_else(|| {
        let base = root.join("bench-results");
        if cli.smoke { base.join("smoke") } else { base }
    });
    let bin = match &cli.server_bin {
        Some(b) => b.clone(),
        None => build_server(&root).await?,
    };
    sys::raise_nofile();
    ladder::set_patient(!cli.smoke);
    Ok(Ctx {
        bin,
        self_exe: std::env::current_exe().context("own path")?,
        out,
        smoke: cli.smoke,
        runs: cli.runs.unwrap_or(if cli.smoke { 1 } else { 3 }).max(1),
        engines: cli.engine.clone(),
        wrap: cli
            .server_wrap
            .as_deref()
            .unwrap_or("")
            .split_whitespace()
            .map(str::to_owned)
            .collect(),
        perf: cli.perf,
    })
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map_or_else(|| PathBuf::from("."), Path::to_path_buf)
}

/// `cargo build --release -p wscluster`, so a scenario always measures the
/// current source.
async fn build_server(root: &Path) -> Result<PathBuf> {
    let status =
        tokio::process::Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .args(["build", "--release", "--quiet", "-p", "wscluster", "--bin", "wscluster"])
            .current_dir(root)
            .status()
            .await
            .context("cannot run cargo")?;
    if !status.success() {
        bail!("cargo build --release -p wscluster failed");
    }
    let target =
        std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), PathBuf::from);
    Ok(target.join("release/wscluster"))
}
