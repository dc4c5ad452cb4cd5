"""Moves with messages in flight: HotSwap and ColdSwap through a join, a graceful leave, a
drain and ``hub.migrate``, with real nodes on loopback in this process.

Senders cast seq-numbered messages (``{"from": sender, "seq": k}``) to the children that move.
Every hub shares this process, so :data:`tests.procs.APPLIED` records every message applied by
any copy of a child, in the order applied: a message lost, doubled or overtaken shows there.
Under HotSwap the state moves too: each child's own count equals what was sent to it.

Deadlines only turn a hang into a failure; nothing asserts on elapsed time.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hub import (
    WILDCARD,
    ChildSpec,
    Hook,
    HookHandler,
    Hub,
)
from strategies import ColdSwap, ConsistentHashing, HotSwap
from tests import procs
from tests.cluster.inproc import DEADLINE, Nodes, owned
from tests.conftest import wait_until

STRATEGIES = {"hot": lambda: HotSwap(), "cold": lambda: ColdSwap()}


def sequenced(n: int, prefix: str = "s", **kwargs: Any) -> list[ChildSpec]:
    return [ChildSpec(f"{prefix}{i}", procs.Sequenced, kwargs=kwargs) for i in range(n)]


def moving(ids: list[str], before: list[str], after: list[str], count: int) -> list[str]:
    """``count`` of ``ids`` whose owner changes from ring ``before`` to ring ``after``."""
    old, new = ConsistentHashing(nodes=before), ConsistentHashing(nodes=after)
    changed = [c for c in ids if old.belongs_to(c)[0] != new.belongs_to(c)[0]]
    assert len(changed) >= count, f"only {len(changed)} of {len(ids)} move"
    return changed[:count]


class Senders:
    """One task per sending hub: rounds of one cast to each target, seq-numbered per sender."""

    def __init__(self, hubs: list[Hub], targets: list[str]) -> None:
        self.targets = targets
        self.sent: dict[str, int] = {h.node: 0 for h in hubs}
        self.errors: list[BaseException] = []
        self._stop = asyncio.Event()
        self._tasks = [asyncio.create_task(self._run(h)) for h in hubs]

    async def _run(self, hub: Hub) -> None:
        seq = 0
        while not self._stop.is_set():
            seq += 1
            for cid in self.targets:
                try:
                    await hub.cast(cid, {"from": hub.node, "seq": seq})
                except Exception as exc:  # reported by the test: a cast must not fail
                    self.errors.append(exc)
            self.sent[hub.node] = seq
            await asyncio.sleep(0.005)

    async def rounds(self, n: int) -> None:
        """Wait until every sender sent ``n`` more rounds."""
        goal = {node: sent + n for node, sent in self.sent.items()}
        await wait_until(
            lambda: all(self.sent[node] >= g for node, g in goal.items()), timeout=DEADLINE
        )

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


def check_applied(targets: list[str], sent: dict[str, int]) -> list[str]:
    """What differs from "each target applied each sender's 1..sent once, in order"."""
    out = []
    for cid in targets:
        applied = procs.APPLIED.get(cid, [])
        for sender, count in sent.items():
            seqs = [k for s, k in applied if s == sender]
            if seqs != list(range(1, count + 1)):
                missing = set(range(1, count + 1)) - set(seqs)
                doubled = len(seqs) - len(set(seqs))
                out.append(
                    f"{cid} from {sender}: {len(seqs)} of {count} applied, "
                    f"{len(missing)} missing, {doubled} doubled, in order: {seqs == sorted(seqs)}"
                )
    return out


async def all_applied(targets: list[str], sent: dict[str, int]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while problems := check_applied(targets, sent):
        if loop.time() > deadline:
            raise AssertionError(f"{len(problems)} of {len(targets)}: {problems[:5]}")
        await asyncio.sleep(0.05)


async def start_with_traffic(
    nodes: Nodes, kind: str, names: list[str], count: int = 300, **kwargs: Any
) -> tuple[list[Hub], set[str]]:
    procs.APPLIED.clear()
    hubs = [await nodes.add(n, migration=STRATEGIES[kind]()) for n in names]
    specs = sequenced(count, **kwargs)
    res = await hubs[0].start_children(specs, timeout=DEADLINE)
    assert res.status == "ok", res.errors[:3]
    ids = {s.id for s in specs}
    await nodes.exactly_once(ids)
    return hubs, ids


async def states(hub: Hub, targets: list[str]) -> dict[str, dict[str, Any]]:
    return {cid: await hub.call(cid, "state") for cid in targets}


async def state_moved(hub: Hub, targets: list[str], senders: Senders) -> None:
    """HotSwap: each target's own count is every message sent to it, all in order, after
    exactly one handover."""
    got = await states(hub, targets)
    total = sum(senders.sent.values())
    assert {cid: (s["n"], s["bad"], s["handovers"]) for cid, s in got.items()} == {
        cid: (total, 0, 1) for cid in targets
    }


@pytest.mark.parametrize("kind", ["hot", "cold"])
async def test_messages_and_state_move_exactly_once_when_a_node_joins(
    nodes: Nodes, kind: str
) -> None:
    hubs, ids = await start_with_traffic(nodes, kind, ["a", "b"])
    targets = moving(sorted(ids), ["a", "b"], ["a", "b", "c"], 30)
    senders = Senders(hubs, targets)
    await senders.rounds(5)
    await nodes.add("c", migration=STRATEGIES[kind]())
    await nodes.exactly_once(ids)
    await senders.rounds(5)  # and after the move, straight to the new place
    await senders.stop()
    assert senders.errors == []
    await all_applied(targets, senders.sent)
    got = await states(hubs[0], targets)
    assert {s["node"] for s in got.values()} == {"c"}
    total = sum(senders.sent.values())
    if kind == "hot":  # the state moved with the child: its count is every message sent
        assert {cid: (s["n"], s["bad"], s["handovers"]) for cid, s in got.items()} == {
            cid: (total, 0, 1) for cid in targets
        }
    else:  # a fresh start: it counts only what it applied itself, and never saw a handover
        assert all(s["n"] < total and s["handovers"] == 0 for s in got.values())


@pytest.mark.parametrize("kind", ["hot", "cold"])
async def test_messages_and_state_move_exactly_once_through_a_graceful_leave(
    nodes: Nodes, kind: str
) -> None:
    hubs, ids = await start_with_traffic(nodes, kind, ["a", "b", "c"])
    targets = [
        c for c in sorted(ids) if ConsistentHashing(nodes=["a", "b", "c"]).belongs_to(c)[0] == "c"
    ][:30]
    senders = Senders(hubs[:2], targets)
    await senders.rounds(5)
    await hubs[2].stop()
    await nodes.exactly_once(ids)
    await senders.rounds(5)
    await senders.stop()
    assert senders.errors == []
    await all_applied(targets, senders.sent)
    if kind == "hot":
        await state_moved(hubs[0], targets, senders)


@pytest.mark.parametrize("kind", ["hot", "cold"])
async def test_messages_and_state_move_exactly_once_through_a_drain(
    nodes: Nodes, kind: str
) -> None:
    hubs, ids = await start_with_traffic(nodes, kind, ["a", "b", "c"])
    targets = [
        c for c in sorted(ids) if ConsistentHashing(nodes=["a", "b", "c"]).belongs_to(c)[0] == "b"
    ][:30]
    senders = Senders([hubs[0], hubs[2]], targets)
    await senders.rounds(5)
    result = await hubs[1].drain()
    assert result.status == "ok", result.errors[:3]
    assert hubs[1].process_list("local") == []
    await nodes.exactly_once(ids, placement=["a", "c"])
    await senders.rounds(5)
    await senders.stop()
    assert senders.errors == []
    await all_applied(targets, senders.sent)
    if kind == "hot":
        await state_moved(hubs[0], targets, senders)


async def test_a_slow_terminate_does_not_overlap_with_the_new_copy(nodes: Nodes) -> None:
    """The new copy handles nothing (not even its handover) before the old one's terminate
    returned: a message sent meanwhile waits, and is applied once, after the state."""
    hubs, ids = await start_with_traffic(nodes, "hot", ["a", "b"], count=60, slow_terminate=0.5)
    targets = moving(sorted(ids), ["a", "b"], ["a", "b", "c"], 5)
    senders = Senders(hubs, targets)
    await senders.rounds(3)
    await nodes.add("c", migration=HotSwap())
    await nodes.exactly_once(ids)
    await senders.rounds(3)
    await senders.stop()
    await all_applied(targets, senders.sent)
    await state_moved(hubs[0], targets, senders)


async def test_a_state_too_big_to_hand_over_moves_cold_and_says_so(nodes: Nodes) -> None:
    skipped: list[Any] = []
    hook = HookHandler("skipped", skipped.append, [WILDCARD])
    migration = HotSwap(max_state_bytes=64 * 1024)
    a = await nodes.add("a", migration=migration, hooks={Hook.HANDOVER_SKIPPED: [hook]})
    big_id = owned(["a", "b"], lambda n: n == "b", "big")
    small_id = owned(["a", "b"], lambda n: n == "b", "small")
    big = ChildSpec(big_id, procs.BigState, args=[200_000])
    small = ChildSpec(small_id, procs.BigState, args=[1_000])
    await a.start_children([big, small], timeout=DEADLINE)
    await nodes.add("b", migration=migration)
    await wait_until(lambda: a.process_list("local") == [], timeout=DEADLINE)  # both moved to b
    assert await a.call(big_id, "get") == {"received": False, "size": 200_000}
    assert await a.call(small_id, "get") == {"received": True, "size": 1_000}
    assert [(s.child_id, s.reason, s.to_node) for s in skipped] == [(big_id, "too_big", "b")]
    assert "max_state_bytes=65536" in skipped[0].detail


async def test_a_new_copy_not_ready_within_retention_moves_cold_and_says_so(
    nodes: Nodes,
) -> None:
    """The old copy waits ``retention`` for the new one's init; past it the move goes ahead
    without the state (the new copy starts from its spec once its init is done)."""
    skipped: list[Any] = []
    hook = HookHandler("skipped", skipped.append, [WILDCARD])
    migration = HotSwap(retention=0.2)
    a = await nodes.add("a", migration=migration, hooks={Hook.HANDOVER_SKIPPED: [hook]})
    cid = owned(["a", "b"], lambda n: n == "b", "slow")
    spec = ChildSpec(cid, procs.SlowInit, args=[1.0, "a"])
    await a.start_children([spec], timeout=DEADLINE)
    await nodes.add("b", migration=migration)
    await wait_until(lambda: [n for n, _ in a.lookup(cid)] == ["b"], timeout=DEADLINE)
    assert await a.call(cid, "get") == {"received": False, "node": "b"}
    assert [(s.child_id, s.reason) for s in skipped] == [(cid, "retention")]


async def test_a_ready_copy_gets_the_state_within_retention(nodes: Nodes) -> None:
    delivered: list[Any] = []
    hook = HookHandler("delivered", delivered.append, [WILDCARD])
    migration = HotSwap(retention=5.0)
    a = await nodes.add("a", migration=migration)
    cid = owned(["a", "b"], lambda n: n == "b", "slow")
    spec = ChildSpec(cid, procs.SlowInit, args=[0.3, "a"])
    await a.start_children([spec], timeout=DEADLINE)
    await nodes.add("b", migration=migration, hooks={Hook.HANDOVER_DELIVERED: [hook]})
    await wait_until(lambda: [n for n, _ in a.lookup(cid)] == ["b"], timeout=DEADLINE)
    assert await a.call(cid, "get") == {"received": True, "node": "b"}
    assert [(d.child_id, d.from_node, d.to_node) for d in delivered] == [(cid, "a", "b")]
    assert delivered[0].size > 0


@pytest.mark.parametrize("kind", ["hot", "cold"])
async def test_migrate_moves_one_child_with_its_messages_and_keeps_it_there(
    nodes: Nodes, kind: str
) -> None:
    hubs, ids = await start_with_traffic(nodes, kind, ["a", "b", "c"], count=30)
    ring = ConsistentHashing(nodes=["a", "b", "c"])
    cid = next(c for c in sorted(ids) if ring.belongs_to(c)[0] == "a")
    senders = Senders(hubs, [cid])
    await senders.rounds(5)
    pid = await hubs[1].migrate(cid, "c")
    assert pid.node == "c"
    assert [n for n, _ in hubs[1].lookup(cid)] == ["c"]
    await senders.rounds(5)
    await senders.stop()
    assert senders.errors == []
    await all_applied([cid], senders.sent)
    got = await hubs[0].call(cid, "state")
    assert got["node"] == "c"
    if kind == "hot":
        assert (got["n"], got["bad"], got["handovers"]) == (sum(senders.sent.values()), 0, 1)
    # it stays: every node's placement says it belongs where it was migrated to ...
    assert all(h.coordinator is not None and h.coordinator.owners(cid) == ["c"] for h in hubs)
    # ... until its node drains: then it goes to its ring owner among the others
    await hubs[2].drain()
    await wait_until(lambda: [n for n, _ in hubs[0].lookup(cid)] == ["a"], timeout=DEADLINE)


async def test_migrate_refuses_what_it_cannot_do(nodes: Nodes) -> None:
    from hub import InvalidSpec, NotFound

    a = await nodes.add("a")
    await nodes.add("b")
    await a.start_children([ChildSpec("m", procs.Counter)], timeout=DEADLINE)
    with pytest.raises(InvalidSpec, match="not a live member"):
        await a.migrate("m", "nowhere")
    with pytest.raises(NotFound):
        await a.migrate("unknown", "b")
    assert (await a.migrate("m", "b")).node == "b"
    assert (await a.migrate("m", "b")).node == "b"  # already there: at once
    standalone = Hub("solo", host=None)
    await standalone.start()
    try:
        with pytest.raises(InvalidSpec, match="needs a cluster"):
            await standalone.migrate("m", "b")
    finally:
        await standalone.stop()
