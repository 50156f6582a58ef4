//! The real `wscluster` binary as a child process.

use std::net::SocketAddr;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::time::timeout;

use super::TIMEOUT;

/// The real `wscluster` binary, running `serve` on an OS-chosen port.
pub struct Binary {
    child: Child,
    /// The address it printed on stdout.
    pub addr: SocketAddr,
}

impl Binary {
    /// Starts `wscluster serve` on `127.0.0.1:0` (its cluster links on an
    /// OS-chosen port too) plus `extra` arguments, and waits for its
    /// `listening ADDR` line.
    pub async fn start(extra: &[&str]) -> Self {
        let mut command = Command::new(env!("CARGO_BIN_EXE_wscluster"));
        command
            .args(["serve", "--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0"])
            .args(extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true);
        // Settings from the environment must not leak into the test.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("WSCLUSTER_") {
                command.env_remove(name);
            }
        }
        let mut child = command.spawn().expect("spawn the wscluster binary");

        let stdout = child.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        let find = async {
            while let Some(line) = lines.next_line().await.expect("read stdout") {
                if let Some(addr) = line.strip_prefix("listening ") {
                    return addr.trim().parse().expect("an address after `listening`");
                }
            }
            panic!("stdout ended before the `listening` line");
        };
        let addr = timeout(TIMEOUT, find).await.expect("`listening` line within the timeout");

        // Keep reading, so a later line never meets a closed pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Self { child, addr }
    }

    /// Sends a signal (`TERM` or `INT`) with the system's `kill` command,
    /// once the process has a handler installed for it.
    pub async fn signal(&self, name: &str) {
        let pid = self.child.id().expect("running child");
        let number = match name {
            "INT" => 2,
            "TERM" => 15,
            other => panic!("no signal number known for {other}"),
        };
        // FIXME: the binary prints `listening` before it installs its
        // signal handlers; a signal sent in between takes the default
        // action and kills it. Wait until the handler shows in
        // /proc/PID/status (SigCgt), where that file exists.
        let installed = async {
            while !catches(pid, number) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        timeout(TIMEOUT, installed).await.expect("signal handler installed");

        let status = Command::new("kill")
            .args(["-s", name, &pid.to_string()])
            .status()
            .await
            .expect("run kill");
        assert!(status.success(), "kill -s {name} {pid} failed");
    }

    /// Waits for the process to exit; returns how it ended.
    pub async fn wait(mut self, within: Duration) -> ExitStatus {
        timeout(within, self.child.wait())
            .await
            .expect("process exits within the limit")
            .expect("wait for the child")
    }
}

/// Whether process `pid` catches signal `number`, from the `SigCgt` mask
/// of `/proc/PID/status`. True when that file cannot be read (not Linux).
fn catches(pid: u32, number: u32) -> bool {
    let Ok(status) = std::fs::read_to_string(format!("/proc/{pid}/status")) else {
        return true;
    };
    status
        .lines()
        .find_map(|l| l.strip_prefix("SigCgt:"))
        .and_then(|mask| u64::from_str_radix(mask.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (number - 1)) != 0)
}
