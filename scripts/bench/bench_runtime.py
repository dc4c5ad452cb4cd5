"""Local runtime benchmarks, each side by side with raw asyncio in the same run.

* start rate: ``start_children`` of N function processes vs ``asyncio.create_task`` of the same
  coroutine function, both timed until every coroutine has run its first step (parked on its
  mailbox). Our side includes building the ``ChildSpec`` objects.
* memory: RSS growth per idle child at N children vs raw tasks each waiting on its own
  ``asyncio.Queue``. Each side runs in a fresh interpreter so neither inherits the other's heap.

Usage: python scripts/bench/bench_runtime.py [--quick] [--start N] [--memory N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hub import ChildSpec, Hub, ProcessContext  # noqa: E402


async def parked(ctx: ProcessContext) -> None:
    """The child under test: waits for messages forever."""
    while True:
        await ctx.receive()


async def parked_raw(queue: asyncio.Queue[Any]) -> None:
    while True:
        await queue.get()


async def raw_start(n: int) -> float:
    t0 = time.perf_counter()
    tasks = [asyncio.create_task(parked_raw(asyncio.Queue())) for _ in range(n)]
    await asyncio.sleep(0)  # every task runs its first step
    elapsed = time.perf_counter() - t0
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    return elapsed


async def hub_start(n: int) -> float:
    async with Hub("bench", node="bench", host=None) as hub:
        gc.collect()
        t0 = time.perf_counter()
        specs = [ChildSpec(f"c{i}", parked) for i in range(n)]
        result = await hub.start_children(specs)
        await asyncio.sleep(0)
        elapsed = time.perf_counter() - t0
        assert result.status == "ok", result.errors[:3]
        assert len(result.started) == n
    return elapsed


def bench_start(n: int, repeats: int) -> dict[str, Any]:
    raw, ours = [], []
    for _ in range(repeats):  # interleaved so that machine noise hits both sides alike
        raw.append(asyncio.run(raw_start(n)))
        ours.append(asyncio.run(hub_start(n)))
    raw_rate = n / statistics.median(raw)
    our_rate = n / statistics.median(ours)
    return {
        "children": n,
        "repeats": repeats,
        "raw_create_task_per_s": raw_rate,
        "hub_start_children_per_s": our_rate,
        "ratio": our_rate / raw_rate,
        "goal": ">= 0.5",
    }


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def memory_side(side: str, n: int) -> int:
    gc.collect()
    if side == "raw":
        before = rss_bytes()
        tasks = [asyncio.create_task(parked_raw(asyncio.Queue())) for _ in range(n)]
        await asyncio.sleep(0)
        gc.collect()
        grown = rss_bytes() - before
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        return grown
    async with Hub("bench", node="bench", host=None) as hub:
        await hub.start_children([ChildSpec("warmup", parked)])
        gc.collect()
        before = rss_bytes()
        result = await hub.start_children([ChildSpec(f"c{i}", parked) for i in range(n)])
        await asyncio.sleep(0)
        gc.collect()
        grown = rss_bytes() - before
        assert len(result.started) == n
        return grown


def bench_memory(n: int, repeats: int) -> dict[str, Any]:
    per: dict[str, list[float]] = {"raw": [], "hub": []}
    for _ in range(repeats):
        for side in ("raw", "hub"):
            out = subprocess.run(
                [sys.executable, __file__, "--memory-side", side, "--memory", str(n)],
                check=True,
                capture_output=True,
                text=True,
            )
            per[side].append(int(out.stdout.strip()) / n)
    raw = statistics.median(per["raw"])
    ours = statistics.median(per["hub"])
    return {
        "children": n,
        "repeats": repeats,
        "raw_task_with_queue_bytes_per_child": raw,
        "hub_idle_child_bytes_per_child": ours,
        "ratio": ours / raw,
        "goal": "<= 1.0",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller N, fewer repeats")
    parser.add_argument("--start", type=int, default=20_000, help="children for the start rate")
    parser.add_argument("--memory", type=int, default=100_000, help="children for memory")
    parser.add_argument("--memory-side", choices=["raw", "hub"], help=argparse.SUPPRESS)
    parser.add_argument("--json", default=str(ROOT / "scripts/bench/results/runtime.json"))
    args = parser.parse_args()
    if args.memory_side:
        print(asyncio.run(memory_side(args.memory_side, args.memory)))
        return
    start_n, mem_n, repeats = args.start, args.memory, 5
    if args.quick:
        start_n, mem_n, repeats = min(start_n, 2_000), min(mem_n, 10_000), 2
    start = bench_start(start_n, repeats)
    memory = bench_memory(mem_n, max(1, repeats // 2 + 1))
    rows = [
        ("start rate (children/s)", start["raw_create_task_per_s"],
         start["hub_start_children_per_s"], start["ratio"], start["goal"]),
        ("memory per idle child (bytes)", memory["raw_task_with_queue_bytes_per_child"],
         memory["hub_idle_child_bytes_per_child"], memory["ratio"], memory["goal"]),
    ]  # fmt: skip
    print(f"{'benchmark':32} {'raw asyncio':>14} {'processhub':>14} {'ratio':>7}  goal")
    for name, raw, ours, ratio, goal in rows:
        print(f"{name:32} {raw:14,.0f} {ours:14,.0f} {ratio:7.2f}  {goal}")
    report = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "start": start,
        "memory": memory,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
