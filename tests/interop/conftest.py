"""Fixtures for the independent-client interop tests.

The server under test is the real `wscluster` binary, started as a
subprocess on an OS-chosen port.  Its path comes from `WSCLUSTER_BIN`
(default: `target/debug/wscluster` under the repository root).
"""

from __future__ import annotations

import atexit
import os
import re
import selectors
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
LISTEN_RE = re.compile(r"^listening (\S+):(\d+)$")
START_TIMEOUT = 15.0  # seconds to wait for the `listening` line
STOP_TIMEOUT = 5.0  # seconds to wait after SIGTERM before SIGKILL

# Servers still running; killed at interpreter exit whatever happens.
_LIVE: set["ServerProc"] = set()


@atexit.register
def _kill_leftovers() -> None:
    for srv in list(_LIVE):
        if srv.proc is not None and srv.proc.poll() is None:
            srv.proc.kill()


def _on_sigterm(signum, frame):  # e.g. `timeout` expiring: unwind, run teardowns
    raise SystemExit(128 + signum)


signal.signal(signal.SIGTERM, _on_sigterm)


def _server_env() -> dict[str, str]:
    """Our environment minus WSCLUSTER_* (the server reads its settings from
    WSCLUSTER_* variables; the tests rely on the defaults)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("WSCLUSTER_")}


def server_binary() -> Path:
    raw = os.environ.get("WSCLUSTER_BIN", "target/debug/wscluster")
    path = Path(raw)
    if not path.is_absolute():
        path = REPO_ROOT / path
    return path


class ServerProc:
    """One `wscluster serve` subprocess."""

    def __init__(self, *extra_args: str) -> None:
        self.extra_args = list(extra_args)
        self.proc: subprocess.Popen[bytes] | None = None
        self.host = ""
        self.port = 0
        self._stderr = tempfile.TemporaryFile()
        self._drain: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------
    def start(self) -> "ServerProc":
        binary = server_binary()
        if not binary.is_file() or not os.access(binary, os.X_OK):
            pytest.fail(
                f"server binary {binary} not found or not executable "
                "(run `cargo build` or set WSCLUSTER_BIN)",
                pytrace=False,
            )
        cmd = [
            str(binary), "serve", "--listen", "127.0.0.1:0", "--cluster-listen", "127.0.0.1:0",
            *shlex.split(os.environ.get("INTEROP_SERVER_ARGS", "")),
            *self.extra_args,
        ]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            env=_server_env(),
        )
        _LIVE.add(self)
        self.stdout_lines: list[str] = []
        self._buf = b""
        # The contract is one line, `listening HOST:PORT`, printed first.
        # Lines before it are tolerated here (so that one contract slip does
        # not hide every other result) but kept: test_stdout_contract
        # reports them.
        m = None
        deadline = time.monotonic() + START_TIMEOUT
        while m is None:
            line = self._read_line(deadline)
            if line is None:
                self.stop()
                pytest.fail(
                    f"no 'listening 127.0.0.1:PORT' line on stdout from {cmd} "
                    f"(stdout lines: {self.stdout_lines!r}, unterminated: {self._buf!r}, "
                    f"exit code: {self.proc.poll()})\n--- server stderr ---\n{self.stderr_text()}",
                    pytrace=False,
                )
            self.stdout_lines.append(line)
            m = LISTEN_RE.match(line)
        self.host, self.port = m.group(1), int(m.group(2))
        # Keep draining stdout so that stray output can never block the server.
        self._drain = threading.Thread(target=self._drain_stdout, daemon=True)
        self._drain.start()
        return self

    def _read_line(self, deadline: float) -> str | None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        try:
            while b"\n" not in self._buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                if not sel.select(left):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    return None
                self._buf += chunk
        finally:
            sel.close()
        line, _, self._buf = self._buf.partition(b"\n")
        return line.decode("utf-8", "replace").rstrip("\r")

    def _drain_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        try:
            while True:
                # lines already buffered while looking for `listening` first
                while b"\n" in self._buf:
                    line, _, self._buf = self._buf.partition(b"\n")
                    self.stdout_lines.append(line.decode("utf-8", "replace").rstrip("\r"))
                chunk = os.read(fd, 4096)
                if not chunk:
                    break
                self._buf += chunk
        except (OSError, ValueError):
            pass

    def stop(self) -> int | None:
        """SIGTERM, wait, then SIGKILL. Returns the exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                self.proc.send_signal(signal.SIGTERM)
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(STOP_TIMEOUT)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        _LIVE.discard(self)
        return self.proc.returncode

    # -- helpers -----------------------------------------------------------
    @property
    def addr(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def url(self) -> str:
        return f"ws://{self.addr}/"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stderr_text(self, limit: int = 4000) -> str:
        self._stderr.seek(0)
        data = self._stderr.read().decode("utf-8", "replace")
        return data[-limit:]


@pytest.fixture(scope="module")
def server():
    """A shared server for the tests of one module (tests use distinct channels)."""
    srv = ServerProc().start()
    yield srv
    crashed = not srv.alive()
    code = srv.stop()
    if crashed:
        pytest.fail(
            f"server exited during the tests (code {code})\n--- server stderr ---\n"
            f"{srv.stderr_text()}",
            pytrace=False,
        )


@pytest.fixture
def server_factory():
    """Start extra servers with custom flags; all are stopped at test end."""
    started: list[ServerProc] = []

    def make(*extra_args: str) -> ServerProc:
        srv = ServerProc(*extra_args).start()
        started.append(srv)
        return srv

    yield make
    for srv in started:
        srv.stop()
