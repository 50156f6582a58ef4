"""Interop tests: an independent client (Python `websockets`) against `wscluster`.

Every expectation here comes from /work/shared/spec/sgc-protocol.md (the sgc
protocol, sub-protocol `esegece.com`).  Messages are compared as parsed JSON
(key order is free); where the spec gives an exact shape the comparison is
exact, so an extra or missing key fails the test.

Every receive has a timeout (RECV_TIMEOUT); "nothing arrives" checks wait
SILENCE seconds.  Tests are plain sync functions running their own event loop
(no pytest-asyncio needed).
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import json
import os
import re
import signal
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from interop_support import RECV_TIMEOUT, JsonClient, async_test, open_ws, uniq

SGC = Subprotocol("esegece.com")
GUID_RE = re.compile(
    r"^\{?[0-9A-Fa-f]{8}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{4}-[0-9A-Fa-f]{12}\}?$"
)
DEFAULT_MAX_MESSAGE = 1048576


# --------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------


def req(method: str, params: Any = None, id: Any = None, **extra: Any) -> dict:
    msg: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        msg["params"] = params
    if id is not None:
        msg["id"] = id
    msg.update(extra)
    return msg


def ack(id: Any) -> dict:
    return {"jsonrpc": "2.0", "result": {"method": "sgc@acknowledgment"}, "id": id}


def event(channel: str, message: Any) -> dict:
    return {"jsonrpc": "2.0", "result": {"method": "sgc@event", "channel": channel, "message": message}}


def sub_result(channel: str, id: Any = None) -> dict:
    msg = {"jsonrpc": "2.0", "result": {"method": "sgc@subscribe", "channel": channel}}
    if id is not None:
        msg["id"] = id
    return msg


def is_ack(msg: Any) -> bool:
    return (
        isinstance(msg, dict)
        and isinstance(msg.get("result"), dict)
        and msg["result"].get("method") == "sgc@acknowledgment"
    )


def check_error(msg: Any, code: int, id: Any = None) -> None:
    """A JSON-RPC error with the given code; `id` must be present (null when none)."""
    assert isinstance(msg, dict), f"expected a JSON-RPC error object, got {msg!r}"
    assert msg.get("jsonrpc") == "2.0", f"error lacks jsonrpc 2.0: {msg!r}"
    err = msg.get("error")
    assert isinstance(err, dict), f"expected an 'error' member, got {msg!r}"
    assert err.get("code") == code, f"expected error code {code}, got {msg!r}"
    assert isinstance(err.get("message"), str), f"error.message must be a string: {msg!r}"
    assert "id" in msg, f"error must carry 'id' (null when the request had none): {msg!r}"
    assert msg["id"] == id, f"expected error id {id!r}, got {msg!r}"
    assert set(msg) <= {"jsonrpc", "error", "id"}, f"unexpected keys in error: {msg!r}"
    assert set(err) <= {"code", "message", "data"}, f"unexpected keys in error object: {msg!r}"


def check_session(msg: Any) -> str:
    """The session message shape from the spec; returns the GUID."""
    assert isinstance(msg, dict), f"session message is not a JSON object: {msg!r}"
    assert set(msg) == {"jsonrpc", "result", "qos", "id"}, (
        f"session message keys: expected jsonrpc,result,qos,id; got {msg!r}"
    )
    assert msg["jsonrpc"] == "2.0", msg
    assert msg["qos"] == "qosLevel0", msg
    res = msg["result"]
    assert isinstance(res, dict) and set(res) == {"method", "message"}, msg
    assert res["method"] == "sgc@session", msg
    guid = res["message"]
    assert isinstance(guid, str) and GUID_RE.match(guid), f"session id is not a GUID: {msg!r}"
    assert msg["id"] == guid, f"session 'id' must equal result.message: {msg!r}"
    return guid


class Client(JsonClient):
    """A `websockets` connection speaking sgc."""

    def __init__(self, ws: ClientConnection, session_msg: Any) -> None:
        super().__init__(ws)
        self.session_msg = session_msg

    @classmethod
    async def open(
        cls, url: str, subprotocols: list[str] | None = None, expect_session: bool = True, **kw: Any
    ) -> "Client":
        if subprotocols is None:
            subprotocols = [SGC]
        ws = await open_ws(url, subprotocols, max_size=kw.pop("max_size", 8 * 2**20), **kw)
        client = cls(ws, None)
        if expect_session:
            first = await client.recv()
            client.session_msg = first
        return client

    @property
    def session_id(self) -> str | None:
        try:
            return self.session_msg["result"]["message"]
        except (TypeError, KeyError):
            return None

    async def recv_skip_acks(self, timeout: float = RECV_TIMEOUT) -> Any:
        while True:
            msg = await self.recv(timeout)
            if not is_ack(msg):
                return msg

    async def expect(self, expected: Any, timeout: float = RECV_TIMEOUT) -> Any:
        msg = await self.recv(timeout)
        assert msg == expected, f"\nexpected: {json.dumps(expected)}\nobserved: {json.dumps(msg)}"
        return msg

    async def subscribe(self, channel: str) -> None:
        await self.send(req("sgc@subscribe", {"channel": channel}))
        await self.expect(sub_result(channel))

    async def publish(self, channel: str, message: Any, **params: Any) -> None:
        await self.send(req("sgc@publish", {"channel": channel, "message": message, **params}))

    async def alive(self) -> None:
        """The connection is open and served: `sgc@session` is answered again."""
        await self.send(req("sgc@session"))
        msg = await self.recv()
        assert msg == self.session_msg, (
            f"sgc@session should resend the session message\nexpected: {self.session_msg!r}\n"
            f"observed: {msg!r}"
        )

    async def roundtrip(self) -> None:
        """Full pub/sub through the server on a fresh channel (self-delivery)."""
        ch = uniq("roundtrip")
        await self.subscribe(ch)
        await self.publish(ch, "ping")
        await self.expect(event(ch, "ping"))

    async def expect_close(self, code: int, timeout: float = RECV_TIMEOUT) -> ConnectionClosed:
        """Read (discarding messages) until the server closes; check its close code."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise AssertionError(f"server did not close the connection within {timeout}s (expected {code})")
            try:
                data = await asyncio.wait_for(self.ws.recv(), left)
            except asyncio.TimeoutError:
                continue
            except ConnectionClosed as exc:
                got = exc.rcvd.code if exc.rcvd else None
                assert got == code, (
                    f"expected close code {code}, observed {got} "
                    f"(rcvd={exc.rcvd!r}, sent={exc.sent!r})"
                )
                return exc
            self.received.append(data)



