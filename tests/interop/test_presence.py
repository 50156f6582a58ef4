"""Interop tests: an independent client (Python `websockets`) speaking the
presence protocol (sub-protocol `presence.esegece.com`) to `wscluster`.

Every expectation comes from /work/shared/spec/presence-protocol.md.
Messages are compared as parsed JSON; where the spec fixes a shape the
comparison is exact.  Every receive has a timeout; "nothing arrives" checks
wait SILENCE seconds.
"""

from __future__ import annotations

import json
import uuid
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.typing import Subprotocol

from interop_support import JsonClient, async_test, open_ws, uniq

PRESENCE = Subprotocol("presence.esegece.com")
P = "sgc@presence@"


def member(mid: str) -> dict:
    return {"id": mid, "name": f"{mid} name", "info": json.dumps({"mid": mid})}


def msg(method: str, **keys: Any) -> dict:
    return {"jsonrpc": "2.0", "method": P + method, **keys}


class Client(JsonClient):
    """A `websockets` connection speaking presence JSON."""

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__(ws)
        self.session_id = ""

    @classmethod
    async def open(cls, url: str, subprotocols=(PRESENCE,)) -> "Client":
        return cls(await open_ws(url, list(subprotocols)))

    @classmethod
    async def session(cls, url: str) -> "Client":
        c = await cls.open(url)
        first = await c.recv()
        assert first["method"] == P + "session", first
        c.session_id = first["message"]["text"]
        return c

    async def expect(self, method: str) -> dict:
        got = await self.recv()
        assert got.get("method") == P + method, f"expected {P + method}, got {got!r}"
        return got

    async def register(self, mid: str) -> dict:
        await self.send(msg("member@new", member=member(mid)))
        got = await self.expect("member@new")
        assert got == msg("member@new", member=member(mid)), got
        return got


@async_test
async def test_presence_is_negotiated_and_sends_a_session_first(server):
    c = await Client.open(server.url, [Subprotocol("mqtt"), PRESENCE])
    try:
        assert c.ws.subprotocol == "presence.esegece.com"
        first = await c.recv()
        assert set(first) == {"jsonrpc", "method", "message"}, first
        assert first["method"] == P + "session"
        uuid.UUID(first["message"]["text"])
    finally:
        await c.close()


@async_test
async def test_a_client_offering_both_protocols_gets_the_first_it_listed(server):
    c = await Client.open(server.url, [Subprotocol("esegece.com"), PRESENCE])
    try:
        assert c.ws.subprotocol == "esegece.com"
        first = await c.recv()
        assert first["result"]["method"] == "sgc@session", first
    finally:
        await c.close()


@async_test
async def test_members_join_publish_and_see_each_other(server):
    room = uniq("room")
    a_id, b_id = uniq("a"), uniq("b")
    a = await Client.session(server.url)
    b = await Client.session(server.url)
    try:
        await a.register(a_id)
        await b.register(b_id)
        assert (await a.expect("member@new"))["member"]["id"] == b_id

        await a.send(msg("channel@member@new", member={"id": a_id}, channel={"name": room}))
        assert await a.expect("channel@member@new") == msg(
            "channel@member@new", member=member(a_id), channel={"name": room}
        )
        await b.send(msg("channel@member@new", member={"id": b_id}, channel={"name": room}))
        for c in (a, b):
            got = await c.expect("channel@member@new")
            assert got["member"] == member(b_id), got

        await b.send(
            msg("publish@msg", member={"id": b_id}, channel={"name": room}, message={"text": "hi"})
        )
        expected = msg(
            "publish@msg", member=member(b_id), channel={"name": room}, message={"text": "hi"}
        )
        assert await a.expect("publish@msg") == expected
        assert await b.expect("publish@msg") == expected

        await a.send(msg("get@members", member={"id": a_id}, channel={"name": room}))
        listed = await a.expect("send@members")
        assert sorted(m["id"] for m in listed["members"]) == sorted([a_id, b_id]), listed
    finally:
        await a.close()
        await b.close()


@async_test
async def test_a_closed_connection_takes_its_members_with_it(server):
    room = uniq("room")
    o_id, m_id = uniq("observer"), uniq("chosen")
    o = await Client.session(server.url)
    m = await Client.session(server.url)
    try:
        await o.register(o_id)
        await o.send(msg("channel@member@new", member={"id": o_id}, channel={"name": room}))
        await o.expect("channel@member@new")
        await m.register(m_id)
        await m.send(msg("channel@member@new", member={"id": m_id}, channel={"name": room}))
        await m.expect("channel@member@new")
        await o.expect("member@new")
        await o.expect("channel@member@new")

        await m.close()
        got = await o.expect("channel@member@remove")
        assert got == msg("channel@member@remove", member=member(m_id), channel={"name": room})
        assert await o.expect("member@remove") == msg("member@remove", member=member(m_id))
        await o.expect_silence()

        # The id is free again at once.
        again = await Client.session(server.url)
        try:
            await again.register(m_id)
        finally:
            await again.close()
    finally:
        await o.close()


@async_test
async def test_refusals_carry_their_codes_and_the_connection_stays(server):
    taken = uniq("taken")
    a = await Client.session(server.url)
    b = await Client.session(server.url)
    try:
        await a.register(taken)
        await b.send(msg("member@new", member=member(taken), id="r1"))
        assert await b.recv() == msg("acknowledgment", id="r1")
        err = await b.expect("error@member@channel")
        assert err["error"]["code"] == 1, err
        assert err["member"]["id"] == taken, err

        await b.send(msg("channel@member@remove", member={"id": taken}, channel={"name": "x"}))
        assert (await b.expect("error@member@channel"))["error"]["code"] == 3

        await b.send("{not json")
        assert (await b.expect("error@member@channel"))["error"]["code"] == -32700
        await b.send({"jsonrpc": "1.0", "method": P + "member@new"})
        assert (await b.expect("error@member@channel"))["error"]["code"] == -32600

        await b.register(uniq("fine"))
    finally:
        await a.close()
        await b.close()
