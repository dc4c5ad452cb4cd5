"""Replication and quorum with real node processes: kill -9, partitions through the nodes'
fault injection (all traffic), and restarts.

* ``Replication(factor=2)``: after a kill -9 every child runs on exactly its two ring owners
  among the survivors, and stays so at every sampled moment after convergence.
* Passive replicas: when the primary's node is killed, exactly one replica of each of its
  children is promoted (one ``CHILD_MODE_CHANGED`` to ``"active"``).
* ``StaticQuorum(3)`` on 5 nodes with 300 children: kill -9 of 3 locks the 2 survivors (their
  children stop, a start raises ``QuorumLost``, ``QUORUM_LOST`` fires on each); a node back
  unlocks them (``QUORUM_REGAINED``) and every child runs exactly once again.
* A 2|2 split under a quorum of 3 locks both sides (nothing runs); the heal restores every
  child once.

Deadlines only turn a hang into a failure; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable

from strategies import ConsistentHashing
from tests.cluster.harness import Cluster, NodeProc, on
from tests.conftest import wait_until

HUB = "orders"
DEADLINE = 30.0


async def start(node: NodeProc, n: int, proc: str = "tests.procs:Counter") -> set[str]:
    reply = await node.command(cmd="start", n=n, prefix="c", proc=proc)
    assert reply["ok"] == n, reply
    return {f"c{i}" for i in range(n)}


async def copies(nodes: list[NodeProc]) -> dict[str, list[str]]:
    where: dict[str, list[str]] = {}
    for node in nodes:
        for cid in await node.local():
            where.setdefault(cid, []).append(node.name)
    return {cid: sorted(ns) for cid, ns in where.items()}


def placed(ids: set[str], names: list[str], rf: int) -> dict[str, list[str]]:
    ring = ConsistentHashing(nodes=names)
    return {cid: sorted(ring.belongs_to(cid, rf)) for cid in ids}


async def exactly(nodes: list[NodeProc], want: dict[str, list[str]]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while (got := await copies(nodes)) != want:
        if loop.time() > deadline:
            wrong = {c: (got.get(c), w) for c, w in want.items() if got.get(c) != w}
            raise AssertionError(f"{len(wrong)} off their owners, e.g. {list(wrong.items())[:3]}")
        await asyncio.sleep(0.1)


async def wait_for(check: Callable[[], bool]) -> None:
    await wait_until(check, timeout=DEADLINE)


async def locked(node: NodeProc) -> bool:
    return bool((await node.command(cmd="locked"))["locked"])


async def until_locked(nodes: list[NodeProc], want: bool) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    for node in nodes:
        while await locked(node) != want:
            if loop.time() > deadline:
                raise AssertionError(f"{node.name} is not {'locked' if want else 'unlocked'}")
            await asyncio.sleep(0.05)


async def test_replication_factor_2_through_a_kill_9(cluster: Cluster) -> None:
    nodes = await cluster.start(4, hub=HUB, redundancy="2")
    await cluster.hub_converged(nodes)
    ids = await start(nodes[0], 80)
    await exactly(nodes, placed(ids, [n.name for n in nodes], 2))
    victim, survivors = nodes[-1], nodes[:-1]
    victim.signal(signal.SIGKILL)
    await victim.kill()
    want = placed(ids, [n.name for n in survivors], 2)
    await exactly(survivors, want)
    for _ in range(10):  # and it stays so
        assert await copies(survivors) == want
        await asyncio.sleep(0.1)


async def test_a_passive_replica_is_promoted_exactly_once_when_its_primary_is_killed(
    cluster: Cluster,
) -> None:
    nodes = await cluster.start(3, hub=HUB, redundancy="2:passive")
    await cluster.hub_converged(nodes)
    ids = await start(nodes[0], 60, proc="tests.procs:Replica")
    names = [n.name for n in nodes]
    await exactly(nodes, placed(ids, names, 2))
    ring = ConsistentHashing(nodes=names)
    victim, survivors = nodes[0], nodes[1:]
    orphaned = {c for c in ids if ring.belongs_to(c)[0] == victim.name}
    assert orphaned
    marks = {n.name: len(n.events) for n in survivors}
    victim.signal(signal.SIGKILL)
    await victim.kill()
    await exactly(survivors, placed(ids, [n.name for n in survivors], 2))

    def promotions() -> list[str]:
        return [
            e["id"]
            for n in survivors
            for e in n.events[marks[n.name] :]
            if e["ev"] == "mode_changed" and e["new"] == "active"
        ]

    await wait_for(lambda: set(promotions()) >= orphaned)
    assert sorted(promotions()) == sorted(orphaned)  # one each, no other child
    primary = ConsistentHashing(nodes=[n.name for n in survivors])
    for node in survivors:  # one active copy per child: its primary's
        modes = (await node.command(cmd="modes"))["modes"]
        assert modes == {
            cid: "active" if primary.belongs_to(cid)[0] == node.name else "passive" for cid in modes
        }, node.name


async def test_static_quorum_locks_the_survivors_of_3_kills_and_a_node_back_unlocks_them(
    cluster: Cluster,
) -> None:
    nodes = await cluster.start(5, hub=HUB, partition="static:3")
    await cluster.hub_converged(nodes)
    await until_locked(nodes, False)
    ids = await start(nodes[0], 300)
    await cluster.exactly_once(nodes, ids)
    survivors, victims = nodes[:2], nodes[2:]
    marks = {n.name: len(n.events) for n in survivors}
    for victim in victims:
        victim.signal(signal.SIGKILL)
    await asyncio.gather(*(v.kill() for v in victims))
    await until_locked(survivors, True)
    await exactly(survivors, {})  # they stop their children
    tried = await survivors[0].command(cmd="try_start", ids=["late"])
    assert tried["error"]["name"] == "QuorumLost", tried
    for node in survivors:
        lost = [e for e in node.events[marks[node.name] :] if e["ev"] == "quorum_lost"]
        assert len(lost) == 1, (node.name, lost)
    back = victims[0]
    await back.restart()
    live = [*survivors, back]
    await cluster.hub_converged(live)
    await until_locked(live, False)
    await cluster.exactly_once(live, ids, lost=on((await cluster.observe(live)).running(), []))
    for node in survivors:
        events = [e["ev"] for e in node.events[marks[node.name] :]]
        assert events.count("quorum_lost") == 1
        assert events.count("quorum_regained") == 1


async def test_a_2_2_split_under_a_quorum_of_3_locks_both_sides_then_heals(
    cluster: Cluster,
) -> None:
    nodes = await cluster.start(4, hub=HUB, partition="static:3")
    await cluster.hub_converged(nodes)
    await until_locked(nodes, False)
    ids = await start(nodes[0], 200)
    await cluster.exactly_once(nodes, ids)
    groups = [[n.name for n in nodes[:2]], [n.name for n in nodes[2:]]]
    for node in nodes:
        await node.command(cmd="partition", groups=groups)
    await until_locked(nodes, True)
    assert await copies(nodes) == {}  # neither side runs anything
    for node in nodes:
        await node.command(cmd="heal")
    await cluster.hub_converged(nodes)
    await until_locked(nodes, False)
    await cluster.exactly_once(nodes, ids)
