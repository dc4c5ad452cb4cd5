"""Replication and quorum with real nodes on loopback in this process: copies kept on the ring
owners through a join, a partition and its heal; passive replicas promoted exactly once; quorum
strategies that lock a minority and unlock on regain.

"Death" here is a partition through every node's fault injection (all traffic, both ways):
the others declare the cut-off nodes failed, as after a kill -9 (the real-process versions
are in ``test_replication_procs.py``). Deadlines only turn a hang into a failure.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hub import WILDCARD, ChildSpec, Hook, HookHandler, Hub, QuorumLost
from strategies import (
    ConsistentHashing,
    DynamicQuorum,
    MajorityQuorum,
    Replication,
    StaticQuorum,
)
from tests import procs
from tests.cluster.inproc import DEADLINE, Nodes
from tests.conftest import wait_until


def replicas(n: int, prefix: str = "r") -> list[ChildSpec]:
    return [ChildSpec(f"{prefix}{i}", procs.Replica, args=[i]) for i in range(n)]


def copies(hubs: list[Hub]) -> dict[str, list[str]]:
    """child id -> the nodes that run a copy (each hub's local list), sorted."""
    where: dict[str, list[str]] = {}
    for hub in hubs:
        for cid, _ in hub.process_list("local"):
            where.setdefault(cid, []).append(hub.node)
    return {cid: sorted(ns) for cid, ns in where.items()}


def placed(ids: set[str], names: list[str], rf: int) -> dict[str, list[str]]:
    ring = ConsistentHashing(nodes=names)
    return {cid: sorted(ring.belongs_to(cid, rf)) for cid in ids}


async def exactly(hubs: list[Hub], want: dict[str, list[str]]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while (got := copies(hubs)) != want:
        if loop.time() > deadline:
            wrong = {c: (got.get(c), w) for c, w in want.items() if got.get(c) != w}
            extra = set(got) - set(want)
            raise AssertionError(f"{len(wrong)} misplaced, e.g. {list(wrong.items())[:3]}; {extra}")
        await asyncio.sleep(0.02)


def recorder(
    log: list[Any], *events: Hook, node: str | None = None
) -> dict[Hook | str, list[HookHandler]]:
    """Handlers that append ``(event, data)`` (``(event, data, node)`` with ``node``)."""

    def add(ev: str, data: Any) -> None:
        log.append((ev, data) if node is None else (ev, data, node))

    return {e: [HookHandler(f"rec_{e}", add, [str(e), WILDCARD])] for e in events}


# -- replication -------------------------------------------------------------------------------


async def test_two_copies_on_the_owners_through_a_join_and_no_false_conflict(nodes: Nodes) -> None:
    log: list[tuple[str, Any]] = []
    hooks = recorder(log, Hook.CHILD_CONFLICT)
    hubs = [await nodes.add(n, redundancy=Replication(factor=2), hooks=hooks) for n in "abc"]
    ids = {s.id for s in replicas(60)}
    assert (await hubs[0].start_children(replicas(60), timeout=DEADLINE)).status == "ok"
    await exactly(hubs, placed(ids, ["a", "b", "c"], 2))
    hubs.append(await nodes.add("d", redundancy=Replication(factor=2), hooks=hooks))
    await exactly(hubs, placed(ids, ["a", "b", "c", "d"], 2))
    assert log == []  # a replica that moves is not a duplicate


async def test_two_copies_through_a_partition_and_its_heal(nodes: Nodes) -> None:
    hubs = [await nodes.add(n, redundancy=Replication(factor=2)) for n in "abcd"]
    ids = {s.id for s in replicas(60)}
    await hubs[0].start_children(replicas(60), timeout=DEADLINE)
    await exactly(hubs, placed(ids, list("abcd"), 2))
    nodes.partition([["a", "b", "c"], ["d"]])
    await exactly(hubs[:3], placed(ids, list("abc"), 2))  # the majority side refills
    nodes.heal()
    await nodes.settled()
    await exactly(hubs, placed(ids, list("abcd"), 2))
    # every copy stays: sampled a few times after convergence
    for _ in range(10):
        assert copies(hubs) == placed(ids, list("abcd"), 2)
        await asyncio.sleep(0.05)


async def test_two_copies_through_a_drain_and_a_graceful_leave(nodes: Nodes) -> None:
    hubs = [await nodes.add(n, redundancy=Replication(factor=2)) for n in "abcd"]
    ids = {s.id for s in replicas(60)}
    await hubs[0].start_children(replicas(60), timeout=DEADLINE)
    await exactly(hubs, placed(ids, list("abcd"), 2))
    result = await hubs[3].drain()
    assert result.status == "ok", result.errors[:3]
    await exactly(hubs, placed(ids, list("abc"), 2))  # nothing on the drained node
    await hubs[2].stop()
    await exactly(hubs[:2], placed(ids, list("ab"), 2))


async def test_cast_to_all_reaches_every_copy(nodes: Nodes) -> None:
    hubs = [await nodes.add(n, redundancy=Replication(factor=3)) for n in "abc"]
    await hubs[0].start_children([ChildSpec("x", procs.Replica, args=[0])], timeout=DEADLINE)
    await exactly(hubs, {"x": ["a", "b", "c"]})
    await hubs[1].cast("x", {"by": 5}, to="all")
    await hubs[1].cast("x", {"by": 1})  # to the primary only
    primary = ConsistentHashing(nodes=list("abc")).belongs_to("x")[0]
    for node, pid in hubs[1].lookup("x"):  # from the sender: its calls follow its casts
        assert await hubs[1].call(pid, "get") == (6 if node == primary else 5)


# -- active / passive --------------------------------------------------------------------------


async def test_a_passive_replica_is_promoted_exactly_once_when_its_primary_dies(
    nodes: Nodes,
) -> None:
    procs.MODES.clear()
    log: list[tuple[str, Any]] = []
    hooks = recorder(log, Hook.CHILD_MODE_CHANGED)
    passive = Replication(factor=2, replication_model="passive")
    hubs = [await nodes.add(n, redundancy=passive, hooks=hooks) for n in "abc"]
    ids = {s.id for s in replicas(40)}
    await hubs[0].start_children(replicas(40), timeout=DEADLINE)
    ring = ConsistentHashing(nodes=list("abc"))
    await exactly(hubs, placed(ids, list("abc"), 2))
    for hub in hubs:  # the primary is active, the replica passive
        for cid, pid in hub.process_list("local"):
            mode = (await hub.call(pid, "mode"))["mode"]
            assert mode == ("active" if ring.belongs_to(cid)[0] == hub.node else "passive")
    assert procs.MODES == []
    assert log == []
    victim = "c"
    orphaned = {c for c in ids if ring.belongs_to(c)[0] == victim}
    nodes.partition([["a", "b"], [victim]])
    survivors = hubs[:2]
    await exactly(survivors, placed(ids, ["a", "b"], 2))
    # each child whose primary was cut off: one replica promoted, once (on the survivors)
    await wait_until(
        lambda: {c for c, n in promoted_now() if n in ("a", "b")} >= orphaned, timeout=DEADLINE
    )
    promoted = promoted_now()
    survivor_promotions = [(c, n) for c, n in promoted if n in ("a", "b")]
    assert sorted(c for c, _ in survivor_promotions) == sorted(orphaned)
    for hub in survivors:  # and now every child has one active copy among the survivors
        for cid, pid in hub.process_list("local"):
            mode = (await hub.call(pid, "mode"))["mode"]
            owner = ConsistentHashing(nodes=["a", "b"]).belongs_to(cid)[0]
            assert mode == ("active" if owner == hub.node else "passive"), (cid, hub.node)
    changed = [d for e, d in log if d.node in ("a", "b") and d.new == "active"]
    assert sorted(d.child_id for d in changed) == sorted(orphaned)


def promoted_now() -> list[tuple[str, str]]:
    return [(cid, node) for cid, node, mode in procs.MODES if mode == "active"]


# -- quorum ------------------------------------------------------------------------------------


async def test_static_quorum_locks_a_minority_and_regains(nodes: Nodes) -> None:
    log: list[tuple[str, Any]] = []
    events = (Hook.QUORUM_LOST, Hook.QUORUM_REGAINED, Hook.PRIORITY_STATE_UPDATED)
    hubs = [
        await nodes.add(n, partition=StaticQuorum(3), hooks=recorder(log, *events, node=n))
        for n in "abcde"
    ]
    specs = procs.counters(60)
    ids = {s.id for s in specs}
    assert (await hubs[0].start_children(specs, timeout=DEADLINE)).status == "ok"
    await nodes.exactly_once(ids)
    assert not any(h.is_locked() for h in hubs)
    log.clear()
    nodes.partition([["a", "b"], ["c", "d", "e"]])
    minority, majority = hubs[:2], hubs[2:]
    await wait_until(lambda: all(h.is_locked() for h in minority), timeout=DEADLINE)
    await wait_until(lambda: all(not h.process_list("local") for h in minority), timeout=DEADLINE)
    assert not any(h.is_locked() for h in majority)
    with pytest.raises(QuorumLost):
        await minority[0].start_children([ChildSpec("new", procs.Counter)])
    with pytest.raises(QuorumLost):
        await minority[1].stop_children(["c1"])
    await exactly(majority, placed(ids, ["c", "d", "e"], 1))  # the majority serves all
    assert sorted(n for e, _, n in log if e == "quorum_lost") == ["a", "b"]  # once on each
    nodes.heal()
    await nodes.settled()
    await wait_until(lambda: not any(h.is_locked() for h in hubs), timeout=DEADLINE)
    await nodes.exactly_once(ids)
    assert sorted(n for e, _, n in log if e == "quorum_regained") == ["a", "b"]
    assert sorted((n, d.locked) for e, d, n in log if e == "priority_state_updated") == [
        ("a", False),
        ("a", True),
        ("b", False),
        ("b", True),
    ]


async def test_a_2_2_split_under_a_quorum_of_3_locks_both_sides_then_heals(nodes: Nodes) -> None:
    hubs = [await nodes.add(n, partition=StaticQuorum(3)) for n in "abcd"]
    specs = procs.counters(100)
    ids = {s.id for s in specs}
    await hubs[0].start_children(specs, timeout=DEADLINE)
    await nodes.exactly_once(ids)
    nodes.partition([["a", "b"], ["c", "d"]])
    await wait_until(lambda: all(h.is_locked() for h in hubs), timeout=DEADLINE)
    await wait_until(lambda: copies(hubs) == {}, timeout=DEADLINE)  # nothing runs
    nodes.heal()
    await nodes.settled()
    await nodes.exactly_once(ids)


async def test_majority_quorum_counts_the_nodes_that_failed(nodes: Nodes) -> None:
    """A cluster that had 10 nodes and lost 6 is locked (4 of 10), a graceful leave is not
    counted, and the nodes that come back unlock it."""
    names = [f"n{i}" for i in range(10)]
    hubs = [await nodes.add(n, partition=MajorityQuorum()) for n in names]
    await hubs[0].start_children(procs.counters(50), timeout=DEADLINE)
    nodes.partition([names[:4], names[4:]])
    await wait_until(lambda: all(h.is_locked() for h in hubs[:4]), timeout=DEADLINE)
    assert not any(h.is_locked() for h in hubs[4:])  # 6 of 10: a majority
    assert all(h.is_partitioned() for h in hubs)
    nodes.heal()
    await nodes.settled()
    await wait_until(lambda: not any(h.is_locked() for h in hubs), timeout=DEADLINE)
    assert not any(h.is_partitioned() for h in hubs)
    await nodes.exactly_once({f"c{i}" for i in range(50)})


async def test_dynamic_quorum_locks_on_a_sudden_loss(nodes: Nodes) -> None:
    """``DynamicQuorum(threshold=0.5)``: 3 of 4 nodes lost at once locks the survivor; they
    come back and it unlocks, every child once."""
    hubs = [await nodes.add(n, partition=DynamicQuorum(0.5, 30.0)) for n in "abcd"]
    ids = {s.id for s in procs.counters(40)}
    await hubs[0].start_children(procs.counters(40), timeout=DEADLINE)
    await nodes.exactly_once(ids)
    nodes.partition([["a"], ["b", "c", "d"]])
    await wait_until(lambda: hubs[0].is_locked(), timeout=DEADLINE)
    await wait_until(lambda: not hubs[0].process_list("local"), timeout=DEADLINE)
    assert not any(h.is_locked() for h in hubs[1:])  # 1 of 4 lost: under the threshold
    nodes.heal()
    await nodes.settled()
    await wait_until(lambda: not hubs[0].is_locked(), timeout=DEADLINE)
    await nodes.exactly_once(ids)
