//! Driving a load: the two load generators (Rust clients in this process,
//! Node.js drivers in child processes) behind one interface, and the rate
//! ladder that steps the publish rate up until delivery falls behind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use futures_util::{StreamExt, stream};
use hdrhistogram::Histogram;
use serde::Serialize;
use tokio::time::Instant;

use crate::client::{self, Proto, Publisher};
use crate::procs::Proc;
use crate::stats::{self, Latency, Stats};
use crate::sys;

/// Connections opened at once while setting up.
const OPEN_CONCURRENCY: usize = 128;

/// What one publishing step sent.
#[derive(Debug, Clone, Copy, Default)]
pub struct Sent {
    /// Messages published.
    pub sent: u64,
    /// Worst lag of a publisher behind its schedule, in ms.
    pub lag_ms: f64,
    /// Wall time of the publishing, in seconds.
    pub secs: f64,
}

/// Rust clients in this process.
pub struct RustLoad {
    stats: Arc<Stats>,
    publishers: Vec<Publisher>,
    size: usize,
}

impl RustLoad {
    /// Opens the subscribers (each `(node, channel)`) and the publishers
    /// (each `(node, channels it picks from)`).
    pub async fn open(
        proto: Proto,
        subs: Vec<(SocketAddr, String)>,
        pubs: Vec<(SocketAddr, Vec<String>)>,
        size: usize,
    ) -> Result<Self> {
        let stats = Arc::new(Stats::default());
        let opened = stream::iter(subs.into_iter().enumerate())
            .map(|(i, (addr, ch))| async move {
                client::open_subscriber(proto, addr, &ch, i)
                    .await
                    .with_context(|| format!("subscriber {i}"))
            })
            .buffer_unordered(OPEN_CONCURRENCY)
            .collect::<Vec<_>>()
            .await;
        for (i, ws) in opened.into_iter().enumerate() {
            let (_sink, stream) = ws?.split();
            // The write half is not needed: dropping it keeps the connection.
            tokio::spawn(client::read_events(stream, stats.clone(), i));
        }
        let mut publishers = Vec::new();
        for (addr, channels) in pubs {
            publishers.push(Publisher::open(proto, addr, channels).await?);
        }
        Ok(Self { stats, publishers, size })
    }

    async fn step(&mut self, step: u32, rate: f64, secs: f64) -> Result<Sent> {
        self.stats.begin(step);
        let share = rate / self.publishers.len() as f64;
        let size = self.size;
        let started = Instant::now();
        let runs = self.publishers.iter_mut().map(|p| p.run(step, share, secs, size));
        let results = futures_util::future::join_all(runs).await;
        let mut total = Sent { secs: started.elapsed().as_secs_f64(), ..Sent::default() };
        for r in results {
            let (sent, lag) = r?;
            total.sent += sent;
            total.lag_ms = total.lag_ms.max(lag);
        }
        Ok(total)
    }
}

/// Node.js driver processes (`bench/node/driver.js`), one JSON line per
/// command on stdin, one JSON line per answer on stdout.
pub struct NodeLoad {
    /// The driver processes.
    pub procs: Vec<Proc>,
}

impl NodeLoad {
    async fn ask(&mut self, cmd: &serde_json::Value) -> Result<Vec<serde_json::Value>> {
        let line = cmd.to_string();
        for p in &mut self.procs {
            p.send_line(&line).await?;
        }
        let mut answers = Vec::new();
        for p in &mut self.procs {
            let reply = tokio::time::timeout(Duration::from_secs(600), p.next_line())
                .await
                .map_err(|_| anyhow!("{}: no answer", p.name))??
                .ok_or_else(|| anyhow!("{} exited", p.name))?;
            let v: serde_json::Value =
                serde_json::from_str(&reply).with_context(|| format!("{}: {reply}", p.name))?;
            if let Some(e) = v.get("error") {
                bail!("{}: {e}", p.name);
            }
            answers.push(v);
        }
        Ok(answers)
    }

