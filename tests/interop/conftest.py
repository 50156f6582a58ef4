"""Fixtures for the independent-client interop tests.

The server under test is the real `wscluster` binary, started as a
subprocess on an OS-chosen port.  Its path comes from `WSCLUSTER_BIN`
(default: `target/debug/wscluster` under the repository root).
"""

from __future__ import annotations

import os
import re
import selectors
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
        cmd = [str(binary), "serve", "--listen", "127.0.0.1:0", *self.extra_args]
        self.proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            start_new_session=True,  # keep our Ctrl-C / signals away from it
        )
        line = self._read_first_line(START_TIMEOUT)
        m = LISTEN_RE.match(line)
        if not m:
            self.stop()
            pytest.fail(
                f"expected first stdout line 'listening 127.0.0.1:PORT' from {cmd}, "
                f"got {line!r}\n--- server stderr ---\n{self.stderr_text()}",
                pytrace=False,
            )
        self.host, self.port = m.group(1), int(m.group(2))
        # Keep draining stdout so that stray output can never block the server.
        self._drain = threading.Thread(target=self._drain_stdout, daemon=True)
        self._drain.start()
        return self

    def _read_first_line(self, timeout: float) -> str:
        assert self.proc is not None and self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        sel = selectors.DefaultSelector()
        sel.register(fd, selectors.EVENT_READ)
        buf = b""
        deadline = time.monotonic() + timeout
        try:
            while b"\n" not in buf:
                left = deadline - time.monotonic()
                if left <= 0:
                    return f"<no line within {timeout}s; partial {buf!r}>"
                if not sel.select(left):
                    continue
                chunk = os.read(fd, 4096)
                if not chunk:
                    return f"<stdout closed (exit code {self.proc.poll()}); partial {buf!r}>"
                buf += chunk
        finally:
            sel.close()
        first, _, rest = buf.partition(b"\n")
        if rest.strip():
            # The contract says exactly one line; more output is a bug, but
            # keep the evidence instead of silently dropping it.
            self.extra_stdout = rest
        return first.decode("utf-8", "replace").rstrip("\r")

    def _drain_stdout(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        try:
            while self.proc.stdout.read(4096):
                pass
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
