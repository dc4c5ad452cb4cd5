"""The distributed hub with real nodes on loopback (several hubs in this process, through
``tests/cluster/inproc.py``, so that the tests can sample every node's supervisor at once)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hub import (
    AlreadyStarted,
    CallFailed,
    Hook,
    NotFound,
    Timeout,
)
from strategies import ConsistentHashing, PubSub
from tests import procs
from tests.cluster.inproc import Nodes
from tests.conftest import wait_until


def owner(nodes: Nodes, cid: str) -> str:
    """``cid``'s ring owner among the live hubs."""
    return ConsistentHashing(nodes=[h.node for h in nodes.live]).belongs_to(cid)[0]


def supervised(nodes: Nodes) -> dict[str, list[str]]:
    """child id -> the nodes whose supervisor holds it right now (starting and stopping
    copies too: stricter than the registry for "never two copies")."""
    where: dict[str, list[str]] = {}
    for hub in nodes.live:
        for cid in hub.runtime.supervisor.children:
            where.setdefault(cid, []).append(hub.node)
    return where


counters = procs.counters


async def test_children_spread_over_their_owners_and_every_registry_agrees(
    nodes: Nodes,
) -> None:
    for name in ("a", "b", "c"):
        await nodes.add(name)
    res = await nodes.hubs["a"].start_children(counters(300))
    assert res.status == "ok"
    assert len(res.started) == 300
    ids = {f"c{i}" for i in range(300)}
    await nodes.exactly_once(ids)
    per_node = {h.node: len(h.runtime.supervisor.children) for h in nodes.hubs.values()}
    assert all(n > 50 for n in per_node.values()), per_node  # spread, not piled on one node
    for cid, where in res.started:
        assert [n for n, _ in where] == [owner(nodes, cid)]
    again = await nodes.hubs["c"].start_children(counters(3))
    assert [type(e) for _, e in again.errors] == [AlreadyStarted] * 3
    stop = await nodes.hubs["b"].stop_children(sorted(ids))
    assert stop.status == "ok"
    assert len(stop.stopped) == 300
    await wait_until(lambda: all(h.process_list() == [] for h in nodes.hubs.values()))


async def test_cast_and_call_reach_remote_children(nodes: Nodes) -> None:
    a = await nodes.add("a")
    b = await nodes.add("b")
    await a.start_children(counters(20))
    await nodes.exactly_once({f"c{i}" for i in range(20)})
    remote = next(cid for cid, where in b.process_list() if where[0][0] == "a")
    await b.cast(remote, {"by": 100})
    n = int(remote[1:])
    assert await b.call(remote, "get") == n + 100
    pid = b.get_pid(remote)
    assert pid is not None
    assert pid.node == "a"
    assert await b.call(pid, "get") == n + 100
    with pytest.raises(NotFound):
        await b.call("ghost", "get", timeout=1)


async def test_a_join_migrates_exactly_the_children_the_newcomer_owns(nodes: Nodes) -> None:
    for name in ("a", "b"):
        await nodes.add(name)
    ids = {f"c{i}" for i in range(200)}
    await nodes.hubs["a"].start_children(counters(200))
    await nodes.exactly_once(ids)
    await nodes.add("c")
    await nodes.exactly_once(ids)
    owned = {cid for cid in ids if owner(nodes, cid) == "c"}
    assert owned  # the newcomer got its share

    def migrated() -> set[str]:
        return {s.id for e, d in nodes.events["c"] if e == Hook.CHILDREN_MIGRATED for s in d.specs}

    await wait_until(lambda: migrated() >= owned)  # hooks run in their own task
    assert migrated() == owned


async def test_a_graceful_leave_hands_children_over_without_two_copies(nodes: Nodes) -> None:
    for name in ("a", "b", "c"):
        await nodes.add(name)
    ids = {f"c{i}" for i in range(200)}
    await nodes.hubs["a"].start_children(counters(200))
    await nodes.exactly_once(ids)
    doubles: list[str] = []
    sampling = True

    async def sample() -> None:
        while sampling:
            doubles.extend(cid for cid, nodes in supervised(nodes).items() if len(nodes) > 1)
            await asyncio.sleep(0.002)

    sampler = asyncio.create_task(sample())
    leaver = nodes.hubs["c"]
    await leaver.stop()
    await nodes.exactly_once(ids)
    sampling = False
    await sampler
    assert doubles == []