    /// Sends `setup` to each driver (one config per driver).
    pub async fn setup(&mut self, configs: Vec<serde_json::Value>) -> Result<()> {
        for (p, c) in self.procs.iter_mut().zip(configs) {
            p.send_line(&serde_json::json!({"cmd": "setup", "config": c}).to_string()).await?;
        }
        for p in &mut self.procs {
            let reply = tokio::time::timeout(Duration::from_secs(120), p.next_line())
                .await
                .map_err(|_| anyhow!("{}: setup timed out", p.name))??
                .unwrap_or_default();
            if !reply.contains("ready") {
                bail!("{}: setup failed: {reply}", p.name);
            }
        }
        Ok(())
    }

    async fn step(&mut self, step: u32, rate: f64, secs: f64) -> Result<Sent> {
        let started = Instant::now();
        let cmd = serde_json::json!({"cmd": "step", "step": step, "rate": rate, "secs": secs});
        let answers = self.ask(&cmd).await?;
        let mut total = Sent { secs: started.elapsed().as_secs_f64(), ..Sent::default() };
        for a in answers {
            total.sent += a["sent"].as_u64().unwrap_or(0);
            total.lag_ms = total.lag_ms.max(a["lag_ms"].as_f64().unwrap_or(0.0));
            if let Some(s) = a["secs"].as_f64().filter(|s| *s > 0.0) {
                total.secs = s;
            }
        }
        Ok(total)
    }

    async fn collect(&mut self) -> Result<(u64, u64, u64, Histogram<u64>)> {
        let answers = self.ask(&serde_json::json!({"cmd": "collect"})).await?;
        let mut hist = stats::histogram();
        let (mut received, mut late, mut closed) = (0, 0, 0);
        for a in answers {
            received += a["received"].as_u64().unwrap_or(0);
            late += a["late"].as_u64().unwrap_or(0);
            closed += a["closed"].as_u64().unwrap_or(0);
            for pair in a["hist"].as_array().into_iter().flatten() {
                let us = pair[0].as_u64().unwrap_or(1).max(1);
                let _ = hist.record_n(us.min(119_000_000), pair[1].as_u64().unwrap_or(0));
            }
        }
        Ok((received, late, closed, hist))
    }

    /// Tells every driver to exit and stops it.
    pub async fn stop(mut self) {
        let _ = self.ask(&serde_json::json!({"cmd": "exit"})).await;
        for p in self.procs {
            p.stop().await;
        }
    }
}

/// Either load generator.
pub enum Driver {
    /// Rust clients in this process.
    Rust(RustLoad),
    /// Node.js driver processes.
    Node(NodeLoad),
}

impl Driver {
    async fn step(&mut self, step: u32, rate: f64, secs: f64) -> Result<Sent> {
        match self {
            Driver::Rust(r) => r.step(step, rate, secs).await,
            Driver::Node(n) => n.step(step, rate, secs).await,
        }
    }

    /// (received, late, closed connections, latency histogram in µs)
    async fn collect(&mut self) -> Result<(u64, u64, u64, Histogram<u64>)> {
        match self {
            Driver::Rust(r) => {
                let (received, late, hist) = r.stats.collect();
                Ok((received, late, r.stats.closed_count(), hist))
            }
            Driver::Node(n) => n.collect().await,
        }
    }

    async fn received(&mut self) -> Result<u64> {
        match self {
            Driver::Rust(r) => Ok(r.stats.received()),
            Driver::Node(n) => {
                let answers = n.ask(&serde_json::json!({"cmd": "count"})).await?;
                Ok(answers.iter().map(|a| a["received"].as_u64().unwrap_or(0)).sum())
            }
        }
    }

    /// Process ids of the load generator (for its CPU use).
    pub fn pids(&self) -> Vec<u32> {
        match self {
            Driver::Rust(_) => vec![std::process::id()],
            Driver::Node(n) => n.procs.iter().map(|p| p.pid).collect(),
        }
    }
}

/// How to step the rate.
#[derive(Debug, Clone, Serialize)]
pub struct LadderOpts {
    /// Publish rates to try, in messages per second, increasing.
    pub rates: Vec<f64>,
    /// Seconds of publishing per step.
    pub secs: f64,
    /// Most seconds to wait after a step for the last deliveries.
    pub drain_secs: f64,
    /// A step passes while its p99 stays under this (ms).
    pub p99_limit_ms: f64,
    /// Try one rate between the last passing and the first failing rate.
    pub refine: bool,
    /// Stop stepping after this many seconds in all.
    pub budget_secs: f64,
    /// Go on past latency failures until deliveries fall behind, to find
    /// the sustained rate too (no refinement then).
    pub until_behind: bool,
}

