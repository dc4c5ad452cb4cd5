"""Moves benchmark (issue 8 targets): HotSwap side by side with ColdSwap, in one run.

Real nodes on loopback (preset ``local``), all in this process (one event loop: every node and
the senders share one core, so absolute figures are pessimistic; the two strategies are
measured the same way, one after the other).

1. Exactness: 2 nodes, 300 :class:`tests.procs.Sequenced` children; 50 of them, whose owner
   changes when a third node joins, get 100 messages/s each (50/s from each of the two first
   nodes, seq-numbered per sender) for 2 s before the join, through it, and 2 s after. Every
   message applied by any copy is logged in order: lost, doubled and out-of-order messages
   (goal: 0 and 0, both strategies).
2. Unavailability per moving child: a prober per child calls it back to back; the gap between
   the last reply of the old copy and the first reply of the new one (p50, p99, max; goal for
   HotSwap: p99 <= 50 ms).
3. Throughput: 2 nodes with N Counters (10,000; ``--quick`` 2,000), a third joins: children
   moved per second, from the join until every node's registry shows every child on its new
   owner (goal: HotSwap >= 0.5x ColdSwap).

Usage: python scripts/bench/bench_moves.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from common import pct, write_report  # noqa: E402

from hub import ChildSpec, Hub  # noqa: E402
from hub.cluster import Faults, Node  # noqa: E402
from strategies import ColdSwap, ConsistentHashing, HotSwap  # noqa: E402
from tests import procs  # noqa: E402

COOKIE = "bench-moves-cookie-0123456789"
RATE = 50.0  # messages per second per sender per child (two senders: 100/s per child)
MOVING = 50


async def until(check: Any, deadline: float | None = None) -> bool:
    """Poll ``check`` every 10 ms until it holds (True) or ``deadline`` (loop time) passes."""
    loop = asyncio.get_running_loop()
    end = deadline if deadline is not None else loop.time() + 60.0
    while not check():
        if loop.time() >= end:
            return False
        await asyncio.sleep(0.01)
    return True


class Cluster:
    def __init__(self, migration: Any) -> None:
        self.migration = migration
        self.hubs: list[Hub] = []
        self.nodes: list[Node] = []

    async def add(self, name: str) -> Hub:
        seeds = [f"127.0.0.1:{self.nodes[0].address.port}"] if self.nodes else []
        node = await Node(name, cookie=COOKIE, preset="local", seeds=seeds, faults=Faults()).start()
        hub = Hub("bench", endpoint=node, migration=self.migration, start_timeout=60.0)
        await hub.start()
        self.nodes.append(node)
        self.hubs.append(hub)
        names = sorted(h.node for h in self.hubs)
        await until(lambda: all(h.nodes(include_local=True) == names for h in self.hubs))
        return hub

    async def placed(self, ids: list[str], deadline: float) -> bool:
        """Every hub's registry shows every child once, on its ring owner."""
        ring = ConsistentHashing(nodes=[h.node for h in self.hubs])
        want = {cid: ring.belongs_to(cid)[0] for cid in ids}
        return await until(
            lambda: all(
                [n for n, _ in hub.lookup(cid)] == [want[cid]] for hub in self.hubs for cid in ids
            ),
            deadline,
        )

    async def close(self) -> None:
        ids = [cid for cid, _ in self.hubs[0].process_list()]
        await self.hubs[0].stop_children(ids)
        for hub, node in zip(self.hubs, self.nodes, strict=True):
            await hub.stop()
            await node.stop()


def moving(ids: list[str], count: int) -> list[str]:
    old, new = ConsistentHashing(nodes=["a", "b"]), ConsistentHashing(nodes=["a", "b", "c"])
    return [c for c in ids if old.belongs_to(c)[0] != new.belongs_to(c)[0]][:count]


async def send(hub: Hub, targets: list[str], stop: asyncio.Event, sent: dict[str, int]) -> None:
    seq = 0
    loop = asyncio.get_running_loop()
    next_at = loop.time()
    while not stop.is_set():
        seq += 1
        for cid in targets:
            await hub.cast(cid, {"from": hub.node, "seq": seq})
        sent[hub.node] = seq
        next_at += 1.0 / RATE
        await asyncio.sleep(max(0.0, next_at - loop.time()))


async def probe(hub: Hub, cid: str, stop: asyncio.Event, replies: list[tuple[float, str]]) -> None:
    while not stop.is_set():
        state = await hub.call(cid, "state", timeout=30.0)
        replies.append((time.monotonic(), state["node"]))


def gap(replies: list[tuple[float, str]]) -> float | None:
    """Seconds between the last reply of the first node and the first reply of the next."""
    for (t0, n0), (t1, n1) in itertools.pairwise(replies):
        if n0 != n1:
            return t1 - t0
    return None


