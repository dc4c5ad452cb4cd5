"""Fault injection applies to hub links too: partitions, drops and delays between real nodes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hub import Timeout
from hub.cluster import LOCAL, Faults, Node
from hub.cluster.links import LinkError
from hub.cluster.messages import NodeId
from tests.conftest import wait_until

COOKIE = "link-faults-cookie-0123456789abcdef"
# The local preset's timings, but a suspicion long enough that no node is declared dead while a
# test keeps it behind a fault: these tests are about the links, not about failure detection.
PATIENT = dataclasses.replace(LOCAL, suspicion_mult=100)


class Peer:
    """A started node with its own faults and a handler that records one-way frames."""

    def __init__(self, node: Node, faults: Faults) -> None:
        self.node = node
        self.faults = faults
        self.seen: list[Any] = []
        self.arrived: list[float] = []
        node.links.register("h", self.handle)

    async def handle(self, peer: NodeId, kind: str, payload: Any) -> Any:
        if kind == "echo":
            return [peer.name, payload]
        self.seen.append(payload)
        self.arrived.append(asyncio.get_running_loop().time())
        return None


@pytest.fixture
async def peers() -> AsyncIterator[tuple[Peer, Peer]]:
    fa, fb = Faults(), Faults()
    a = await Node("a", cookie=COOKIE, preset="local", config=PATIENT, faults=fa).start()
    b = await Node(
        "b",
        cookie=COOKIE,
        preset="local",
        config=PATIENT,
        faults=fb,
        seeds=[f"127.0.0.1:{a.address.port}"],
    ).start()
    try:
        await wait_until(lambda: {m.node.name for m in a.alive()} == {"a", "b"})
        await wait_until(lambda: {m.node.name for m in b.alive()} == {"a", "b"})
        yield Peer(a, fa), Peer(b, fb)
    finally:
        await b.stop()
        await a.stop()


async def linked(x: Peer, y: Peer) -> None:
    """Open the link from x to y (and show it works) before a fault is injected."""
    assert await x.node.links.request(y.node.name, "h", "echo", "hi", timeout=5) == [
        x.node.name,
        "hi",
    ]


async def test_a_partition_cuts_links_both_ways_and_a_heal_restores_them(
    peers: tuple[Peer, Peer],
) -> None:
    pa, pb = peers
    await linked(pa, pb)
    await linked(pb, pa)
    for p in peers:
        p.faults.partition([["a"], ["b"]])

    await pa.node.links.send("b", "h", "note", "lost a->b")  # silently lost, like on a network
    await pb.node.links.send("a", "h", "note", "lost b->a")
    with pytest.raises(Timeout, match="did not answer 'echo'"):
        await pa.node.links.request("b", "h", "echo", 1, timeout=0.3)
    with pytest.raises(Timeout, match="did not answer 'echo'"):
        await pb.node.links.request("a", "h", "echo", 2, timeout=0.3)
    assert pa.faults.dropped > 0
    assert pb.faults.dropped > 0

    for p in peers:
        p.faults.partition(None)
    assert await pa.node.links.request("b", "h", "echo", 3, timeout=5) == ["a", 3]
    assert await pb.node.links.request("a", "h", "echo", 4, timeout=5) == ["b", 4]
    await pa.node.links.send("b", "h", "note", "after a->b")
    await pb.node.links.send("a", "h", "note", "after b->a")
    await wait_until(lambda: pb.seen == ["after a->b"] and pa.seen == ["after b->a"])
    # One-way frames keep their order on a link: had a "lost" frame been delivered, it would
    # have been handled before the "after" frame sent later on the same link.
    assert pb.seen == ["after a->b"]
    assert pa.seen == ["after b->a"]


async def test_a_link_cannot_be_opened_across_a_partition(peers: tuple[Peer, Peer]) -> None:
    pa, pb = peers
    pa.faults.partition([["a"], ["b"]])  # the dialling side knows it is cut off
    with pytest.raises(LinkError, match="fault injection"):
        await pa.node.links.request("b", "h", "echo", 1, timeout=2)
    pa.faults.partition(None)
    pb.faults.partition([["a"], ["b"]])  # only the side being dialled: it refuses the link
    with pytest.raises(LinkError, match="503"):
        await pa.node.links.request("b", "h", "echo", 1, timeout=2)
    pb.faults.partition(None)
    assert await pa.node.links.request("b", "h", "echo", 2, timeout=5) == ["a", 2]


async def test_drop_one_loses_every_frame_out_and_in_until_it_is_lifted(
    peers: tuple[Peer, Peer],
) -> None:
    pa, pb = peers
    await linked(pa, pb)

    pa.faults.set_drop(1.0)  # lost on the way out
    for i in range(10):
        await pa.node.links.send("b", "h", "note", f"out {i}")
    with pytest.raises(Timeout):
        await pa.node.links.request("b", "h", "echo", 1, timeout=0.3)
    assert pa.faults.dropped >= 11
    pa.faults.set_drop(0.0)

    pb.faults.set_drop(1.0)  # lost on arrival
    for i in range(10):
        await pa.node.links.send("b", "h", "note", f"in {i}")
    with pytest.raises(Timeout):
        await pa.node.links.request("b", "h", "echo", 2, timeout=0.3)
    assert pb.faults.dropped >= 11
    pb.faults.set_drop(0.0)

    await pa.node.links.send("b", "h", "note", "after")
    await wait_until(lambda: pb.seen == ["after"])
    assert await pa.node.links.request("b", "h", "echo", 3, timeout=5) == ["a", 3]
    assert pb.seen == ["after"]  # in order on the link: nothing sent before it got through


async def test_a_delay_delays_frames_and_keeps_their_order(peers: tuple[Peer, Peer]) -> None:
    pa, pb = peers
    await linked(pa, pb)
    loop = asyncio.get_running_loop()

    pa.faults.set_delay(0.05, 0.05)
    sent = loop.time()
    await pa.node.links.send("b", "h", "note", "late")
    await wait_until(lambda: pb.seen == ["late"])
    assert pb.arrived[0] - sent >= 0.05 * 0.99  # never earlier than the injected latency
    start = loop.time()
    assert await pa.node.links.request("b", "h", "echo", 1, timeout=5) == ["a", 1]
    assert loop.time() - start >= 0.05 * 0.99

    pa.faults.set_delay(0.0, 0.01)  # a random latency per write: order must still hold
    pb.seen.clear()
    for burst in range(5):
        for i in range(40):
            await pa.node.links.send("b", "h", "note", burst * 40 + i)
        await pa.node.links.request("b", "h", "echo", burst, timeout=5)  # another write
    await wait_until(lambda: len(pb.seen) == 200)
    assert pb.seen == list(range(200))