impl LadderOpts {
    /// The ladder both throughput scenarios use: `rates` (or the tiny
    /// `smoke_rates` under `--smoke`), p99 limit 50 ms, stepped until
    /// deliveries fall behind, within a time budget.
    pub fn stepped(smoke: bool, rates: &[f64], smoke_rates: &[f64], secs: f64) -> Self {
        Self {
            rates: if smoke { smoke_rates.to_vec() } else { rates.to_vec() },
            secs,
            drain_secs: 2.0,
            p99_limit_ms: 50.0,
            refine: !smoke,
            budget_secs: if smoke { 10.0 } else { 150.0 },
            until_behind: true,
        }
    }
}

/// One step of a ladder.
#[derive(Debug, Clone, Serialize)]
pub struct StepResult {
    /// Offered publish rate, messages/s.
    pub rate: f64,
    /// Messages published.
    pub sent: u64,
    /// Deliveries expected (sent x receivers per message).
    pub expected: u64,
    /// Deliveries received in time for the step.
    pub received: u64,
    /// Deliveries that arrived after the step was closed.
    pub late: u64,
    /// Deliveries per second (received / publishing time).
    pub deliveries_per_s: f64,
    /// Deliveries per second counting the time the last ones took to
    /// arrive after publishing stopped (received / (publishing + drain)):
    /// what a saturated target really delivers.
    pub drained_per_s: f64,
    /// Delivery latency.
    pub latency: Latency,
    /// Worst publisher lag behind schedule, ms.
    pub publisher_lag_ms: f64,
    /// CPU of the servers under test during the step, % of one core.
    pub server_cpu_pct: f64,
    /// CPU of the load generator during the step, % of one core.
    pub load_cpu_pct: f64,
    /// CPU of the whole machine during the step (all processes and the
    /// kernel), % of one core; the machine has `nproc` x 100.
    pub machine_cpu_pct: f64,
    /// The machine's CPU not used by the servers or the load generator:
    /// other processes (builds, tests) and kernel work charged to no one.
    pub other_cpu_pct: f64,
    /// CPU time the hypervisor gave to others during the step, % of one core.
    pub steal_pct: f64,
    /// Client connections lost so far.
    pub closed: u64,
    /// Whether the step kept up with p99 under the limit.
    pub pass: bool,
    /// Every delivery arrived (within the drain time), the publisher kept
    /// its rate and no connection closed: the rate is sustained, whatever
    /// the latency.
    pub kept_up: bool,
    /// Which attempt at this rate this is (see `Climb::step`).
    pub attempt: u32,
    /// The latency histogram (µs), for merging windows.
    #[serde(skip)]
    pub hist: Option<Histogram<u64>>,
    /// Why it failed, if it did.
    pub why: String,
}

/// Runs one step at `rate` and judges it.
pub async fn run_step(
    driver: &mut Driver,
    step: u32,
    rate: f64,
    receivers: u64,
    opts: &LadderOpts,
    server_pids: &[u32],
) -> Result<StepResult> {
    let load_pids = driver.pids();
    let cpu = |pids: &[u32]| pids.iter().map(|p| sys::cpu_secs(*p)).sum::<f64>();
    let (srv0, load0, t0) = (cpu(server_pids), cpu(&load_pids), Instant::now());
    let machine0 = sys::MachineCpu::now();

    let sent = driver.step(step, rate, opts.secs).await?;
    let expected = sent.sent * receivers;
    let drain_started = Instant::now();
    let deadline = drain_started + Duration::from_secs_f64(opts.drain_secs);
    while driver.received().await? < expected && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let (received, late, closed, hist) = driver.collect().await?;

    let wall = t0.elapsed().as_secs_f64();
    let server_cpu_pct = (cpu(server_pids) - srv0) / wall * 100.0;
    let load_cpu_pct = (cpu(&load_pids) - load0) / wall * 100.0;
    let (machine_cpu_pct, steal_pct) = sys::MachineCpu::now().since(&machine0);
    let other_cpu_pct = (machine_cpu_pct - server_cpu_pct - load_cpu_pct).max(0.0);
    let latency = Latency::of(&hist, true);
    let hist = hist.clone();
    // The rate the publishers held: a publisher held back by the server
    // (TCP backpressure) sends every message, but late.
    let achieved = sent.sent as f64 / sent.secs.max(opts.secs) / rate;
    let kept_up = closed == 0 && received as f64 >= expected as f64 * 0.999 && achieved >= 0.95;
    let why = if closed > 0 {
        format!("{closed} connections closed")
    } else if (received as f64) < expected as f64 * 0.999 {
        format!("behind: {received} of {expected} delivered")
    } else if achieved < 0.95 {
        format!("publisher behind: {:.0}% of the rate", achieved * 100.0)
    } else if latency.p99 >= opts.p99_limit_ms {
        format!("p99 {:.1} ms", latency.p99)
    } else {
        String::new()
    };
    Ok(StepResult {
        rate,
        sent: sent.sent,
        expected,
        received,
        late,
        deliveries_per_s: received as f64 / sent.secs.max(1e-9),
        drained_per_s: received as f64 / (sent.secs + drain_secs).max(1e-9),
        latency,
        publisher_lag_ms: sent.lag_ms,
        server_cpu_pct,
        load_cpu_pct,
        machine_cpu_pct,
        other_cpu_pct,
        steal_pct,
        closed,
        pass: why.is_empty(),
        kept_up,
        attempt: 1,
        hist: Some(hist),
        why,
    })
}