async def exactness(kind: str, migration: Any) -> dict[str, Any]:
    procs.APPLIED.clear()
    cluster = Cluster(migration)
    a, b = await cluster.add("a"), await cluster.add("b")
    specs = [ChildSpec(f"s{i}", procs.Sequenced) for i in range(300)]
    res = await a.start_children(specs, timeout=60.0)
    assert res.status == "ok", res.errors[:3]
    targets = moving([s.id for s in specs], MOVING)
    stop = asyncio.Event()
    sent: dict[str, int] = {}
    replies: dict[str, list[tuple[float, str]]] = {cid: [] for cid in targets}
    tasks = [asyncio.create_task(send(h, targets, stop, sent)) for h in (a, b)]
    tasks += [asyncio.create_task(probe(a, cid, stop, replies[cid])) for cid in targets]
    await asyncio.sleep(2.0)
    await cluster.add("c")
    loop = asyncio.get_running_loop()
    placed = await cluster.placed([s.id for s in specs], loop.time() + 60.0)
    await asyncio.sleep(2.0)
    stop.set()
    await asyncio.gather(*tasks)
    deadline = loop.time() + 30.0  # let the last messages be applied
    total = sum(sent.values()) * len(targets)
    await until(lambda: sum(len(procs.APPLIED.get(c, [])) for c in targets) >= total, deadline)
    lost = doubled = disordered = 0
    for cid in targets:
        applied = procs.APPLIED.get(cid, [])
        for sender, count in sent.items():
            seqs = [k for s, k in applied if s == sender]
            lost += len(set(range(1, count + 1)) - set(seqs))
            doubled += len(seqs) - len(set(seqs))
            disordered += sum(1 for x, y in itertools.pairwise(seqs) if y <= x)
    gaps = [g for cid in targets if (g := gap(replies[cid])) is not None]
    moved_to_c = sum(1 for cid in targets if replies[cid] and replies[cid][-1][1] == "c")
    await cluster.close()
    return {
        "strategy": kind,
        "placed": placed,
        "moving_children": len(targets),
        "messages_sent": total,
        "lost": lost,
        "doubled": doubled,
        "out_of_order": disordered,
        "children_seen_moving": len(gaps),
        "children_answering_on_c": moved_to_c,
        "unavailable_ms": {
            "p50": round(pct(gaps, 0.5) * 1000, 1) if gaps else None,
            "p99": round(pct(gaps, 0.99) * 1000, 1) if gaps else None,
            "max": round(max(gaps) * 1000, 1) if gaps else None,
        },
    }


async def throughput(kind: str, migration: Any, n: int) -> dict[str, Any]:
    cluster = Cluster(migration)
    a = await cluster.add("a")
    await cluster.add("b")
    specs = [ChildSpec(f"c{i}", procs.Counter, args=[i]) for i in range(n)]
    res = await a.start_children(specs, timeout=120.0)
    assert res.status == "ok", res.errors[:3]
    ids = [s.id for s in specs]
    loop = asyncio.get_running_loop()
    assert await cluster.placed(ids, loop.time() + 120.0)
    began = time.perf_counter()
    await cluster.add("c")
    placed = await cluster.placed(ids, loop.time() + 300.0)
    seconds = time.perf_counter() - began
    moved = len(cluster.hubs[2].process_list("local"))
    await cluster.close()
    return {
        "strategy": kind,
        "children": n,
        "moved": moved,
        "placed": placed,
        "seconds": round(seconds, 3),
        "moved_per_second": round(moved / seconds, 1),
    }


async def main(quick: bool) -> dict[str, Any]:
    logging.basicConfig(level=logging.WARNING)
    n = 2_000 if quick else 10_000
    report: dict[str, Any] = {"python": platform.python_version(), "quick": quick}
    strategies = {"HotSwap": HotSwap, "ColdSwap": ColdSwap}
    report["exactness"] = [await exactness(k, s()) for k, s in strategies.items()]
    report["throughput"] = [await throughput(k, s(), n) for k, s in strategies.items()]
    hot, cold = (r["moved_per_second"] for r in report["throughput"])
    report["throughput_ratio_hot_to_cold"] = round(hot / cold, 2)
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main(args.quick))
    for row in result["exactness"]:
        print(
            f"{row['strategy']:9} {row['messages_sent']} msgs to {row['moving_children']} moving "
            f"children: lost {row['lost']}, doubled {row['doubled']}, out of order "
            f"{row['out_of_order']}; unavailable p50 {row['unavailable_ms']['p50']} ms, "
            f"p99 {row['unavailable_ms']['p99']} ms, max {row['unavailable_ms']['max']} ms"
        )
    for row in result["throughput"]:
        print(
            f"{row['strategy']:9} join with {row['children']} children: {row['moved']} moved in "
            f"{row['seconds']} s = {row['moved_per_second']}/s"
        )
    print(f"HotSwap / ColdSwap throughput: {result['throughput_ratio_hot_to_cold']}x")
    write_report(ROOT / "scripts" / "bench" / "results" / "moves.json", result)
