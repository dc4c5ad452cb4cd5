"""Benchmark: HookManager dispatch vs pluggy, blinker, psygnal, pyee and a plain loop.

One event with a data argument is dispatched to N trivial sync handlers (N = 1, 10, 50), then
to 10 async handlers (ours vs a plain awaited loop). Each contender runs ITERATIONS dispatches
per repeat; the repeats are interleaved across contenders and the best (minimum) time per
dispatch is reported, in nanoseconds. Results go to scripts/bench/results/hooks.json.

    .venv/bin/python scripts/bench/bench_hooks.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import blinker  # noqa: E402
import pluggy  # noqa: E402
import psygnal  # noqa: E402
import pyee  # noqa: E402

from hub.hooks import Hook, HookHandler, HookManager  # noqa: E402

RESULTS = ROOT / "scripts" / "bench" / "results" / "hooks.json"
EVENT = Hook.CHILD_STOPPED
DATA = ("child-1", "normal")
LIBRARIES = ("pluggy", "blinker", "psygnal", "pyee")
SYNC_GOAL_VS_PLAIN = 2.5
ASYNC_GOAL_VS_PLAIN = 1.3

Runner = Callable[[int], Awaitable[int]]  # runs n dispatches, returns elapsed ns


def make_sync_handler() -> Callable[[Any], None]:
    def handler(data: Any) -> None:
        return None

    return handler


def make_async_handler() -> Callable[[Any], Awaitable[None]]:
    async def handler(data: Any) -> None:
        return None

    return handler


def timed(loop_body: Callable[[int], None]) -> Runner:
    """Wrap a sync loop ``loop_body(n)`` as a runner."""

    async def run(n: int) -> int:
        start = time.perf_counter_ns()
        loop_body(n)
        return time.perf_counter_ns() - start

    return run


def ours(count: int, make_handler: Callable[[], Callable[[Any], Any]]) -> Runner:
    """Awaited ``dispatch`` to ``count`` handlers made by ``make_handler``."""
    hm = HookManager()
    hm.register(EVENT, [HookHandler(f"h{i}", make_handler()) for i in range(count)])

    async def run(n: int) -> int:
        dispatch = hm.dispatch
        start = time.perf_counter_ns()
        for _ in range(n):
            await dispatch(EVENT, DATA)
        return time.perf_counter_ns() - start

    return run


def plain_sync(count: int) -> Runner:
    handlers = [make_sync_handler() for _ in range(count)]

    def plain(data: Any) -> None:
        for fn in handlers:
            fn(data)

    def body(n: int) -> None:
        for _ in range(n):
            plain(DATA)

    return timed(body)


def pluggy_sync(count: int) -> Runner:
    spec = pluggy.HookspecMarker("bench")
    impl = pluggy.HookimplMarker("bench")

    class Spec:
        @spec
        def on_event(self, data: Any) -> None: ...

    class Plugin:
        @impl
        def on_event(self, data: Any) -> None:
            return None

    pm = pluggy.PluginManager("bench")
    pm.add_hookspecs(Spec)
    for i in range(count):
        pm.register(Plugin(), name=f"p{i}")
    hook = pm.hook.on_event

    def body(n: int) -> None:
        for _ in range(n):
            hook(data=DATA)

    return timed(body)


def blinker_sync(count: int) -> Runner:
    signal = blinker.Signal()
    for _ in range(count):
        signal.connect(make_sync_handler(), weak=False)

    def body(n: int) -> None:
        for _ in range(n):
            signal.send(DATA)

    return timed(body)


def psygnal_sync(count: int) -> Runner:
    class Emitter:
        event = psygnal.Signal(object)

    emitter = Emitter()
    for _ in range(count):
        emitter.event.connect(make_sync_handler())

    def body(n: int) -> None:
        for _ in range(n):
            emitter.event.emit(DATA)

    return timed(body)


def pyee_sync(count: int) -> Runner:
    emitter = pyee.EventEmitter()
    for _ in range(count):
        emitter.on("event", make_sync_handler())

    def body(n: int) -> None:
        for _ in range(n):
            emitter.emit("event", DATA)

    return timed(body)


def plain_async(count: int) -> Runner:
    handlers = [make_async_handler() for _ in range(count)]

    async def plain(data: Any) -> None:
        for fn in handlers:
            await fn(data)

    async def run(n: int) -> int:
        start = time.perf_counter_ns()
        for _ in range(n):
            await plain(DATA)
        return time.perf_counter_ns() - start

    return run


async def measure(runners: dict[str, Runner], iterations: int, repeats: int) -> dict[str, Any]:
    """Best and median ns per dispatch of each runner; repeats interleaved across runners."""
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for run in runners.values():  # warm up (and let the interpreter specialise)
        await run(max(iterations // 10, 100))
    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        for _ in range(repeats):
            for name, run in runners.items():
                samples[name].append(await run(iterations) / iterations)
    finally:
        if gc_was_enabled:
            gc.enable()
    return {
        name: {"best_ns": round(min(values), 1), "median_ns": round(statistics.median(values), 1)}
        for name, values in samples.items()
    }


def iterations_for(count: int, quick: bool) -> int:
    base = 20_000 if quick else 200_000
    return max(base // max(count // 5, 1), 2_000)


async def main(quick: bool) -> dict[str, Any]:
    repeats = 5 if quick else 9
    rows: list[dict[str, Any]] = []
    for count in (1, 10, 50):
        runners = {
            "ours": ours(count, make_sync_handler),
            "pluggy": pluggy_sync(count),
            "blinker": blinker_sync(count),
            "psygnal": psygnal_sync(count),
            "pyee": pyee_sync(count),
            "plain": plain_sync(count),
        }
        result = await measure(runners, iterations_for(count, quick), repeats)
        best = {name: value["best_ns"] for name, value in result.items()}
        fastest_lib = min(LIBRARIES, key=lambda name: best[name])
        rows.append(
            {
                "kind": "sync",
                "handlers": count,
                "ns": result,
                "fastest_library": fastest_lib,
                "ours_vs_fastest_library": best["ours"] / best[fastest_lib],
                "ours_vs_plain": best["ours"] / best["plain"],
                "goal_met": best["ours"] <= best[fastest_lib]
                and best["ours"] <= SYNC_GOAL_VS_PLAIN * best["plain"],
            }
        )
    async_runners = {"ours": ours(10, make_async_handler), "plain": plain_async(10)}
    result = await measure(async_runners, iterations_for(10, quick), repeats)
    ratio = result["ours"]["best_ns"] / result["plain"]["best_ns"]
    rows.append(
        {
            "kind": "async",
            "handlers": 10,
            "ns": result,
            "ours_vs_plain": ratio,
            "goal_met": ratio <= ASYNC_GOAL_VS_PLAIN,
        }
    )
    return {
        "benchmark": "hooks",
        "statistic": f"best of {repeats} repeats, ns per dispatch",
        "quick": quick,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": {name: version(name) for name in LIBRARIES},
        "goals": {
            "sync": f"ours <= fastest library and <= {SYNC_GOAL_VS_PLAIN}x plain loop",
            "async": f"ours <= {ASYNC_GOAL_VS_PLAIN}x plain awaited loop",
        },
        "rows": rows,
    }


def print_table(report: dict[str, Any]) -> None:
    print(f"hooks benchmark ({report['statistic']}; python {report['python']})")
    names = ("ours", *LIBRARIES, "plain")
    header = f"{'handlers':>10}" + "".join(f"{name:>10}" for name in names)
    print(header + f"{'ours/lib':>10}{'ours/plain':>11}  goal")
    for row in report["rows"]:
        label = f"{row['handlers']} {row['kind']}"
        cells = "".join(
            f"{row['ns'][name]['best_ns']:>10.0f}" if name in row["ns"] else f"{'-':>10}"
            for name in names
        )
        vs_lib = row.get("ours_vs_fastest_library")
        lib = f"{vs_lib:>10.2f}" if vs_lib is not None else f"{'-':>10}"
        goal = "met" if row["goal_met"] else "MISSED"
        print(f"{label:>10}{cells}{lib}{row['ours_vs_plain']:>11.2f}  {goal}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short run (fewer iterations)")
    options = parser.parse_args()
    report = asyncio.run(main(options.quick))
    print_table(report)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {RESULTS.relative_to(ROOT)}")
