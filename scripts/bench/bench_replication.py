"""Replication and quorum benchmark (issue 9 targets), real node processes on loopback (preset
``local``), driven through ``tests/cluster/harness.py``.

1. Lock: 5 nodes under ``StaticQuorum(3)`` with N children (10,000; ``--quick`` 2,000), split
   2|3 (fault injection, all traffic): seconds from the split until the minority detected the
   loss (both minority nodes declared the 3 others failed: only then is quorum lost), and
   until both minority nodes are locked and run nothing (goal: <= detection + 1 s).
2. Heal: the split heals: seconds until every node sees every other alive (detection of the
   heal), and until every child runs exactly once on its ring owner among the 5 with every
   registry equal (goal: <= detection + 2 s).
3. Replication: 5 nodes, ``Replication(factor=3)``, N children: seconds from the start request
   until all 3N copies run on their owners; then kill -9 of one node: seconds to detection and
   until every child has its 3 copies on its owners among the 4 survivors again.

Times are this process's clock at the moment a poll saw the state (every 0.1 s), except
detection, which is the node's own ``time.monotonic()`` stamp on its member event, and the
heal's "exactly once", which is the latest of the nodes' own stamps of the moment their registry
showed every child once, on its owner among the 5 (a ``watch``; a poll of every registry then
confirms that every registry is equal and every copy runs). Node stamps are system-wide on
Linux.

Usage: python scripts/bench/bench_replication.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from common import write_report  # noqa: E402

from tests.cluster.harness import Cluster, NodeProc  # noqa: E402
from tests.cluster.test_replication_procs import copies, placed  # noqa: E402

HUB = "orders"
LONG = 600.0
POLL = 0.5  # seconds between two reads of every registry (a read of 10,000 entries costs)


def first_failed(nodes: list[NodeProc], since: dict[str, int], names: set[str]) -> float | None:
    """When the first of ``nodes`` declared one of ``names`` failed (its own clock)."""
    stamps = [
        float(e["t"])
        for n in nodes
        for e in n.events[since[n.name] :]
        if e["ev"] == "member" and e["kind"] == "failed" and e["name"] in names
    ]
    return min(stamps) if stamps else None


def all_failed(nodes: list[NodeProc], since: dict[str, int], names: set[str]) -> float | None:
    """When every one of ``nodes`` had declared every one of ``names`` failed."""
    last = []
    for n in nodes:
        seen = {
            e["name"]: float(e["t"])
            for e in n.events[since[n.name] :]
            if e["ev"] == "member" and e["kind"] == "failed" and e["name"] in names
        }
        if set(seen) != names:
            return None
        last.append(max(seen.values()))
    return max(last)


def all_back(groups: list[list[NodeProc]], since: dict[str, int]) -> float | None:
    """When every node had first seen every node of the other groups alive again."""
    last = []
    for group in groups:
        others = {x.name for g in groups if g is not group for x in g}
        for n in group:
            seen: dict[str, float] = {}
            for e in n.events[since[n.name] :]:
                if e["ev"] == "member" and e["kind"] == "alive" and e["name"] in others:
                    seen.setdefault(e["name"], float(e["t"]))
            if set(seen) != others:
                return None
            last.append(max(seen.values()))
    return max(last)


async def poll(check: Any, limit: float = LONG) -> float:
    """Seconds (this process's clock) until the async ``check()`` holds."""
    began = time.monotonic()
    while not await check():
        if time.monotonic() - began > limit:
            raise TimeoutError("condition not met")
        await asyncio.sleep(0.1)
    return time.monotonic()


async def start(node: NodeProc, n: int) -> set[str]:
    reply = await node.command(cmd="start", n=n, prefix="c", timeout=120, reply_timeout=LONG)
    assert reply["ok"] == n, reply
    return {f"c{i}" for i in range(n)}


async def quorum(n: int) -> dict[str, Any]:
    cluster = Cluster()
    try:
        nodes = await cluster.start(5, hub=HUB, partition="static:3")
        await cluster.hub_converged(nodes)
        ids = await start(nodes[0], n)
        await cluster.exactly_once(nodes, ids, timeout=LONG)
        minority, majority = nodes[:2], nodes[2:]
        marks = {x.name: len(x.events) for x in nodes}
        groups = [[x.name for x in minority], [x.name for x in majority]]
        split = time.monotonic()
        for node in nodes:
            await node.command(cmd="partition", groups=groups)

        async def minority_locked() -> bool:
            for node in minority:
                if not (await node.command(cmd="locked"))["locked"] or await node.local():
                    return False
            return True

        locked_at = await poll(minority_locked)
        majority_names = {x.name for x in majority}
        first = first_failed(minority, marks, majority_names)
        detected = all_failed(minority, marks, majority_names)
        await cluster.exactly_once(majority, ids, timeout=LONG)
        marks = {x.name: len(x.events) for x in nodes}
        names = [x.name for x in nodes]
        for (
            node
        ) in nodes:  # each node reports when its registry shows every child once, on its owner
            await node.command(cmd="watch", ids=sorted(ids), on=names)
        heal = time.monotonic()
        for node in nodes:
            await node.command(cmd="heal")
        healed_at = max(
            [
                (
                    await x.wait_for(
                        lambda e: e["ev"] == "reached", since=marks[x.name], timeout=LONG
                    )
                )["t"]
                for x in nodes
            ]
        )
        # then (not while it is measured: a read of every registry costs every node CPU)
        # every node sees every other, every copy runs, and every registry is equal
        await cluster.converged(set(names), timeout=LONG)
        seen_at = all_back([minority, majority], marks) or time.monotonic()
        await cluster.exactly_once(nodes, ids, timeout=LONG, poll=POLL)
        return {
            "children": n,
            "split_first_failure_s": round(first - split, 3) if first else None,
            "split_detected_s (the minority saw all 3 fail)": (
                round(detected - split, 3) if detected else None
            ),
            "minority_locked_and_empty_s": round(locked_at - split, 3),
            "lock_after_detection_s": round(locked_at - detected, 3) if detected else None,
            "heal_seen_s (every node saw the other side alive)": round(seen_at - heal, 3),
            "heal_to_exactly_once_s": round(healed_at - heal, 3),
            "heal_goal_s (heal seen + 2 s)": round(seen_at - heal + 2.0, 3),
        }
    finally:
        await cluster.close()


async def replication(n: int) -> dict[str, Any]:
    cluster = Cluster()
    try:
        nodes = await cluster.start(5, hub=HUB, redundancy="3")
        await cluster.hub_converged(nodes)
        names = [x.name for x in nodes]
        want = placed({f"c{i}" for i in range(n)}, names, 3)
        began = time.monotonic()
        ids = await start(nodes[0], n)

        async def all_copies(among: list[NodeProc], target: dict[str, list[str]]) -> bool:
            return await copies(among) == target

        running_at = await poll(lambda: all_copies(nodes, want))
        victim, survivors = nodes[-1], nodes[:-1]
        marks = {x.name: len(x.events) for x in survivors}
        killed = time.monotonic()
        victim.signal(signal.SIGKILL)
        await victim.kill()
        again = placed(ids, [x.name for x in survivors], 3)
        restored_at = await poll(lambda: all_copies(survivors, again))
        detected = first_failed(survivors, marks, {victim.name})
        return {
            "children": n,
            "copies": 3 * n,
            "all_copies_running_s": round(running_at - began, 3),
            "kill9_detected_s": round(detected - killed, 3) if detected else None,
            "factor_restored_s": round(restored_at - killed, 3),
        }
    finally:
        await cluster.close()


async def main(quick: bool) -> dict[str, Any]:
    n = 2_000 if quick else 10_000
    return {
        "python": platform.python_version(),
        "quick": quick,
        "quorum": await quorum(n),
        "replication": await replication(n),
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    result = asyncio.run(main(args.quick))
    for section in ("quorum", "replication"):
        print(section, result[section])
    write_report(ROOT / "scripts" / "bench" / "results" / "replication.json", result)
