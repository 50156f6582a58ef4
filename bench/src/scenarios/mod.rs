//! The scenarios. Each runs its targets (wscluster on the Mesh and on
//! Redis, and where the issue asks, the ceiling and Socket.IO) in one
//! invocation, `runs` times, and writes `NAME.json`, `NAME.md` and
//! `NAME.png` under the output folder.

pub mod channels;
pub mod fanout;
pub mod idle;
pub mod latency;

use std::path::{Path, PathBuf};

use anyhow::Result;
use serde_json::Value;

use crate::procs::{Engine, NodeOpts};
use crate::sys;

/// What every scenario needs.
pub struct Ctx {
    /// The `wscluster` binary.
    pub bin: PathBuf,
    /// This harness's own binary (the ceiling server and idle clients are
    /// its hidden subcommands).
    pub self_exe: PathBuf,
    /// Results folder.
    pub out: PathBuf,
    /// Tiny sizes, one run: checks the harness, measures nothing.
    pub smoke: bool,
    /// Repetitions (medians are taken over them).
    pub runs: usize,
    /// Engines to run.
    pub engines: Vec<Engine>,
    /// Command the server runs under (see [`NodeOpts::wrap`]).
    pub wrap: Vec<String>,
    /// Attach `perf record` to the nodes.
    pub perf: bool,
}

impl Ctx {
    /// Logs folder.
    pub fn logs(&self) -> PathBuf {
        self.out.join("logs")
    }

    /// How to start nodes of `engine` with extra flags.
    pub fn node_opts(&self, engine: Engine, extra: &[&str]) -> NodeOpts {
        NodeOpts {
            bin: self.bin.clone(),
            engine,
            extra: extra.iter().map(|s| s.to_string()).collect(),
            logs: self.logs(),
            wrap: self.wrap.clone(),
            perf: self.perf,
        }
    }

    /// Writes `NAME.json` and `NAME.md`, prints the Markdown.
    pub fn write(&self, name: &str, json: &Value, md: &str) -> Result<()> {
        std::fs::create_dir_all(&self.out)?;
        let mut json = json.clone();
        json["machine"] = sys::machine();
        json["smoke"] = Value::Bool(self.smoke);
        json["runs"] = Value::from(self.runs);
        std::fs::write(
            self.out.join(format!("{name}.json")),
            serde_json::to_string_pretty(&json)?,
        )?;
        let md = if self.smoke {
            format!(
                "{md}\n> Smoke run (tiny sizes, one run): it checks the harness; the figures measure nothing.\n"
            )
        } else {
            md.to_owned()
        };
        std::fs::write(self.out.join(format!("{name}.md")), &md)?;
        println!("{md}");
        Ok(())
    }

    /// `OUT/NAME.png`.
    pub fn png(&self, name: &str) -> PathBuf {
        self.out.join(format!("{name}.png"))
    }
}

/// Thousands separators for a count.
pub fn count(v: f64) -> String {
    let s = format!("{:.0}", v);
    let mut out = String::new();
    for (i, ch) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// `a / b`, or 0 when `b` is 0.
pub fn ratio(a: f64, b: f64) -> f64 {
    if b > 0.0 { a / b } else { 0.0 }
}

/// A line for reports naming the machine.
pub fn machine_line() -> String {
    let m = sys::machine();
    format!(
        "Machine: {} cores, {}, {} GiB, Linux {}; loopback only; the load generator shares the cores.",
        m["cores"],
        m["cpu"].as_str().unwrap_or("?"),
        m["memory_gib"],
        m["kernel"].as_str().unwrap_or("?")
    )
}

/// Writes a plot, reporting (not failing on) a drawing error.
pub fn plot_or_warn(path: &Path, r: Result<()>) {
    match r {
        Ok(()) => eprintln!("plot: {}", path.display()),
        Err(e) => eprintln!("plot {} failed: {e}", path.display()),
    }
}