# --------------------------------------------------------------------------
# raw helpers (for what a conforming client library refuses to send)
# --------------------------------------------------------------------------


async def raw_http(addr: str, request: bytes, timeout: float = RECV_TIMEOUT) -> tuple[int, dict, bytes]:
    host, port = addr.rsplit(":", 1)
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), timeout)
    try:
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                k, v = line.split(":", 1)
                headers[k.strip().lower()] = v.strip()
        body = b""
        if "content-length" in headers:
            n = int(headers["content-length"])
            body = await asyncio.wait_for(reader.readexactly(n), timeout) if n else b""
        elif headers.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await asyncio.wait_for(reader.readline(), timeout)).strip(), 16)
                if size == 0:
                    break
                body += await asyncio.wait_for(reader.readexactly(size + 2), timeout)
                body = body[:-2]
        elif status != 101:
            try:
                body = await asyncio.wait_for(reader.read(65536), 1.0)
            except asyncio.TimeoutError:
                pass
        return status, headers, body
    finally:
        writer.close()


def upgrade_request(addr: str, protocols: str | None) -> tuple[bytes, str]:
    key = base64.b64encode(os.urandom(16)).decode()
    lines = [
        "GET / HTTP/1.1",
        f"Host: {addr}",
        "Upgrade: websocket",
        "Connection: Upgrade",
        f"Sec-WebSocket-Key: {key}",
        "Sec-WebSocket-Version: 13",
    ]
    if protocols is not None:
        lines.append(f"Sec-WebSocket-Protocol: {protocols}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode(), key


class RawWS:
    """A minimal hand-rolled RFC 6455 client that can send malformed frames."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, addr: str) -> "RawWS":
        host, port = addr.rsplit(":", 1)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), RECV_TIMEOUT)
        request, _ = upgrade_request(addr, "esegece.com")
        writer.write(request)
        await writer.drain()
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), RECV_TIMEOUT)
        status = head.split(b" ", 2)[1]
        assert status == b"101", f"raw handshake failed: {head!r}"
        return cls(reader, writer)

    async def send_frame(self, opcode: int, payload: bytes, fin: bool = True) -> None:
        b0 = (0x80 if fin else 0) | opcode
        n = len(payload)
        if n < 126:
            header = bytes([b0, 0x80 | n])
        elif n < 65536:
            header = bytes([b0, 0x80 | 126]) + n.to_bytes(2, "big")
        else:
            header = bytes([b0, 0x80 | 127]) + n.to_bytes(8, "big")
        mask = os.urandom(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.writer.write(header + mask + masked)
        await self.writer.drain()

    async def read_frame(self, timeout: float = RECV_TIMEOUT) -> tuple[int, bytes]:
        async def _read() -> tuple[int, bytes]:
            b0, b1 = await self.reader.readexactly(2)
            n = b1 & 0x7F
            if n == 126:
                n = int.from_bytes(await self.reader.readexactly(2), "big")
            elif n == 127:
                n = int.from_bytes(await self.reader.readexactly(8), "big")
            mask = await self.reader.readexactly(4) if b1 & 0x80 else None
            data = await self.reader.readexactly(n)
            if mask:
                data = bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            return b0 & 0x0F, data

        return await asyncio.wait_for(_read(), timeout)

    async def close_code(self, timeout: float = RECV_TIMEOUT) -> int | None:
        """Read frames until a close frame; return its code (None for an empty close)."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            try:
                opcode, data = await self.read_frame(max(left, 0.01))
            except asyncio.IncompleteReadError:
                raise AssertionError("server dropped TCP without sending a close frame") from None
            except asyncio.TimeoutError:
                raise AssertionError(f"no close frame within {timeout}s") from None
            if opcode == 0x8:
                return int.from_bytes(data[:2], "big") if len(data) >= 2 else None

    def close(self) -> None:
        self.writer.close()


# --------------------------------------------------------------------------
# handshake, session, health
# --------------------------------------------------------------------------


@async_test
async def test_session_message_on_connect(server):
    c = await Client.open(server.url)
    try:
        check_session(c.session_msg)
        assert c.ws.subprotocol == "esegece.com", f"negotiated sub-protocol: {c.ws.subprotocol!r}"
    finally:
        await c.close()


@async_test
async def test_session_ids_are_unique(server):
    a = await Client.open(server.url)
    b = await Client.open(server.url)
    try:
        assert check_session(a.session_msg) != check_session(b.session_msg)
    finally:
        await a.close()
        await b.close()


@async_test
async def test_session_request_resends_session(server):
    c = await Client.open(server.url)
    try:
        await c.alive()
    finally:
        await c.close()


@pytest.mark.parametrize(
    "offered, negotiated",
    [([], None), (["esegece.com"], "esegece.com"), (["mqtt", "esegece.com"], "esegece.com")],
    ids=["none-offered", "sgc-offered", "sgc-among-others"],
)
@async_test
async def test_subprotocol_negotiation(server, offered, negotiated):
    c = await Client.open(server.url, subprotocols=offered)
    try:
        assert c.ws.subprotocol == negotiated, (
            f"offered {offered}: expected Sec-WebSocket-Protocol {negotiated!r}, got {c.ws.subprotocol!r}"
        )
        check_session(c.session_msg)
        await c.roundtrip()
    finally:
        await c.close()


@async_test
async def test_subprotocol_refused_with_http_400(server):
    bystander = await Client.open(server.url)
    try:
        request, _ = upgrade_request(server.addr, "mqtt, wamp.2.json")
        status, _headers, body = await raw_http(server.addr, request)
        assert status == 400, f"expected HTTP 400 for unknown sub-protocols, got {status} body={body!r}"
        assert b"esegece.com" in body, f"400 body should name esegece.com, got {body!r}"
        await bystander.roundtrip()
    finally:
        await bystander.close()


def test_healthz(server):
    conn = http.client.HTTPConnection(server.host, server.port, timeout=RECV_TIMEOUT)
    try:
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200, f"GET /healthz: expected 200, got {resp.status}"
    finally:
        conn.close()


@pytest.mark.parametrize("path", ["/", "/some/other/path", "/esegece.com"])
@async_test
async def test_any_path_is_websocket(server, path):
    c = await Client.open(f"ws://{server.addr}{path}")
    try:
        check_session(c.session_msg)
    finally:
        await c.close()


# --------------------------------------------------------------------------
# acknowledgements, subscribe, publish
# --------------------------------------------------------------------------


@async_test
async def test_subscribe_with_id_is_acked_then_answered(server):
    c = await Client.open(server.url)
    try:
        await c.send(req("sgc@subscribe", {"channel": "news"}, id="1"))
        await c.expect(ack("1"))
        await c.expect(sub_result("news", id="1"))
    finally:
        await c.close()


@async_test
async def test_numeric_id_echoed_as_sent(server):
    c = await Client.open(server.url)
    try:
        ch = uniq("num")
        await c.send(req("sgc@subscribe", {"channel": ch}, id=7))
        await c.expect(ack(7))
        await c.expect(sub_result(ch, id=7))
    finally:
        await c.close()


@async_test
async def test_top_level_qos_echoed_in_direct_reply(server):
    c = await Client.open(server.url)
    try:
        ch = uniq("qosecho")
        await c.send(req("sgc@subscribe", {"channel": ch}, id="s1", qos="qosLevel1"))
        msg = await c.recv_skip_acks()
        expected = {**sub_result(ch, id="s1"), "qos": "qosLevel1"}
        assert msg == expected, f"\nexpected: {json.dumps(expected)}\nobserved: {json.dumps(msg)}"
    finally:
        await c.close()


@async_test
async def test_acknowledgment_message_is_not_acked(server):
    c = await Client.open(server.url)
    try:
        await c.send(req("sgc@acknowledgment", id="not-pending"))
        await c.expect_silence()
        await c.alive()
    finally:
        await c.close()


@async_test
async def test_publish_reaches_subscriber_exactly(server):
    sub = await Client.open(server.url)
    pub = await Client.open(server.url)
    try:
        await sub.send(req("sgc@subscribe", {"channel": "news"}, id="1"))
        await sub.expect(ack("1"))
        await sub.expect(sub_result("news", id="1"))
        await pub.publish("news", "hello")
        await sub.expect(
            {"jsonrpc": "2.0", "result": {"method": "sgc@event", "channel": "news", "message": "hello"}}
        )
        # the publisher is not subscribed: it receives nothing
        await pub.expect_silence()
    finally:
        await sub.close()
        await pub.close()


@async_test
async def test_publish_with_id_acks_publisher_only(server):
    sub = await Client.open(server.url)
    pub = await Client.open(server.url)
    try:
        ch = uniq("pubid")
        await sub.subscribe(ch)
        await pub.send(req("sgc@publish", {"channel": ch, "message": "x"}, id="p-1"))
        await pub.expect(ack("p-1"))
        await sub.expect(event(ch, "x"))
        await pub.expect_silence()
    finally:
        await sub.close()
        await pub.close()


@async_test
async def test_publisher_subscribed_receives_own_event(server):
    c = await Client.open(server.url)
    try:
        ch = uniq("self")
        await c.subscribe(ch)
        await c.publish(ch, "me too")
        await c.expect(event(ch, "me too"))
    finally:
        await c.close()


@async_test
async def test_non_string_message_carried_as_json(server):
    sub = await Client.open(server.url)
    pub = await Client.open(server.url)
    try:
        ch = uniq("json")
        await sub.subscribe(ch)
        for payload in ({"a": [1, 2, {"b": None}], "u": "ü"}, 42, [True, False]):
            await pub.publish(ch, payload)
            await sub.expect(event(ch, payload))
    finally:
        await sub.close()
        await pub.close()


@async_test
async def test_channels_are_byte_exact_and_unicode(server):
    sub = await Client.open(server.url)
    pub = await Client.open(server.url)
    try:
        base = uniq("Case")
        uni = uniq("nöws-ü-日本")
        await sub.subscribe(base)
        await sub.subscribe(uni)
        await pub.publish(base.lower(), "wrong case")  # differs only by case
        await pub.publish(uni, "unicode")
        await sub.expect(event(uni, "unicode"))
        await pub.publish(base, "right case")
        await sub.expect(event(base, "right case"))
    finally:
        await sub.close()
        await pub.close()


@async_test
async def test_channel_length_limit_255_bytes(server):
    c = await Client.open(server.url)
    try:
        ok = "é" * 127 + "x"  # 255 bytes
        assert len(ok.encode()) == 255
        await c.subscribe(ok)
        await c.send(req("sgc@subscribe", {"channel": "y" * 256}))
        check_error(await c.recv(), -32602)
        await c.alive()
    finally:
        await c.close()


@async_test
async def test_subscribe_twice_is_harmless(server):
    sub = await Client.open(server.url)
    pub = await Client.open(server.url)
    try:
        ch = uniq("twice")
        await sub.subscribe(ch)
        await sub.subscribe(ch)
        await pub.publish(ch, "once")
        await sub.expect(event(ch, "once"))
        await sub.expect_silence()
    finally:
        await sub.close()
        await pub.close()


@async_test
async def test_unsubscribe_and_unsubscribe_all(server):
    sub = await Client.open(server.url)
    pub = await Client.open(server.url)
    try:
        a, b, c = uniq("ua"), uniq("ub"), uniq("uc")
        for ch in (a, b, c):
            await sub.subscribe(ch)
        await sub.send(req("sgc@unsubscribe", {"channel": a}, id="u1"))
        await sub.expect(ack("u1"))
        await sub.expect({"jsonrpc": "2.0", "result": {"method": "sgc@unsubscribe", "channel": a}, "id": "u1"})
        await pub.publish(a, "gone")
        await pub.publish(b, "still")
        await sub.expect(event(b, "still"))
        await sub.send(req("sgc@unsubscribe_all"))
        await sub.expect({"jsonrpc": "2.0", "result": {"method": "sgc@unsubscribe_all", "channel": ""}})
        await pub.publish(b, "gone too")
        await pub.publish(c, "gone too")
        await sub.expect_silence()
    finally:
        await sub.close()
        await pub.close()


# --------------------------------------------------------------------------
# broadcast
# --------------------------------------------------------------------------


@async_test
async def test_broadcast_without_channel_reaches_all(server):
    clients = [await Client.open(server.url) for _ in range(3)]
    plain = await Client.open(server.url, subprotocols=[])  # no sub-protocol offered: still sgc
    try:
        text = uniq("to everyone")
        await clients[0].send(req("sgc@broadcast", {"message": text}))
        expected = {"jsonrpc": "2.0", "result": {"method": "sgc@message", "channel": "", "message": text}}
        for c in clients + [plain]:  # including the sender
            await c.expect(expected)
    finally:
        for c in clients + [plain]:
            await c.close()


@async_test
async def test_broadcast_with_channel_reaches_only_subscribers(server):
    sub = await Client.open(server.url)
    other = await Client.open(server.url)
    sender = await Client.open(server.url)
    try:
        ch = uniq("bc")
        await sub.subscribe(ch)
        await sender.send(req("sgc@broadcast", {"message": "scoped", "channel": ch}))
        msg = await sub.recv()
        res = msg.get("result") if isinstance(msg, dict) else None
        assert isinstance(res, dict) and res.get("method") == "sgc@message" and res.get("message") == "scoped", (
            f"expected an sgc@message result with message 'scoped', observed {msg!r}"
        )
        assert res.get("channel") in (ch, ""), f"unexpected channel in scoped broadcast: {msg!r}"
        await other.expect_silence()
        await sender.expect_silence(0.05)
    finally:
        for c in (sub, other, sender):
            await c.close()


# --------------------------------------------------------------------------
# wildcards
# --------------------------------------------------------------------------


@async_test
async def test_wildcard_subscription(server):
    sub = await Client.open(server.url)
    pub = await Client.open(server.url)
    try:
        await sub.subscribe("news*")
        for ch in ("news", "news.eu", "newsroom", "other", "old-news"):
            await pub.publish(ch, f"on {ch}")
        for ch in ("news", "news.eu", "newsroom"):
            await sub.expect(event(ch, f"on {ch}"))
        await sub.expect_silence()
    finally:
        await sub.close()
        await pub.close()


@async_test
async def test_wildcard_in_the_middle(server):
    sub = await Client.open(server.url)
    pub = await Client.open(server.url)
    try:
        base = uniq("mid")
        await sub.subscribe(f"{base}.*.price")
        await pub.publish(f"{base}.eu.price", "hit")
        await pub.publish(f"{base}.eu.volume", "miss")
        await sub.expect(event(f"{base}.eu.price", "hit"))
        await sub.expect_silence()
    finally:
        await sub.close()
        await pub.close()


@async_test
async def test_exact_and_pattern_match_delivered_once(server):
    sub = await Client.open(server.url)
    pub = await Client.open(server.url)
    try:
        base = uniq("dup")
        await sub.subscribe(base)
        await sub.subscribe(base + "*")
        await pub.publish(base, "once")
        await sub.expect(event(base, "once"))
        await sub.expect_silence()
    finally:
        await sub.close()
        await pub.close()


@async_test
async def test_unsubscribe_pattern_keeps_exact(server):
    sub = await Client.open(server.url)
    pub = await Client.open(server.url)
    try:
        base = uniq("unpat")
        await sub.subscribe(base)
        await sub.subscribe(base + "*")
        await sub.send(req("sgc@unsubscribe", {"channel": base + "*"}))
        await sub.expect({"jsonrpc": "2.0", "result": {"method": "sgc@unsubscribe", "channel": base + "*"}})
        await pub.publish(base + ".sub", "pattern gone")
        await pub.publish(base, "exact kept")
        await sub.expect(event(base, "exact kept"))
        await sub.expect_silence()
    finally:
        await sub.close()
        await pub.close()


# --------------------------------------------------------------------------
# queues
# --------------------------------------------------------------------------


@async_test
async def test_queue_level1_last_message_replayed(server):
    pub = await Client.open(server.url)
    late = await Client.open(server.url)
    try:
        ch = uniq("q1")
        await pub.subscribe(ch)  # own events tell us the publishes were processed
        await pub.publish(ch, "first", queue="queueLevel1")
        await pub.publish(ch, "second", queue="queueLevel1")
        await pub.expect(event(ch, "first"))
        await pub.expect(event(ch, "second"))
        await late.subscribe(ch)
        await late.expect(event(ch, "second"))
        await late.expect_silence()
    finally:
        await pub.close()
        await late.close()


@async_test
async def test_queue_level2_all_messages_replayed_in_order(server):
    pub = await Client.open(server.url)
    late = await Client.open(server.url)
    try:
        ch = uniq("q2")
        await pub.subscribe(ch)
        for m in ("m1", "m2", "m3"):
            await pub.publish(ch, m, queue="queueLevel2")
        for m in ("m1", "m2", "m3"):
            await pub.expect(event(ch, m))
        await late.subscribe(ch)
        for m in ("m1", "m2", "m3"):
            await late.expect(event(ch, m))
        await late.expect_silence()
    finally:
        await pub.close()
        await late.close()


@async_test
async def test_queue_level0_nothing_kept(server):
    pub = await Client.open(server.url)
    late = await Client.open(server.url)
    try:
        ch = uniq("q0")
        await pub.subscribe(ch)
        await pub.publish(ch, "gone", queue="queueLevel0")
        await pub.expect(event(ch, "gone"))
        await late.subscribe(ch)
        await late.expect_silence()
    finally:
        await pub.close()
        await late.close()


# --------------------------------------------------------------------------
# transactions
# --------------------------------------------------------------------------


@async_test
async def test_transaction_commit_and_rollback(server):
    sub = await Client.open(server.url)
    tx = await Client.open(server.url)
    try:
        ch = uniq("tx")
        await sub.subscribe(ch)

        await tx.send(req("sgc@transaction", {"channel": ch}))
        await tx.publish(ch, "t1")
        await tx.publish(ch, "t2")
        await sub.expect_silence()  # held, not processed
        await tx.send(req("sgc@commit", {"channel": ch}))
        await sub.expect(event(ch, "t1"))
        await sub.expect(event(ch, "t2"))

        await tx.send(req("sgc@transaction", {"channel": ch}))
        await tx.publish(ch, "t3")
        await sub.expect_silence()
        await tx.send(req("sgc@rollback", {"channel": ch}))
        await tx.publish(ch, "t4")  # transaction closed: processed at once
        await sub.expect(event(ch, "t4"))  # t3 was dropped
        await sub.expect_silence()
    finally:
        await sub.close()
        await tx.close()


@async_test
async def test_transaction_only_holds_its_channel(server):
    sub = await Client.open(server.url)
    tx = await Client.open(server.url)
    try:
        held, free = uniq("held"), uniq("free")
        await sub.subscribe(held)
        await sub.subscribe(free)
        await tx.send(req("sgc@transaction", {"channel": held}))
        await tx.publish(held, "later")
        await tx.publish(free, "now")
        await sub.expect(event(free, "now"))
        await sub.expect_silence()
        await tx.send(req("sgc@commit", {"channel": held}))
        await sub.expect(event(held, "later"))
    finally:
        await sub.close()
        await tx.close()


@async_test
async def test_transaction_lost_when_connection_closes(server):
    sub = await Client.open(server.url)
    tx = await Client.open(server.url)
    try:
        ch = uniq("txclose")
        await sub.subscribe(ch)
        await tx.send(req("sgc@transaction", {"channel": ch}))
        await tx.publish(ch, "never")
        await tx.close()
        await sub.expect_silence()
        await sub.alive()
    finally:
        await sub.close()


# --------------------------------------------------------------------------
# QoS 2
# --------------------------------------------------------------------------


@pytest.mark.parametrize("placement", ["params", "envelope"])
@async_test
async def test_qos2_pubrec_pubrel_once_per_id(server, placement):
    sub = await Client.open(server.url)
    pub = await Client.open(server.url)
    try:
        ch = uniq("qos2")
        mid = uniq("q2id")
        await sub.subscribe(ch)
        params = {"channel": ch, "message": "exactly once"}
        extra = {}
        if placement == "params":
            params["qos"] = "qosLevel2"
        else:
            extra["qos"] = "qosLevel2"
        await pub.send(req("sgc@publish", params, id=mid, **extra))
        await pub.expect(ack(mid))
        rec = await pub.recv()
        assert isinstance(rec, dict) and rec.get("result") == {"method": "sgc@pubrec"} and rec.get("id") == mid, (
            f"expected {{'result': {{'method': 'sgc@pubrec'}}, 'id': {mid!r}}}, observed {rec!r}"
        )
        assert rec.get("jsonrpc") == "2.0", rec
        await sub.expect_silence()  # kept until released

        await pub.send(req("sgc@pubrel", id=mid))
        await pub.expect(ack(mid))
        await sub.expect(event(ch, "exactly once"))

        await pub.send(req("sgc@pubrel", id=mid))  # second release: no effect
        await pub.expect(ack(mid))
        await sub.expect_silence()
        await pub.expect_silence(0.05)
    finally:
        await sub.close()
        await pub.close()


@async_test
async def test_pubrel_unknown_id_just_acked(server):
    c = await Client.open(server.url)
    try:
        await c.send(req("sgc@pubrel", id="never-published"))
        await c.expect(ack("never-published"))
        await c.expect_silence()
    finally:
        await c.close()


# --------------------------------------------------------------------------
# misc methods
# --------------------------------------------------------------------------


@pytest.mark.parametrize("offered", [["esegece.com"], []], ids=["offered", "not-offered"])
@async_test
async def test_protocol_method_answers_text(server, offered):
    c = await Client.open(server.url, subprotocols=offered)
    try:
        await c.send(req("sgc@protocol"))
        data = await c.recv_raw()
        assert data == "esegece.com", f"expected text frame 'esegece.com', observed {data!r}"
    finally:
        await c.close()


@async_test
async def test_plain_message_is_not_relayed(server):
    sub = await Client.open(server.url)
    c = await Client.open(server.url)
    try:
        ch = uniq("plain")
        await sub.subscribe(ch)
        await c.send(req("sgc@message", {"message": "to the app", "channel": ch}))
        await c.expect_silence()
        await sub.expect_silence(0.05)
    finally:
        await sub.close()
        await c.close()


@async_test
async def test_unknown_method_with_id_is_rpc_without_handler(server):
    c = await Client.open(server.url)
    try:
        await c.send(req("math.add", {"a": 1, "b": 2}, id="r1"))
        await c.expect(ack("r1"))
        check_error(await c.recv(), -32601, id="r1")
        await c.send(req("math.add", "raw string params", id="r2"))
        await c.expect(ack("r2"))
        check_error(await c.recv(), -32601, id="r2")
    finally:
        await c.close()


@async_test
async def test_unknown_method_without_id_is_silent(server):
    c = await Client.open(server.url)
    try:
        await c.send(req("app.notify", {"x": 1}))
        await c.expect_silence()
        await c.alive()
    finally:
        await c.close()


# --------------------------------------------------------------------------
# bad input: the connection is kept and other clients are unaffected
# --------------------------------------------------------------------------

BAD_KEPT = [
    ("not-json", "this is not json", -32700),
    ("truncated-json", '{"jsonrpc":"2.0","method":"sgc@subscribe"', -32700),
    ("json-array", "[1, 2, 3]", -32700),
    ("json-number", "42", -32700),
    ("json-string", '"sgc@session"', -32700),
    ("missing-jsonrpc", {"method": "sgc@subscribe", "params": {"channel": "x"}}, -32600),
    ("jsonrpc-1.0", {"jsonrpc": "1.0", "method": "sgc@subscribe", "params": {"channel": "x"}}, -32600),
    ("jsonrpc-number", {"jsonrpc": 2.0, "method": "sgc@subscribe", "params": {"channel": "x"}}, -32600),
    ("missing-method", {"jsonrpc": "2.0", "params": {"channel": "x"}}, -32600),
    ("method-not-string", {"jsonrpc": "2.0", "method": 5}, -32600),
    ("subscribe-missing-channel", {"jsonrpc": "2.0", "method": "sgc@subscribe", "params": {}}, -32602),
    ("subscribe-no-params", {"jsonrpc": "2.0", "method": "sgc@subscribe"}, -32602),
    ("subscribe-empty-channel", {"jsonrpc": "2.0", "method": "sgc@subscribe", "params": {"channel": ""}}, -32602),
    ("subscribe-channel-number", {"jsonrpc": "2.0", "method": "sgc@subscribe", "params": {"channel": 5}}, -32602),
    ("subscribe-control-char", {"jsonrpc": "2.0", "method": "sgc@subscribe", "params": {"channel": "news\u0001"}}, -32602),
    ("subscribe-newline", {"jsonrpc": "2.0", "method": "sgc@subscribe", "params": {"channel": "a\nb"}}, -32602),
    ("subscribe-nul", {"jsonrpc": "2.0", "method": "sgc@subscribe", "params": {"channel": "a\u0000"}}, -32602),
    ("publish-missing-channel", {"jsonrpc": "2.0", "method": "sgc@publish", "params": {"message": "m"}}, -32602),
    ("publish-control-char", {"jsonrpc": "2.0", "method": "sgc@publish", "params": {"channel": "x\u001f", "message": "m"}}, -32602),
    ("publish-missing-message", {"jsonrpc": "2.0", "method": "sgc@publish", "params": {"channel": "x"}}, -32602),
    ("publish-wildcard", {"jsonrpc": "2.0", "method": "sgc@publish", "params": {"channel": "news*", "message": "m"}}, -32602),
    ("publish-channel-too-long", {"jsonrpc": "2.0", "method": "sgc@publish", "params": {"channel": "z" * 256, "message": "m"}}, -32602),
    ("broadcast-missing-message", {"jsonrpc": "2.0", "method": "sgc@broadcast", "params": {}}, -32602),
]


@pytest.mark.parametrize("payload, code", [(p, c) for _, p, c in BAD_KEPT], ids=[n for n, _, _ in BAD_KEPT])
@async_test
async def test_bad_input_answered_and_connection_kept(server, payload, code):
    bystander = await Client.open(server.url)
    c = await Client.open(server.url)
    try:
        await c.send(payload if isinstance(payload, str) else json.dumps(payload))
        check_error(await c.recv(), code, id=None)
        await c.alive()
        await bystander.roundtrip()
    finally:
        await c.close()
        await bystander.close()


@async_test
async def test_bad_params_error_carries_request_id(server):
    bystander = await Client.open(server.url)
    c = await Client.open(server.url)
    try:
        await c.send(req("sgc@subscribe", {"channel": "bad\u0002"}, id="e1"))
        check_error(await c.recv_skip_acks(), -32602, id="e1")
        await c.send(req("sgc@publish", {"channel": "a*", "message": "m"}, id=99))
        check_error(await c.recv_skip_acks(), -32602, id=99)
        await c.alive()
        await bystander.roundtrip()
    finally:
        await c.close()
        await bystander.close()


@async_test
async def test_binary_frame_is_invalid_request(server):
    bystander = await Client.open(server.url)
    c = await Client.open(server.url)
    try:
        await c.send(b'{"jsonrpc":"2.0","method":"sgc@session"}')
        check_error(await c.recv(), -32600, id=None)
        await c.alive()
        await bystander.roundtrip()
    finally:
        await c.close()
        await bystander.close()


@async_test
async def test_large_message_under_limit_is_delivered(server):
    sub = await Client.open(server.url)
    pub = await Client.open(server.url)
    try:
        ch = uniq("big")
        await sub.subscribe(ch)
        text = "x" * (DEFAULT_MAX_MESSAGE - 4096)
        await pub.publish(ch, text)
        msg = await sub.recv()
        assert msg == event(ch, text), f"large event mismatch (len {len(json.dumps(msg))})"
    finally:
        await sub.close()
        await pub.close()


@async_test
async def test_oversize_message_closes_1009(server):
    bystander = await Client.open(server.url)
    c = await Client.open(server.url)
    try:
        text = json.dumps(req("sgc@publish", {"channel": "big", "message": "x" * (DEFAULT_MAX_MESSAGE + 1024)}))
        try:
            await c.send(text)
        except ConnectionClosed:
            pass
        await c.expect_close(1009)
        await bystander.roundtrip()
    finally:
        await c.close()
        await bystander.close()


@async_test
async def test_oversize_fragmented_message_closes_1009(server):
    bystander = await Client.open(server.url)
    c = await Client.open(server.url)
    try:
        chunk = "y" * 65536  # every frame is small; the message is not

        async def fragments():
            yield '{"jsonrpc":"2.0","method":"sgc@message","params":{"message":"'
            for _ in range(DEFAULT_MAX_MESSAGE // len(chunk) + 2):
                yield chunk
            yield '"}}'

        try:
            await c.ws.send(fragments())
        except ConnectionClosed:
            pass
        await c.expect_close(1009)
        await bystander.roundtrip()
    finally:
        await c.close()
        await bystander.close()


@async_test
async def test_max_message_size_flag(server_factory):
    srv = server_factory("--max-message-size", "2048")
    bystander = await Client.open(srv.url)
    c = await Client.open(srv.url)
    try:
        ch = uniq("small")
        await c.subscribe(ch)
        await c.publish(ch, "a" * 1500)  # under the limit
        await c.expect(event(ch, "a" * 1500))
        try:
            await c.publish(ch, "b" * 4096)
        except ConnectionClosed:
            pass
        await c.expect_close(1009)
        await bystander.roundtrip()
    finally:
        await c.close()
        await bystander.close()


@pytest.mark.parametrize("fragmented", [False, True], ids=["single-frame", "fragmented"])
@async_test
async def test_invalid_utf8_text_closes_1007(server, fragmented):
    bystander = await Client.open(server.url)
    raw = await RawWS.open(server.addr)
    try:
        bad = b'{"jsonrpc":"2.0","method":"sgc@message","params":{"message":"\xff\xfe\xc3\x28"}}'
        if fragmented:
            await raw.send_frame(0x1, bad[:20], fin=False)
            await raw.send_frame(0x0, bad[20:], fin=True)
        else:
            await raw.send_frame(0x1, bad)
        code = await raw.close_code()
        assert code == 1007, f"expected close code 1007 for invalid UTF-8, observed {code}"
        await bystander.roundtrip()
    finally:
        raw.close()
        await bystander.close()


@async_test
async def test_slow_consumer_closed_1008(server_factory):
    srv = server_factory("--outbound-queue", "8")
    # max_queue=1 makes the client stop reading from the socket almost at once.
    slow = await Client.open(srv.url, max_queue=1)
    pub = await Client.open(srv.url)
    bystander = await Client.open(srv.url)
    try:
        ch = uniq("slow")
        await slow.subscribe(ch)
        blob = "s" * 65536

        async def flood():
            for i in range(600):  # ~39 MB: far more than socket buffers + 8 messages
                await pub.publish(ch, blob)
                if i % 50 == 49:
                    await asyncio.sleep(0.01)

        try:
            await asyncio.wait_for(flood(), 20)
        except asyncio.TimeoutError:
            raise AssertionError(
                "publishing 600 x 64 KiB did not finish within 20 s: the server stopped "
                "reading the publisher (a slow subscriber is blocking the fan-out?)"
            ) from None
        await asyncio.sleep(0.5)
        exc = await slow.expect_close(1008, timeout=20)
        reason = exc.rcvd.reason if exc.rcvd else None
        assert reason == "slow consumer", f"expected close reason 'slow consumer', observed {reason!r}"
        await pub.alive()
        await bystander.roundtrip()
    finally:
        for c in (slow, pub, bystander):
            await c.close()


@async_test
async def test_sigterm_closes_clients_1001_and_exits_0(server_factory):
    srv = server_factory()
    a = await Client.open(srv.url)
    b = await Client.open(srv.url, subprotocols=[])
    srv.proc.send_signal(signal.SIGTERM)
    await a.expect_close(1001)
    await b.expect_close(1001)
    loop = asyncio.get_running_loop()
    code = await loop.run_in_executor(None, lambda: srv.proc.wait(10))
    assert code == 0, f"expected exit code 0 after SIGTERM, got {code}\n{srv.stderr_text()}"


# --------------------------------------------------------------------------
# settings beyond the minimal contract (flags from `wscluster serve --help`)
# --------------------------------------------------------------------------


@async_test
async def test_queue_level2_cap_drops_oldest(server_factory):
    srv = server_factory("--kept-per-channel", "3")
    pub = await Client.open(srv.url)
    late = await Client.open(srv.url)
    try:
        ch = uniq("cap")
        await pub.subscribe(ch)
        msgs = [f"m{i}" for i in range(1, 6)]
        for m in msgs:
            await pub.publish(ch, m, queue="queueLevel2")
        for m in msgs:
            await pub.expect(event(ch, m))
        await late.subscribe(ch)
        for m in msgs[-3:]:
            await late.expect(event(ch, m))
        await late.expect_silence()
    finally:
        await pub.close()
        await late.close()


@async_test
async def test_server_qos1_events_carry_id_resent_until_acked(server_factory):
    srv = server_factory("--qos", "qosLevel1", "--resend-interval-ms", "300")
    sub = await Client.open(srv.url)
    pub = await Client.open(srv.url)

    async def next_event() -> dict:
        while True:  # the session message may be re-sent too under QoS 1
            msg = await sub.recv(3)
            if isinstance(msg, dict) and isinstance(msg.get("result"), dict):
                if msg["result"].get("method") == "sgc@session":
                    continue
            return msg

    try:
        ch = uniq("sqos")
        await sub.send(req("sgc@subscribe", {"channel": ch}))
        await sub.recv_skip_acks()  # the subscribe result
        await pub.publish(ch, "needs ack")
        first = await next_event()
        assert isinstance(first, dict) and first.get("result") == event(ch, "needs ack")["result"], (
            f"expected an sgc@event for {ch!r}, observed {first!r}"
        )
        eid = first.get("id")
        assert eid is not None, f"under server QoS 1 every sgc@event must carry an id: {first!r}"
        again = await next_event()  # not acknowledged: re-sent after ~300 ms
        assert again.get("result") == first["result"] and again.get("id") == eid, (
            f"expected a re-send of {first!r}, observed {again!r}"
        )
        await sub.send(req("sgc@acknowledgment", id=eid))
        # After the ack, no more re-sends of that event (session re-sends ignored).
        deadline = asyncio.get_running_loop().time() + 1.2
        while (left := deadline - asyncio.get_running_loop().time()) > 0:
            try:
                msg = json.loads(await asyncio.wait_for(sub.ws.recv(), left))
            except asyncio.TimeoutError:
                break
            assert not (isinstance(msg, dict) and msg.get("id") == eid), (
                f"event re-sent after it was acknowledged: {msg!r}"
            )
    finally:
        await sub.close()
        await pub.close()


# --------------------------------------------------------------------------
# process contract
# --------------------------------------------------------------------------


def test_stdout_contract(server_factory):
    """stdout carries two lines, `listening ADDR` and `cluster-listening ADDR`
    (in either order); logs go to stderr."""
    srv = server_factory()
    asyncio.run(asyncio.sleep(0.5))  # give stray output a chance to show up
    lines = sorted(srv.stdout_lines)
    assert len(lines) == 2, f"expected two stdout lines, observed {lines!r}"
    assert lines[0].startswith("cluster-listening 127.0.0.1:"), lines
    assert lines[1] == f"listening {srv.addr}", lines


@async_test
async def test_two_servers_run_side_by_side(server, server_factory):
    """No fixed port: a second node started the same way runs beside the first."""
    other = server_factory()
    a = await Client.open(server.url)
    b = await Client.open(other.url)
    try:
        assert other.port != server.port
        await a.roundtrip()
        await b.roundtrip()
    finally:
        await a.close()
        await b.close()
