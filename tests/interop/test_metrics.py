"""`GET /metrics` after a scripted workload, read with a real Prometheus parser.

Each test starts its own `wscluster serve` process(es), so every counter
starts at zero and must match the workload exactly: connections,
subscriptions, messages in and out, a bad message, a slow consumer, and the
backplane counters and cross-node delay histogram of a two-node cluster.
The text is parsed by `prometheus_client.parser` (the reference Python
client), which rejects malformed exposition text; histograms are checked
for cumulative buckets ending in `+Inf` equal to `_count`.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import time
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from websockets.exceptions import ConnectionClosed

from interop_support import RECV_TIMEOUT, JsonClient, async_test, open_ws

SGC = "esegece.com"
CLUSTER_LISTEN_RE = re.compile(r"^cluster-listening (\S+)$")


# -------------------------------------------------------------------- HTTP


def http_get(srv, path: str) -> tuple[int, str, dict[str, str]]:
    conn = http.client.HTTPConnection(srv.host, srv.port, timeout=RECV_TIMEOUT)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), {k.lower(): v for k, v in resp.getheaders()}
    finally:
        conn.close()


class Metrics:
    """One scrape, parsed: samples by (name, sorted labels)."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.families = {f.name: f for f in text_string_to_metric_families(text)}
        self.samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in self.families.values():
            for s in family.samples:
                self.samples[(s.name, tuple(sorted(s.labels.items())))] = s.value

    def value(self, name: str, **labels: str) -> float:
        """A sample's value; 0 when absent (a counter never incremented)."""
        return self.samples.get((name, tuple(sorted(labels.items()))), 0.0)

    def total(self, name: str) -> float:
        """The sum of every sample of `name`, whatever its labels."""
        return sum(v for (n, _), v in self.samples.items() if n == name)

    def names(self) -> set[str]:
        return {name for name, _ in self.samples}

    def check_histograms(self) -> None:
        for family in self.families.values():
            if family.type != "histogram":
                continue
            buckets = sorted(
                (float(s.labels["le"]), s.value)
                for s in family.samples
                if s.name.endswith("_bucket")
            )
            assert buckets, f"{family.name}: a histogram without buckets"
            values = [v for _, v in buckets]
            assert values == sorted(values), f"{family.name}: buckets not cumulative {buckets}"
            assert buckets[-1][0] == float("inf"), f"{family.name}: no +Inf bucket"
            count = self.value(family.name + "_count")
            assert buckets[-1][1] == count, f"{family.name}: +Inf {buckets[-1][1]} != count {count}"


def scrape(srv) -> Metrics:
    status, body, headers = http_get(srv, "/metrics")
    assert status == 200, (status, body)
    assert headers.get("content-type", "").startswith("text/plain"), headers
    metrics = Metrics(body)
    metrics.check_histograms()
    return metrics


def wait_metric(srv, name: str, expected: float, **labels: str) -> Metrics:
    """Scrapes until `name{labels}` equals `expected` (for gauges that follow a close)."""
    deadline = time.monotonic() + RECV_TIMEOUT
    while True:
        m = scrape(srv)
        if m.value(name, **labels) == expected or time.monotonic() > deadline:
            return m
        time.sleep(0.05)


# -------------------------------------------------------------------- sgc


class Sgc(JsonClient):
    """A minimal sgc client; `received` keeps what it read."""

    @classmethod
    async def open(cls, srv, **kw: Any) -> "Sgc":
        c = cls(await open_ws(f"ws://{srv.addr}/", [SGC], **kw))
        session = await c.recv()
        assert session["result"]["method"] == "sgc@session", session
        return c

    async def subscribe(self, channel: str) -> None:
        await self.send(
            {"jsonrpc": "2.0", "method": "sgc@subscribe", "params": {"channel": channel}, "id": channel}
        )
        ack = await self.recv()
        assert ack["result"]["method"] == "sgc@acknowledgment", ack
        reply = await self.recv()
        assert reply["result"] == {"method": "sgc@subscribe", "channel": channel}, reply

    async def publish(self, channel: str, message: str) -> None:
        await self.send(
            {"jsonrpc": "2.0", "method": "sgc@publish", "params": {"channel": channel, "message": message}}
        )

    async def events(self, channel: str, n: int) -> list[str]:
        got = []
        for _ in range(n):
            v = await self.recv()
            assert v["result"]["method"] == "sgc@event" and v["result"]["channel"] == channel, v
            got.append(v["result"]["message"])
        return got

    async def silent(self, seconds: float = 0.3) -> None:
        try:
            v = await asyncio.wait_for(self.ws.recv(), seconds)
        except asyncio.TimeoutError:
            return
        raise AssertionError(f"expected silence, got {v!r}")

    async def close(self) -> None:
        await self.ws.close()


