"""Metrics benchmarks, side by side in one run.

* scrape: ``GET /metrics`` over HTTP on a node running 100,000 children vs an empty node (the
  same hub setup, one node on loopback). Reports the best and median of the repeats, and the
  exposition size. Target: <= 50 ms with 100,000 children.
* overhead on hook dispatch: awaited ``hub.hooks.dispatch`` of a hub event the metrics count
  (``child_crashed``, with 10 user handlers) and of a user event, in a hub with
  ``observability=True`` vs ``observability=False``. Target: <= 5 %.
* overhead on the start rate: ``start_children`` of N function processes in a standalone hub
  with ``observability=True`` vs ``False`` (the same measure as ``bench_runtime.py``).
  Target: <= 5 %.

Repeats are interleaved so that machine noise hits both sides alike; the ratio is taken on the
best of the repeats (noise only ever adds time).

Usage: python scripts/bench/bench_metrics.py [--quick] [--children N] [--start N] [--json PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import aiohttp

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from hub import ChildSpec, Hook, HookHandler, Hub, ProcessContext  # noqa: E402
from scripts.bench.common import write_report  # noqa: E402


async def parked(ctx: ProcessContext) -> None:
    while True:
        await ctx.receive()


# -- scrape --------------------------------------------------------------------------------------


async def scrape_times(children: int, repeats: int) -> dict[str, Any]:
    async with Hub("bench", node="bench", preset="local") as hub:
        assert hub.endpoint is not None
        url = f"http://127.0.0.1:{hub.endpoint.address.port}/metrics"
        if children:
            for i in range(0, children, 20_000):
                specs = [ChildSpec(f"c{j}", parked) for j in range(i, min(children, i + 20_000))]
                result = await hub.start_children(specs, timeout=120.0)
                assert result.status == "ok", result.errors[:3]
        assert len(hub.runtime.children()) == children
        times = []
        size = 0
        async with aiohttp.ClientSession() as session:
            for _ in range(repeats):
                gc.collect()
                t0 = time.perf_counter()
                async with session.get(url) as resp:
                    body = await resp.read()
                times.append(time.perf_counter() - t0)
                assert resp.status == 200
                size = len(body)
        line = f'processhub_children{{hub="bench",state="running"}} {float(children)}'
        assert line in body.decode(), "the scrape does not report the children"
    return {"best_ms": min(times) * 1e3, "median_ms": statistics.median(times) * 1e3, "bytes": size}


# -- dispatch overhead ---------------------------------------------------------------------------


def _sink(data: Any) -> None:
    return None


async def dispatch_ns(observability: bool, event: Hook | str, n: int) -> float:
    hub = Hub("bench", host=None, observability=observability)
    hub.hooks.register(event, [HookHandler(f"h{i}", _sink) for i in range(10)])
    dispatch = hub.hooks.dispatch
    gc.collect()
    t0 = time.perf_counter_ns()
    for _ in range(n):
        await dispatch(event, ("c1", None, 1))
    elapsed = time.perf_counter_ns() - t0
    await hub.stop()
    return elapsed / n


async def bench_dispatch(n: int, repeats: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for label, event in (("hub_event_child_crashed", Hook.CHILD_CRASHED), ("user_event", "ev")):
        on, off = [], []
        for i in range(repeats):  # alternate which side goes first
            for observability in (False, True) if i % 2 else (True, False):
                side = on if observability else off
                side.append(await dispatch_ns(observability, event, n))
        out[label] = {
            "metrics_off_ns": min(off),
            "metrics_on_ns": min(on),
            "overhead_pct": (min(on) / min(off) - 1) * 100,
            "handlers": "10 user handlers (+1 counter with metrics on, for hub events it counts)",
        }
    return out


# -- start-rate overhead -------------------------------------------------------------------------


async def start_seconds(observability: bool, n: int) -> float:
    async with Hub("bench", node="bench", host=None, observability=observability) as hub:
        gc.collect()
        t0 = time.perf_counter()
        result = await hub.start_children([ChildSpec(f"c{i}", parked) for i in range(n)])
        await asyncio.sleep(0)
        elapsed = time.perf_counter() - t0
        assert result.status == "ok"
        if observability:
            assert hub.counters is not None
            await hub.runtime.events.flush()
            assert hub.counters.starts == n
    return elapsed


async def bench_start(n: int, repeats: int) -> dict[str, Any]:
    on, off = [], []
    for i in range(repeats):  # alternate which side goes first
        for observability in (False, True) if i % 2 else (True, False):
            (on if observability else off).append(await start_seconds(observability, n))
    return {
        "children": n,
        "metrics_off_per_s": n / min(off),
        "metrics_on_per_s": n / min(on),
        "overhead_pct": (min(on) / min(off) - 1) * 100,
    }


async def run(args: argparse.Namespace) -> dict[str, Any]:
    children, start_n, dispatches, repeats = args.children, args.start, 200_000, 8
    if args.quick:
        children, start_n, dispatches, repeats = min(children, 20_000), 2_000, 20_000, 3
    empty = await scrape_times(0, 20)
    full = await scrape_times(children, 20)
    dispatch = await bench_dispatch(dispatches, repeats)
    start = await bench_start(start_n, repeats)
    return {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "scrape": {"children": children, "empty_node": empty, "full_node": full, "goal_ms": 50},
        "dispatch_overhead": dispatch,
        "start_overhead": start,
        "goal_overhead_pct": 5,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="smaller N, fewer repeats")
    parser.add_argument("--children", type=int, default=100_000, help="children for the scrape")
    parser.add_argument("--start", type=int, default=20_000, help="children for the start rate")
    parser.add_argument("--json", default=str(ROOT / "scripts/bench/results/metrics.json"))
    args = parser.parse_args()
    report = asyncio.run(run(args))
    s = report["scrape"]
    print(f"{'benchmark':44} {'baseline':>12} {'measured':>12}  goal")
    print(
        f"{'GET /metrics, best (ms): empty vs ' + format(s['children'], ',') + ' children':44} "
        f"{s['empty_node']['best_ms']:12.2f} {s['full_node']['best_ms']:12.2f}  <= 50 ms"
    )
    print(
        f"{'GET /metrics, median (ms)':44} "
        f"{s['empty_node']['median_ms']:12.2f} {s['full_node']['median_ms']:12.2f}"
    )
    for label, d in report["dispatch_overhead"].items():
        print(
            f"{'dispatch ns, metrics off vs on: ' + label:44} "
            f"{d['metrics_off_ns']:12.0f} {d['metrics_on_ns']:12.0f}  "
            f"{d['overhead_pct']:+.1f}% (<= 5%)"
        )
    st = report["start_overhead"]
    print(
        f"{'start rate /s, metrics off vs on':44} {st['metrics_off_per_s']:12,.0f} "
        f"{st['metrics_on_per_s']:12,.0f}  {st['overhead_pct']:+.1f}% (<= 5%)"
    )
    write_report(Path(args.json), report)


if __name__ == "__main__":
    main()
