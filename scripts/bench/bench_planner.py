"""Planner and replica benchmarks (pure code, one process, no network).

1. Planning one topology change: a 4th node joins a 3-node hub holding N children. One node
   does what the shell does on a topology change: it looks up which of its own children are
   not on an owner any more (``planner.strays``: a placement lookup each) and plans those
   (and the orphans: none here); the moves it plans are the children that change owner.
   Measured at N = 10,000 and 100,000: the time per planned move stays flat as N grows, i.e.
   the cost grows with the children that change owner (and a lookup per local child), not
   with the cluster's total.
2. Memory per registry entry on a node that does not run the child: N entries decoded from
   the wire as a peer's snapshot (desired record + registry entry, as the coordinator does),
   measured with tracemalloc and as an RSS delta, against the same process before.

Usage: python scripts/bench/bench_planner.py [--quick]
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
import tracemalloc
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

import msgpack  # noqa: E402
from common import write_report  # noqa: E402

from hub.desired import DesiredTable, Record  # noqa: E402
from hub.pid import Pid  # noqa: E402
from hub.planner import LocalChild, Move, Planner, View, strays  # noqa: E402
from hub.registry import Entry, Registry, Snapshot  # noqa: E402
from hub.spec import ChildSpec  # noqa: E402
from hub.wire import entry_from_wire, entry_to_wire  # noqa: E402
from strategies import ConsistentHashing  # noqa: E402

NODES = ["n0", "n1", "n2"]


class Running:
    def __init__(self, registry: Registry) -> None:
        self.registry = registry

    def running_on(self, child_id: str) -> list[tuple[str, int]]:
        return self.registry.running_on(child_id)


def build(n: int) -> tuple[DesiredTable, Registry, dict[str, LocalChild]]:
    """The state of node n0 in a 3-node hub with ``n`` children, each on its ring owner."""
    ring = ConsistentHashing(nodes=NODES)
    desired = DesiredTable()
    registry = Registry("n0", "boot0")
    parts: dict[str, list[Any]] = {name: [] for name in NODES}
    local: dict[str, LocalChild] = {}
    for i in range(n):
        spec = ChildSpec(f"child-{i}", "tests.procs:Counter", args=[i])
        record = Record(spec, {}, 1, "n0")
        desired.merge(record)
        owner = ring.belongs_to(spec.id)[0]
        parts[owner].append(record)
        if owner == "n0":
            local[spec.id] = LocalChild(1, "running")

    for name in ("n1", "n2"):
        entries = tuple(
            Entry.of(r.spec, Pid(name, f"boot-{name}", j), r.metadata, 1)
            for j, r in enumerate(parts[name])
        )
        registry.load(Snapshot(name, f"boot-{name}", len(entries), entries))
    return desired, registry, local


def bench_join(n: int, repeats: int) -> dict[str, Any]:
    desired, registry, local = build(n)
    ring = ConsistentHashing(nodes=[*NODES, "n3"])  # the ring after the join
    view = View("n0", frozenset([*NODES, "n3"]))
    running = Running(registry)
    planner = Planner()
    times = []
    moves = 0
    for _ in range(repeats):
        t0 = time.perf_counter()
        candidates = strays("n0", local, ring.belongs_to)  # as the shell (+ orphans: none)
        plan = planner.plan(view, ring.belongs_to, desired, running, local, candidates)
        times.append(time.perf_counter() - t0)
        moves = sum(isinstance(a, Move) for a in plan.actions)
    best = min(times)
    return {
        "children": n,
        "examined": len(local),
        "planned": len(candidates),
        "moves": moves,
        "plan_s_best": best,
        "plan_s_median": statistics.median(times),
        "us_per_move": best / max(1, moves) * 1e6,
        "us_per_examined": best / max(1, len(local)) * 1e6,
    }


def rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def snapshot_frames(n: int, chunk: int = 2_000) -> list[bytes]:
    """A peer's snapshot of ``n`` entries as the msgpack frames it sends (2,000 per frame)."""
    frames = []
    for start in range(0, n, chunk):
        items = []
        for i in range(start, min(n, start + chunk)):
            spec = ChildSpec(f"child-{i}", "tests.procs:Counter", args=[i])
            record = Record(spec, {}, 1, "n1")
            pid = Pid("n1", "boot-n1-0123456789ab", i)
            items.append(entry_to_wire(Entry.of(spec, pid, {}, 1), record))  # as a peer sends it
        frames.append(msgpack.packb(items, use_bin_type=True))
    return frames


def load_replica(frames: list[bytes]) -> tuple[DesiredTable, Registry]:
    """Decode the frames as a node that does not run these children does."""
    desired = DesiredTable()
    registry = Registry("n0", "boot0")
    entries = []
    for frame in frames:
        for item in msgpack.unpackb(frame, raw=False, strict_map_key=False):
            record, entry = entry_from_wire(item, desired.get, "n1", "boot-n1-0123456789ab")
            desired.merge(record)
            entries.append(entry)
    registry.load(Snapshot("n1", "boot-n1-0123456789ab", len(entries), tuple(entries)))
    return desired, registry


def bench_memory(n: int) -> dict[str, Any]:
    frames = snapshot_frames(n)
    gc.collect()
    before = rss()
    desired, registry = load_replica(frames)
    gc.collect()
    grown = rss() - before
    assert len(desired) == n
    assert len(registry) == n
    del desired, registry
    gc.collect()
    tracemalloc.start()
    traced_before = tracemalloc.get_traced_memory()[0]
    _desired, _registry = load_replica(frames)
    gc.collect()
    traced = tracemalloc.get_traced_memory()[0] - traced_before
    tracemalloc.stop()
    return {
        "entries": n,
        "tracemalloc_bytes_per_entry": traced / n,
        "rss_bytes_per_entry": grown / n,
        "goal_bytes_per_entry": 600,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    sizes = [10_000, 100_000]
    joins = [bench_join(n, repeats) for n in sizes]
    print("\nPlanning one join (a 4th node joins a 3-node hub), on one node")
    print(f"{'children':>9} {'examined':>9} {'moves':>7} {'plan ms':>9} {'us/move':>8}")
    for row in joins:
        print(
            f"{row['children']:>9,} {row['examined']:>9,} {row['moves']:>7,} "
            f"{row['plan_s_best'] * 1e3:>9.1f} {row['us_per_move']:>8.2f}"
        )
    growth = joins[1]["plan_s_best"] / joins[0]["plan_s_best"]
    moved = joins[1]["moves"] / joins[0]["moves"]
    print(f"time x{growth:.1f} for moves x{moved:.1f} (10k -> 100k children)")
    memory = bench_memory(20_000 if args.quick else 100_000)
    print("\nMemory per registry entry on a node that does not run the child")
    print(
        f"  {memory['entries']:,} entries: tracemalloc {memory['tracemalloc_bytes_per_entry']:.0f}"
        f" B, RSS {memory['rss_bytes_per_entry']:.0f} B (goal <= 600 B)"
    )
    write_report(
        ROOT / "scripts" / "bench" / "results" / "planner.json",
        {
            "machine": platform.platform(),
            "python": platform.python_version(),
            "join": joins,
            "join_time_growth": growth,
            "join_moves_growth": moved,
            "memory": memory,
        },
    )


if __name__ == "__main__":
    main()