def cluster_addr(srv) -> str:
    for line in srv.stdout_lines:
        m = CLUSTER_LISTEN_RE.match(line)
        if m:
            return m.group(1)
    raise AssertionError(f"no cluster-listening line in {srv.stdout_lines!r}")


def wait_peers(srv, n: int) -> None:
    deadline = time.monotonic() + 10
    while True:
        status, body, _ = http_get(srv, "/cluster")
        doc = json.loads(body) if status == 200 else {}
        if doc.get("ready") and doc.get("connected_peer_count") == n:
            return
        assert time.monotonic() < deadline, f"{srv.addr} never linked to {n} peers: {body}"
        time.sleep(0.05)


# -------------------------------------------------------------------- tests

N_CONNECTIONS = 4
K_ALPHA = 25  # publications on "alpha", 3 subscribers
K_BETA = 5  # publications on "beta", 1 subscriber


@async_test
async def test_counters_match_a_scripted_workload(server_factory):
    srv = server_factory("--node-id", "metrics-one")
    before = scrape(srv)
    assert before.value("wscluster_ready") == 1, before.text
    assert before.value("wscluster_connections") == 0, before.text

    clients = [await Sgc.open(srv) for _ in range(N_CONNECTIONS)]
    c0, c1, c2, c3 = clients
    # Four subscriptions on two channels.
    await c0.subscribe("alpha")
    await c0.subscribe("beta")
    await c1.subscribe("alpha")
    await c2.subscribe("alpha")
    subscribes = 4

    for i in range(K_ALPHA):
        await c3.publish("alpha", f"a{i}")
    for i in range(K_BETA):
        await c3.publish("beta", f"b{i}")
    # c0 gets both channels interleaved in publish order: alpha first here.
    assert await c0.events("alpha", K_ALPHA) == [f"a{i}" for i in range(K_ALPHA)]
    assert await c0.events("beta", K_BETA) == [f"b{i}" for i in range(K_BETA)]
    for c in (c1, c2):
        assert await c.events("alpha", K_ALPHA) == [f"a{i}" for i in range(K_ALPHA)]

    # One message that is not JSON: an error reply, the connection stays.
    await c3.send("this is not json{")
    err = await c3.recv()
    assert err["error"]["code"] == -32700, err
    for c in clients:
        await c.silent(0.2)

    m = scrape(srv)
    messages_in = subscribes + K_ALPHA + K_BETA + 1
    messages_out = (
        N_CONNECTIONS  # session messages
        + 2 * subscribes  # acknowledgement + reply
        + 3 * K_ALPHA
        + K_BETA
        + 1  # the error reply
    )
    assert sum(len(c.received) for c in clients) == messages_out
    expected = {
        ("wscluster_connections", ()): N_CONNECTIONS,
        ("wscluster_messages_out_total", ()): messages_out,
        ("wscluster_bad_input_total", (("code", "-32700"),)): 1,
        ("wscluster_slow_consumer_total", ()): 0,
        ("wscluster_ready", ()): 1,
        ("wscluster_connected_peers", ()): 0,
    }
    seen = {key: m.samples.get(key, 0.0) for key in expected}
    assert seen == expected, f"\n{m.text}"
    # Messages in are labelled by protocol and kind; together they add up.
    assert m.total("wscluster_messages_in_total") == messages_in, m.text
    assert m.value("wscluster_messages_in_total", protocol="sgc", kind="publish") == K_ALPHA + K_BETA
    assert m.value("wscluster_messages_in_total", protocol="sgc", kind="invalid") == 1
    # Nothing was refused and nothing crossed a backplane on a lone node.
    for name, _ in m.samples:
        assert not name.startswith("wscluster_refused"), f"unexpected refusal\n{m.text}"
        assert not name.startswith("wscluster_backplane_received"), m.text

    # A closed connection leaves the gauge.
    await c1.close()
    m = wait_metric(srv, "wscluster_connections", N_CONNECTIONS - 1)
    assert m.value("wscluster_connections") == N_CONNECTIONS - 1, m.text
    for c in (c0, c2, c3):
        await c.close()
    m = wait_metric(srv, "wscluster_connections", 0)
    assert m.value("wscluster_connections") == 0, m.text