/// Most latency failures tolerated before any step passed (see
/// [`run_ladder`]).
const COLD_FAILURES: usize = 4;

/// Steps the rate up until a step fails after one passed (or the rates or
/// the time budget run out), then narrows the highest passing rate (see
/// [`Climb::refine`]).
///
/// Latency does not always grow with the rate on a virtual machine: at a
/// few messages per second every burst finds the CPUs halted, and waking
/// them costs more than the work. So a step that fails on latency alone
/// before any step passed does not end the ladder (up to
/// [`COLD_FAILURES`] of them); falling behind or losing a connection
/// always does.
pub async fn run_ladder(
    driver: &mut Driver,
    receivers: u64,
    opts: &LadderOpts,
    server_pids: &[u32],
    label: &str,
) -> Result<Vec<StepResult>> {
    let mut climb = Climb { driver, receivers, opts, server_pids, label };
    wait_quiet().await;
    let started = Instant::now();
    let mut steps: Vec<StepResult> = Vec::new();
    let mut last_pass: Option<f64> = None;
    let mut first_fail: Option<f64> = None;
    let mut cold = 0;
    for (i, &rate) in opts.rates.iter().enumerate() {
        if started.elapsed().as_secs_f64() > opts.budget_secs {
            eprintln!("  {label}: time budget spent");
            break;
        }
        let r = climb.step(i as u32 + 1, rate).await?;
        let (pass, latency_only) = (r.pass, r.why.starts_with("p99"));
        steps.push(r);
        if pass {
            last_pass = Some(rate);
        } else if opts.until_behind && latency_only {
            // Latency failed but every delivery arrived: keep stepping.
        } else if last_pass.is_none() && latency_only && cold < COLD_FAILURES {
            cold += 1;
        } else {
            first_fail = Some(rate);
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    if opts.refine {
        climb.refine(&mut steps, first_fail).await?;
    }
    Ok(steps)
}

/// Bisection steps after a ladder (see [`Climb::refine`]).
const REFINE_STEPS: usize = 2;

/// Other work on the machine above which a failed step is not believed.
const NOISY_PCT: f64 = 25.0;

/// One target's ladder: what every step of it needs.
struct Climb<'a> {
    driver: &'a mut Driver,
    receivers: u64,
    opts: &'a LadderOpts,
    server_pids: &'a [u32],
    label: &'a str,
}

impl Climb<'_> {
    /// Runs a step; a step that failed while other processes took more
    /// than [`NOISY_PCT`] of the CPU is run again after the machine is
    /// quiet (twice at most), so that another tenant's build does not
    /// decide a ladder. The same rule applies to every target.
    async fn step(&mut self, step: u32, rate: f64) -> Result<StepResult> {
        let label = self.label;
        let mut tries = 0;
        loop {
            let n = step + 1000 * tries;
            let mut r =
                run_step(self.driver, n, rate, self.receivers, self.opts, self.server_pids).await?;
            r.attempt = tries + 1;
            print_step(label, &r);
            if r.pass || r.closed > 0 || tries >= 2 || r.other_cpu_pct <= NOISY_PCT {
                return Ok(r);
            }
            tries += 1;
            eprintln!(
                "  {label}: again after the machine is quiet (other processes: {:.0}% CPU)",
                r.other_cpu_pct
            );
            wait_quiet().await;
        }
    }

    /// Narrows the highest passing rate: between it and the next rate
    /// tried above it (which failed), tries the geometric middle, then the
    /// middle of whichever half it leaves, [`REFINE_STEPS`] times at most.
    /// Without this the figure moves only in whole ladder steps (100 to 200
    /// msg/s, say), and a ratio between two targets is mostly the ladder's
    /// rounding.
    async fn refine(&mut self, steps: &mut Vec<StepResult>, first_fail: Option<f64>) -> Result<()> {
        if steps.iter().any(|s| s.closed > 0) {
            return Ok(());
        }
        let Some(mut pass) = steps.iter().filter(|s| s.pass).map(|s| s.rate).reduce(f64::max)
        else {
            return Ok(());
        };
        let above = steps.iter().filter(|s| s.rate > pass).map(|s| s.rate).reduce(f64::min);
        let Some(mut fail) = above.or(first_fail) else {
            return Ok(());
        };
        for _ in 0..REFINE_STEPS {
            let mid = round2((pass * fail).sqrt());
            if mid <= pass * 1.1 || mid >= fail * 0.95 {
                break;
            }
            // The ladder ended on a step the target could not keep up
            // with; its backlog must drain first, or it decides this step.
            wait_quiet().await;
            let r = self.step(steps.len() as u32 + 1, mid).await?;
            let (passed, closed) = (r.pass, r.closed > 0);
            steps.push(r);
            if closed {
                break;
            }
            if passed {
                pass = mid;
            } else {
                fail = mid;
            }
        }
        Ok(())
    }
}

