"""What every interop test file shares: timeouts, the async-test runner and
a JSON-over-WebSocket client that the protocol-specific clients extend.

Tests are plain sync functions that run their own event loop (no
pytest-asyncio), and every receive has a timeout, so a server that stops
answering fails a test instead of hanging the suite.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import uuid
from typing import Any

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

RECV_TIMEOUT = float(os.environ.get("SGC_RECV_TIMEOUT", "5"))
SILENCE = float(os.environ.get("SGC_SILENCE", "0.4"))
TEST_TIMEOUT = 60.0


def async_test(fn):
    """Run an async test body in a fresh event loop with an overall timeout."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            asyncio.run(asyncio.wait_for(fn(*args, **kwargs), TEST_TIMEOUT))
        except asyncio.TimeoutError:
            raise AssertionError(f"test did not finish within {TEST_TIMEOUT}s") from None

    return wrapper


def uniq(prefix: str) -> str:
    """A name no other test (or earlier run) uses."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"


async def open_ws(url: str, subprotocols: list[str] | None, **kw: Any) -> ClientConnection:
    """A `websockets` client connection with the suite's timeouts and no
    keep-alive pings (so nothing but the test's own frames is exchanged)."""
    return await connect(
        url,
        subprotocols=[Subprotocol(s) for s in subprotocols or []] or None,
        proxy=None,
        open_timeout=RECV_TIMEOUT,
        close_timeout=2,
        ping_interval=None,
        **kw,
    )


class JsonClient:
    """A connection exchanging JSON text frames; keeps what it received so a
    failure can show the last few messages."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.received: list[Any] = []

    async def send(self, obj: Any) -> None:
        await self.ws.send(obj if isinstance(obj, (str, bytes)) else json.dumps(obj))

    async def recv_raw(self, timeout: float = RECV_TIMEOUT) -> str | bytes:
        try:
            data = await asyncio.wait_for(self.ws.recv(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(
                f"no message within {timeout}s; earlier messages on this connection: "
                f"{self.received[-5:]!r}"
            ) from None
        self.received.append(data)
        return data

    async def recv(self, timeout: float = RECV_TIMEOUT) -> Any:
        data = await self.recv_raw(timeout)
        if isinstance(data, bytes):
            raise AssertionError(f"expected a text frame, got a binary frame {data[:80]!r}")
        try:
            return json.loads(data)
        except ValueError:
            raise AssertionError(f"server sent a text frame that is not JSON: {data[:200]!r}") from None

    async def expect_silence(self, seconds: float = SILENCE) -> None:
        try:
            data = await asyncio.wait_for(self.ws.recv(), seconds)
        except asyncio.TimeoutError:
            return
        except ConnectionClosed as exc:
            raise AssertionError(f"connection closed while expecting silence: {exc!r}") from None
        raise AssertionError(f"expected no message, got {data!r}")

    async def close(self) -> None:
        try:
            await asyncio.wait_for(self.ws.close(), 3)
        except Exception:
            pass
