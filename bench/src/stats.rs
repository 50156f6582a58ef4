//! Latency recording shared by many reader tasks, and its summary.
//!
//! Readers record into one of a few shards (each a mutex around an HDR
//! histogram), so two worker threads rarely meet on one lock and memory
//! does not grow with the number of connections. A step number in every
//! message keeps a late arrival from one step out of the next one's figures.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::client::parse_stamp;

/// Shards of the latency histogram.
const SHARDS: usize = 32;

/// Largest latency recorded, in microseconds (two minutes); larger values
/// are clamped to it.
const MAX_US: u64 = 120_000_000;

/// A latency histogram in microseconds with three significant digits.
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_US, 3).expect("valid bounds")
}

struct Shard {
    hist: Histogram<u64>,
    received: u64,
    late: u64,
}

/// What every reader of one run records into.
pub struct Stats {
    step: AtomicU32,
    shards: Vec<Mutex<Shard>>,
    closed: AtomicU64,
}

impl Default for Stats {
    fn default() -> Self {
        let shard = || Mutex::new(Shard { hist: histogram(), received: 0, late: 0 });
        Self {
            step: AtomicU32::new(0),
            shards: (0..SHARDS).map(|_| shard()).collect(),
            closed: AtomicU64::new(0),
        }
    }
}

impl Stats {
    /// Records one received frame read at `now_ns`.
    pub fn record(&self, shard: usize, frame: &str, now_ns: u64) {
        let Some((step, sent_ns)) = parse_stamp(frame) else { return };
        let us = (now_ns.saturating_sub(sent_ns) / 1000).clamp(1, MAX_US);
        let mut s = self.shards[shard % SHARDS].lock().unwrap_or_else(|e| e.into_inner());
        if step == self.step.load(Ordering::Relaxed) {
            s.received += 1;
            let _ = s.hist.record(us);
        } else {
            s.late += 1;
        }
    }

    /// A connection closed (a failure while a run is on).
    pub fn closed(&self) {
        self.closed.fetch_add(1, Ordering::Relaxed);
    }

    /// Connections closed so far.
    pub fn closed_count(&self) -> u64 {
        self.closed.load(Ordering::Relaxed)
    }

    /// Starts step `step`: clears every shard.
    pub fn begin(&self, step: u32) {
        self.step.store(step, Ordering::Relaxed);
        for s in &self.shards {
            let mut s = s.lock().unwrap_or_else(|e| e.into_inner());
            s.hist.reset();
            s.received = 0;
            s.late = 0;
        }
    }

    /// Messages of the current step received so far.
    pub fn received(&self) -> u64 {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).received).sum()
    }

    /// The current step's counts and merged histogram.
    pub fn collect(&self) -> (u64, u64, Histogram<u64>) {
        let mut hist = histogram();
        let (mut received, mut late) = (0, 0);
        for s in &self.shards {
            let s = s.lock().unwrap_or_else(|e| e.into_inner());
            received += s.received;
            late += s.late;
            let _ = hist.add(&s.hist);
        }
        (received, late, hist)
    }
}

/// Latency percentiles in milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    /// Samples.
    pub count: u64,
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// The distribution for plots: (percentile, ms) pairs.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub curve: Vec<(f64, f64)>,
}

impl Latency {
    /// Summarises a histogram in microseconds; `curve` keeps the percentile
    /// curve for a latency plot.
    pub fn of(h: &Histogram<u64>, curve: bool) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
        let curve = if curve { percentile_curve(h) } else { Vec::new() };
        Self {
            count: h.len(),
            p50: ms(0.5),
            p90: ms(0.9),
            p99: ms(0.99),
            p999: ms(0.999),
            max: h.max() as f64 / 1000.0,
            curve,
        }
    }
}

/// Points from the 0th to the 99.99th percentile, denser towards the tail.
fn percentile_curve(h: &Histogram<u64>) -> Vec<(f64, f64)> {
    let mut out = Vec::new();
    for i in 0..=80 {
        // 1 - 10^(-i/20): 0, 10.9%, …, 99.99%.
        let q = 1.0 - 10f64.powf(-(i as f64) / 20.0);
        out.push((q * 100.0, h.value_at_quantile(q) as f64 / 1000.0));
    }
    out.push((100.0, h.max() as f64 / 1000.0));
    out
}

/// The median of `values` (mean of the middle two for an even count).
pub fn median(values: &mut [f64]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n % 2 == 1 { values[n / 2] } else { (values[n / 2 - 1] + values[n / 2]) / 2.0 }
}
