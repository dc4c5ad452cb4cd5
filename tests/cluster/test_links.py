"""Peer links between two real nodes on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hub import NotFound, Timeout
from hub.cluster.links import LinkError, RemoteError
from hub.cluster.messages import NodeId
from hub.cluster.node import Node
from tests.conftest import wait_until

COOKIE = "links-cookie-0123456789abcdef"


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    a = await Node("a", cookie=COOKIE, preset="local").start()
    b = await Node(
        "b", cookie=COOKIE, preset="local", seeds=[f"127.0.0.1:{a.address.port}"]
    ).start()
    try:
        await wait_until(lambda: {m.node.name for m in a.alive()} == {"a", "b"})
        await wait_until(lambda: {m.node.name for m in b.alive()} == {"a", "b"})
        yield a, b
    finally:
        await b.stop()
        await a.stop()


async def test_requests_are_answered_and_one_way_frames_arrive_in_order(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    seen: list[Any] = []

    async def handler(peer: NodeId, kind: str, payload: Any) -> Any:
        if kind == "echo":
            return {"from": peer.name, "got": payload}
        seen.append(payload)
        return None

    b.links.register("h", handler)
    assert await a.links.request("b", "h", "echo", [1, "x"], timeout=5) == {
        "from": "a",
        "got": [1, "x"],
    }
    for i in range(500):
        await a.links.send("b", "h", "note", i)
    await wait_until(lambda: len(seen) == 500)
    assert seen == list(range(500))


async def test_errors_and_unknown_hubs_come_back_as_remote_errors(pair: tuple[Node, Node]) -> None:
    a, b = pair

    async def handler(peer: NodeId, kind: str, payload: Any) -> Any:
        raise NotFound(payload)

    b.links.register("h", handler)
    with pytest.raises(RemoteError, match="NotFound"):
        await a.links.request("b", "h", "x", "child-7", timeout=5)
    with pytest.raises(RemoteError, match="hub 'nope'"):
        await a.links.request("b", "nope", "x", None, timeout=5)


async def test_a_silent_peer_times_out_precisely(pair: tuple[Node, Node]) -> None:
    a, b = pair

    async def handler(peer: NodeId, kind: str, payload: Any) -> Any:
        await asyncio.Event().wait()

    b.links.register("h", handler)
    with pytest.raises(Timeout, match=r"did not answer 'slow' within 0\.2s"):
        await a.links.request("b", "h", "slow", None, timeout=0.2)
    with pytest.raises(NotFound):
        await a.links.request("ghost", "h", "x", None, timeout=1)


async def test_a_wrong_cookie_cannot_link() -> None:
    a = await Node("a", cookie=COOKIE, preset="local").start()
    try:
        mallory = Node("m", cookie="another-cookie-0123456789", preset="local")
        await mallory.start()
        try:
            mallory.links._resolve = lambda name: (a.me, a.address)  # type: ignore[method-assign]
            with pytest.raises(LinkError, match="401"):
                await mallory.links.request("a", "h", "x", None, timeout=2)
        finally:
            await mallory.stop()
    finally:
        await a.stop()


async def test_pending_requests_fail_at_once_when_the_peer_goes_away(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    started = asyncio.Event()

    async def handler(peer: NodeId, kind: str, payload: Any) -> Any:
        started.set()
        await asyncio.Event().wait()

    b.links.register("h", handler)
    call = asyncio.ensure_future(a.links.request("b", "h", "slow", None, timeout=30))
    await started.wait()
    await b.stop(leave=False)
    with pytest.raises(LinkError):
        await call