async def test_a_partition_that_heals_ends_without_duplicates(
    nodes: Nodes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("WARNING", logger="hub.coordinator")
    for name in ("a", "b"):
        await nodes.add(name)
    ids = {f"c{i}" for i in range(60)}
    await nodes.hubs["a"].start_children(counters(60))
    await nodes.exactly_once(ids)
    nodes.partition([["a"], ["b"]])
    # each side fails the other over: every child runs on both sides
    await wait_until(lambda: all(len(n) == 2 for n in supervised(nodes).values()), timeout=30)
    nodes.heal()
    await nodes.exactly_once(ids)

    def conflicts() -> list[Any]:
        return [d for log in nodes.events.values() for e, d in log if e == Hook.CHILD_CONFLICT]

    await wait_until(lambda: len(conflicts()) >= len(ids))  # hooks run in their own task
    assert sorted(c.child_id for c in conflicts()) == sorted(ids)
    for c in conflicts():
        assert c.winner == owner(nodes, c.child_id) != c.loser
    # one line per plan, not per child: the counts add up to the conflicts
    lines = [r.getMessage() for r in caplog.records if "also run elsewhere" in r.getMessage()]
    assert sum(int(m.split(": ")[1].split(" ")[0]) for m in lines) == len(conflicts())
    assert len(lines) < len(conflicts())


async def test_a_crash_restarts_in_place_and_every_node_sees_the_new_pid(nodes: Nodes) -> None:
    for name in ("a", "b", "c"):
        await nodes.add(name)
    await nodes.hubs["a"].start_children(counters(30))
    await nodes.exactly_once({f"c{i}" for i in range(30)})
    cid = next(c for c, where in nodes.hubs["a"].process_list() if where[0][0] == "b")
    old = nodes.hubs["a"].get_pid(cid)
    with pytest.raises(CallFailed):
        await nodes.hubs["a"].call(cid, "crash")
    await wait_until(lambda: all(h.get_pid(cid) not in (None, old) for h in nodes.hubs.values()))
    new = nodes.hubs["a"].get_pid(cid)
    assert new is not None
    assert new.node == "b"  # restarted in place
    for hub in nodes.hubs.values():
        await wait_until(
            lambda h=hub: any(
                e == Hook.CHILD_PROCESS_PID_UPDATE and d.child_id == cid and d.pid == new
                for e, d in nodes.events[h.node]
            )
        )


async def test_calls_during_a_move_wait_for_the_new_instance(nodes: Nodes) -> None:
    for name in ("a", "b"):
        await nodes.add(name)
    ids = {f"c{i}" for i in range(100)}
    await nodes.hubs["a"].start_children(counters(100))
    await nodes.exactly_once(ids)
    ring = ConsistentHashing(nodes=["a", "b", "c"])
    movers = [cid for cid in sorted(ids) if ring.belongs_to(cid)[0] == "c"][:5]
    caller = nodes.hubs["a"]
    answers: list[tuple[str, int]] = []
    failures: list[BaseException] = []
    calling = True

    async def keep_calling(cid: str) -> None:
        while calling:
            try:
                answers.append((cid, await caller.call(cid, "get", timeout=10)))
            except Exception as exc:
                failures.append(exc)

    callers = [asyncio.create_task(keep_calling(cid)) for cid in movers]
    await nodes.add("c")
    await nodes.exactly_once(ids)
    calling = False
    await asyncio.gather(*callers)
    assert failures == []
    assert {cid for cid, _ in answers} == set(movers)
    assert all(value == int(cid[1:]) for cid, value in answers)  # Counter(start=i) answers i
    assert all(supervised(nodes)[cid] == ["c"] for cid in movers)


async def test_a_peer_that_missed_a_delta_gets_a_snapshot_without_waiting_for_anti_entropy(
    nodes: Nodes,
) -> None:
    slow_sync = PubSub(anti_entropy_interval=3600.0)
    a = await nodes.add("a", synchronization=slow_sync)
    b = await nodes.add("b", synchronization=slow_sync)
    assert a.coordinator is not None
    real_send = a.coordinator._send
    dropped: list[str] = []

    async def lossy_send(peer: str, kind: str, payload: Any) -> bool:
        if kind == "delta" and not dropped:
            dropped.append(peer)
            return False  # as if the link had broken
        return await real_send(peer, kind, payload)

    await wait_until(  # the join snapshot is in
        lambda: "a" in b.runtime.registry.partitions and not a.coordinator._behind  # type: ignore[union-attr]
    )
    a.coordinator._send = lossy_send  # type: ignore[method-assign]
    ring = ConsistentHashing(nodes=["a", "b"])
    mine = [s for s in counters(40) if ring.belongs_to(s.id)[0] == "a"][:1]  # one delta only
    await a.start_children(mine)
    await wait_until(lambda: dropped == ["b"])  # the delta to b was lost ...
    await wait_until(
        lambda: {cid for cid, _ in b.process_list()} == {s.id for s in mine}
    )  # ... b caught up


async def test_a_silent_node_costs_only_its_children_a_timeout_and_rollback_spans_nodes(
    nodes: Nodes,
) -> None:
    a = await nodes.add("a")
    b = await nodes.add("b")
    assert b.coordinator is not None
    hang = asyncio.Event()

    async def silent(*args: Any, **kwargs: Any) -> Any:
        await hang.wait()  # b's hub accepts the request and never answers

    b.coordinator.serve_start = silent  # type: ignore[method-assign]
    ring = ConsistentHashing(nodes=["a", "b"])
    specs = counters(20)
    on_b = {s.id for s in specs if ring.belongs_to(s.id)[0] == "b"}
    on_a = {s.id for s in specs} - on_b
    res = await a.start_children(specs, timeout=0.5)
    assert {cid for cid, _ in res.started} == on_a
    assert {cid for cid, e in res.errors if isinstance(e, Timeout)} == on_b
    await a.stop_children(sorted(on_a))
    rolled = await a.start_children(counters(20, prefix="r"), timeout=0.5, on_failure="rollback")
    assert rolled.started == []
    assert set(rolled.rolled_back) == {
        f"r{i}" for i in range(20) if ring.belongs_to(f"r{i}")[0] == "a"
    }
    assert a.runtime.supervisor.children == {}
    hang.set()
