"""The distributed hub across real node processes: 6 x 1,000 children, and kill -9 failover."""

from __future__ import annotations

import asyncio
import signal

from strategies import ConsistentHashing
from tests.cluster.harness import Cluster, NodeProc


async def registries_agree(
    nodes: list[NodeProc], ids: set[str], timeout: float = 60
) -> dict[str, list[str]]:
    """Wait until every node's registry holds exactly ``ids``, each on exactly one node, each on
    its ring owner among ``nodes``, and all registries are identical."""
    ring = ConsistentHashing(nodes=[n.name for n in nodes])
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        views = [(await n.command(cmd="registry"))["children"] for n in nodes]
        first = views[0]
        if (
            all(v == first for v in views)
            and set(first) == ids
            and all(where == [ring.belongs_to(cid)[0]] for cid, where in first.items())
        ):
            return first
        if loop.time() > deadline:
            wrong = {cid: w for cid, w in first.items() if w != [ring.belongs_to(cid)[0]]}
            raise AssertionError(
                f"registries disagree or misplaced: {len(first)} listed, {list(wrong.items())[:5]}"
            )
        await asyncio.sleep(0.2)


async def test_six_nodes_a_thousand_children_identical_registries(cluster: Cluster) -> None:
    nodes = await cluster.start(6, hub="orders")
    await cluster.converged({n.name for n in nodes})
    reply = await nodes[0].command(cmd="start", n=1000, prefix="c")
    assert reply["ok"] == 1000, reply
    ids = {f"c{i}" for i in range(1000)}
    placed = await registries_agree(nodes, ids)
    assert len({where[0] for where in placed.values()}) == 6  # every node got children
    stopped = await nodes[3].command(cmd="stop_all")
    assert stopped["ok"] == 1000
    await registries_agree(nodes, set())


async def test_kill_9_restarts_each_lost_child_exactly_once_on_its_new_owner(
    cluster: Cluster,
) -> None:
    nodes = await cluster.start(4, hub="orders")
    await cluster.converged({n.name for n in nodes})
    assert (await nodes[0].command(cmd="start", n=1000, prefix="c"))["ok"] == 1000
    ids = {f"c{i}" for i in range(1000)}
    before = await registries_agree(nodes, ids)
    victim, survivors = nodes[-1], nodes[:-1]
    lost = {cid for cid, where in before.items() if where == [victim.name]}
    assert lost
    starts_before = [(await n.command(cmd="startups"))["counts"] for n in survivors]
    victim.signal(signal.SIGKILL)
    await registries_agree(survivors, ids)

    async def extra_starts() -> dict[str, int]:
        after = [(await n.command(cmd="startups"))["counts"] for n in survivors]
        extra: dict[str, int] = {}
        for b, a in zip(starts_before, after, strict=True):
            for cid, count in a.items():
                if count != b.get(cid, 0):
                    extra[cid] = extra.get(cid, 0) + count - b.get(cid, 0)
        return extra

    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    extra = await extra_starts()
    while set(extra) != lost and loop.time() < deadline:  # startup hooks run in their own task
        await asyncio.sleep(0.2)
        extra = await extra_starts()
    assert set(extra) == lost  # only the dead node's children started again ...
    assert set(extra.values()) == {1}  # ... each exactly once
