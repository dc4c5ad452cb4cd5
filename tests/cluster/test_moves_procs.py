"""A node killed (kill -9) in the middle of a HotSwap move, with real node processes.

* The target dies while the new copies run their ``init``: the moves are aborted
  (``MIGRATION_FAILED``), the old copies keep running with their state, nothing restarts.
* The source dies while the old copies run their ``terminate`` (the new ones wait for the
  state): the new copies start from their spec, once; the source's other children fail over.
* The same, with the target draining before the source dies: its new copies stop (it owns them
  no longer) and their owner starts each from its spec, once.

Each child is a :class:`tests.procs.SlowCounter` starting at its index; every child gets
``{"by": 1000}`` before the move, so a value tells whether the state survived (``i + 1000``) or
the child restarted from its spec (``i``). Deadlines only turn a hang into a failure.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

import pytest

from tests.cluster.harness import Cluster, NodeProc, owner

HUB = "orders"
DEADLINE = 30.0
N = 60


async def start(node: NodeProc, **kwargs: Any) -> set[str]:
    reply = await node.command(
        cmd="start",
        n=N,
        prefix="c",
        proc="tests.procs:SlowCounter",
        spec={"kwargs": {"announce": True, **kwargs}, "shutdown_timeout": 60.0},
    )
    assert reply["ok"] == N, reply
    ids = {f"c{i}" for i in range(N)}
    called = await node.command(cmd="call", ids=sorted(ids), message="get")
    assert all(r["ok"] for r in called["results"].values())
    return ids


async def bump(node: NodeProc, ids: set[str]) -> None:
    """Add 1000 to every child (a call after the casts: they were applied)."""
    await node.command(cmd="cast", ids=sorted(ids), message={"by": 1000})
    await values(node, ids)


async def values(node: NodeProc, ids: set[str]) -> dict[str, int]:
    called = await node.command(cmd="call", ids=sorted(ids), message="get")
    results = called["results"]
    assert all(r["ok"] for r in results.values()), results
    return {cid: r["value"] for cid, r in results.items()}


async def draining(node: NodeProc, name: str) -> list[str]:
    """The hubs that ``node`` sees draining on ``name``."""
    members = (await node.command(cmd="members"))["members"]
    return next(m[4] or [] for m in members if m[0] == name)


async def test_the_target_killed_mid_handover_leaves_the_old_copies_running_with_state(
    cluster: Cluster,
) -> None:
    nodes = await cluster.start(2, hub=HUB, migration="hot:30")
    await cluster.hub_converged(nodes)
    ids = await start(nodes[0], slow_init_on="n2", init_seconds=60.0)
    await bump(nodes[0], ids)
    before = await cluster.exactly_once(nodes, ids)
    starts_before = await cluster.startups(nodes)
    moving = {c for c in ids if owner(["n0", "n1", "n2"], c) == "n2"}
    joiner = await cluster.add("n2", hub=HUB, migration="hot:30")
    for cid in moving:  # every source began its move (each once the joiner loaded)
        await joiner.wait_for(
            lambda e, cid=cid: e["ev"] == "slow_init" and e["id"] == cid, timeout=DEADLINE
        )
    joiner.signal(signal.SIGKILL)
    await joiner.kill()
    failed: set[str] = set()
    for node in nodes:
        for cid in moving:
            if before.running()[cid] == [node.name]:
                event = await node.wait_for(
                    lambda e, cid=cid: e["ev"] == "migration_failed" and e["id"] == cid,
                    timeout=DEADLINE,
                )
                assert "keeps running" in event["reason"]
                failed.add(cid)
    assert failed == moving
    await cluster.exactly_once(nodes, ids, timeout=DEADLINE)
    assert await values(nodes[1], ids) == {f"c{i}": i + 1000 for i in range(N)}
    assert await cluster.new_starts(nodes, starts_before, expect=set()) == {}


@pytest.mark.parametrize("drains", [False, True], ids=["target-stays", "target-drains"])
async def test_the_source_killed_mid_handover_starts_the_new_copies_from_spec_once(
    cluster: Cluster, drains: bool
) -> None:
    """With ``drains``, the target drains first: its new copies stop (it owns them no
    longer) and n1, their owner then, starts each from its spec."""
    nodes = await cluster.start(2, hub=HUB, migration="hot:30")
    await cluster.hub_converged(nodes)
    ids = await start(nodes[0], slow_stop_on="n0", stop_seconds=60.0)
    await bump(nodes[0], ids)
    before = await cluster.exactly_once(nodes, ids)
    on_n0 = {c for c, where in before.running().items() if where == ["n0"]}
    moving = {c for c in on_n0 if owner(["n0", "n1", "n2"], c) == "n2"}
    assert moving
    joiner = await cluster.add("n2", hub=HUB, migration="hot:30")
    await nodes[0].wait_for(lambda e: e["ev"] == "slow_terminate", timeout=DEADLINE)
    if drains:  # the drain waits for the new copies (held until their state came): seen only
        drain = asyncio.create_task(joiner.command(cmd="drain", reply_timeout=120.0))
        deadline = asyncio.get_running_loop().time() + DEADLINE
        while HUB not in await draining(nodes[1], "n2"):
            assert asyncio.get_running_loop().time() < deadline, "n1 never saw n2 drain"
            await asyncio.sleep(0.05)
    starts_before = await cluster.startups([nodes[1], joiner])
    nodes[0].signal(signal.SIGKILL)
    await nodes[0].kill()
    survivors = [nodes[1], joiner]
    placement = ["n1"] if drains else None
    await cluster.exactly_once(survivors, ids, placement=placement, lost=on_n0, timeout=DEADLINE)
    # what ran on the dead source starts from its spec; the rest kept (or carried) its state
    want = {f"c{i}": i if f"c{i}" in on_n0 else i + 1000 for i in range(N)}
    assert await values(nodes[1], ids) == want
    starts = await cluster.new_starts(survivors, starts_before, expect=on_n0)
    assert {c: n for c, n in starts.items() if c in on_n0} == dict.fromkeys(on_n0, 1)
    assert not [e for n in survivors for e in n.events if e["ev"] == "child_conflict"]
    if drains:
        drained = await drain
        # the held copies left, and n1's children that had moved in before the drain
        to_n2 = {c for c in ids if owner(["n0", "n1", "n2"], c) == "n2"}
        assert drained["errors"] == 0
        assert len(moving) <= drained["ok"] <= len(to_n2)