@async_test
async def test_the_metric_families_issue_6_asks_for_are_exported(server_factory):
    """Issue 6: connections, subscriptions, channels, messages in/out by
    kind, bytes, drops and refusals by reason, slow consumers, peer link
    state, readiness, cross-node delay. After a small workload every one of
    them must be a family in `/metrics` (names may vary; the check is by
    what a name is about)."""
    srv = server_factory("--node-id", "metrics-families")
    a = await Sgc.open(srv)
    b = await Sgc.open(srv)
    await a.subscribe("fam-1")
    await a.subscribe("fam-2")
    await b.publish("fam-1", "x")
    await a.events("fam-1", 1)
    m = scrape(srv)
    names = sorted(m.families)

    def has(pattern: str) -> bool:
        return any(re.search(pattern, n) for n in names)

    wanted = {
        "connections gauge": r"^wscluster_connections$",
        "subscriptions gauge": r"subscriptions",
        "channels gauge": r"^wscluster_channels",
        "messages in": r"messages_in",
        "messages out": r"messages_out",
        "bytes in or out": r"bytes",
        "slow consumers": r"slow_consumer",
        "readiness": r"^wscluster_ready$",
        "peers": r"peers",
        "cross-node delay histogram": r"cross_node_delay",
    }
    missing = [what for what, pattern in wanted.items() if not has(pattern)]
    by_kind = [
        f.name
        for f in m.families.values()
        if f.name.startswith("wscluster_messages_") and any("kind" in s.labels for s in f.samples)
    ]
    if not by_kind:
        missing.append("messages in/out labelled by kind")
    await a.close()
    await b.close()
    assert not missing, (
        f"missing metric families: {missing}; exported: {names} "
        "(a counter or histogram that has not counted yet must still be exported, at 0)"
    )


@async_test
async def test_a_slow_consumer_is_closed_with_1008_and_counted_once(server_factory):
    srv = server_factory(
        "--node-id", "metrics-slow", "--outbound-queue", "32", "--outbound-queue-bytes", "65536"
    )
    # max_queue=1: the client stops reading from its socket almost at once.
    stalled = await Sgc.open(srv, max_queue=1, max_size=None)
    await stalled.subscribe("flood")
    publisher = await Sgc.open(srv)
    payload = "p" * 16384
    for i in range(400):
        await publisher.publish("flood", f"{i}-{payload}")
    m = wait_metric(srv, "wscluster_slow_consumer_total", 1)
    assert m.value("wscluster_slow_consumer_total") == 1, m.text

    # The stalled client, once it reads again, finds 1008 "slow consumer".
    close = None
    deadline = time.monotonic() + 15
    while close is None and time.monotonic() < deadline:
        try:
            await asyncio.wait_for(stalled.ws.recv(), 15)
        except ConnectionClosed as e:
            close = e.rcvd
    assert close is not None and close.code == 1008, close
    assert close.reason == "slow consumer", close
    m = wait_metric(srv, "wscluster_connections", 1)
    assert m.value("wscluster_connections") == 1, m.text
    assert m.value("wscluster_slow_consumer_total") == 1, m.text
    await publisher.close()


K_CROSS = 20


@async_test
async def test_backplane_counters_and_delay_histogram_follow_cross_node_traffic(server_factory):
    a = server_factory("--node-id", "a")
    b = server_factory("--node-id", "b", "--peer", cluster_addr(a))
    wait_peers(a, 1)
    wait_peers(b, 1)

    subscriber = await Sgc.open(b)
    await subscriber.subscribe("cross")
    publisher = await Sgc.open(a)
    for i in range(K_CROSS):
        await publisher.publish("cross", f"c{i}")
    assert await subscriber.events("cross", K_CROSS) == [f"c{i}" for i in range(K_CROSS)]
    await subscriber.silent(0.2)

    ma, mb = scrape(a), scrape(b)
    # Every publication that crossed is one delay observation on b, none on a.
    assert mb.value("wscluster_cross_node_delay_seconds_count") == K_CROSS, mb.text
    assert ma.value("wscluster_cross_node_delay_seconds_count") == 0, ma.text
    assert mb.value("wscluster_cross_node_delay_seconds_sum") > 0, mb.text
    # Envelopes (publications plus liveness and interest) both ways.
    assert ma.value("wscluster_backplane_sent_total", peer="b") >= K_CROSS, ma.text
    assert mb.value("wscluster_backplane_received_total", peer="a") >= K_CROSS, mb.text
    assert mb.value("wscluster_backplane_duplicates_total") == 0, mb.text
    assert mb.value("wscluster_backplane_dropped_total", reason="link_queue_full") == 0, mb.text
    for m in (ma, mb):
        assert m.value("wscluster_connected_peers") == 1, m.text
        assert m.value("wscluster_ready") == 1, m.text
    # The subscriber's node counts exactly its own traffic.
    assert mb.total("wscluster_messages_in_total") == 1, mb.text
    assert mb.value("wscluster_messages_out_total") == 1 + 2 + K_CROSS, mb.text
    assert ma.total("wscluster_messages_in_total") == K_CROSS, ma.text
    await publisher.close()
    await subscriber.close()