/// Whether [`wait_quiet`] waits (off for smoke runs, which measure nothing).
static PATIENT: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(true);

/// Turns waiting for a quiet machine on or off.
pub fn set_patient(on: bool) {
    PATIENT.store(on, std::sync::atomic::Ordering::Relaxed);
}

/// Waits (at most two minutes) until the machine is nearly idle: below
/// [`NOISY_PCT`] busy over two consecutive half-second windows. Between
/// steps the harness's own processes are idle, so what is busy is others.
pub async fn wait_quiet() {
    if !PATIENT.load(std::sync::atomic::Ordering::Relaxed) {
        return;
    }
    let started = Instant::now();
    let mut calm = 0;
    while calm < 2 && started.elapsed() < Duration::from_secs(120) {
        let before = sys::MachineCpu::now();
        tokio::time::sleep(Duration::from_millis(500)).await;
        let (busy, _) = sys::MachineCpu::now().since(&before);
        calm = if busy < NOISY_PCT { calm + 1 } else { 0 };
    }
}

/// The step with the most deliveries per second among those that kept up.
pub fn sustained(steps: &[StepResult]) -> Option<&StepResult> {
    steps
        .iter()
        .filter(|s| s.kept_up)
        .max_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s))
}

/// The passing step with the highest rate.
pub fn best(steps: &[StepResult]) -> Option<&StepResult> {
    steps.iter().filter(|s| s.pass).max_by(|a, b| a.rate.total_cmp(&b.rate))
}

fn round2(x: f64) -> f64 {
    let mag = 10f64.powf(x.log10().floor() - 1.0);
    (x / mag).round() * mag
}

fn print_step(label: &str, r: &StepResult) {
    eprintln!(
        "  {label}: {:>7} msg/s -> {:>10.0} deliveries/s  p50 {:>7.3}  p99 {:>8.3}  max {:>8.3} ms  cpu srv {:>4.0}% load {:>4.0}% other {:>4.0}% steal {:>3.0}%  {}",
        r.rate,
        r.deliveries_per_s,
        r.latency.p50,
        r.latency.p99,
        r.latency.max,
        r.server_cpu_pct,
        r.load_cpu_pct,
        r.other_cpu_pct,
        r.steal_pct,
        if r.pass { "ok".to_owned() } else { r.why.clone() }
    );
}
