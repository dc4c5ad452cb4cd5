"""Membership benchmarks with real node processes on loopback.

For each (preset, N): repeated kill -9 runs measure the time from the kill to the first
suspicion anywhere and to "failed" on every survivor; repeated joins measure the time from a new
node listening to "joined" on every member. Idle traffic is the loopback interface's transmitted
bytes per second divided by N over a quiet window: everything on the wire (HTTP and TCP/IP
headers, TCP ACKs) counts, so run it on an otherwise quiet machine.
A soak run checks for false deaths under 5% message loss with both cores saturated.

Times come from the nodes' own ``time.monotonic()`` stamps (system-wide on Linux).

Usage: python scripts/bench/bench_membership.py [--quick] [--runs R] [--n50] [--soak SECONDS]
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import os
import platform
import signal
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from common import pct, write_report  # noqa: E402

from tests.cluster.harness import Cluster  # noqa: E402


async def kill_run(n: int, preset: str) -> tuple[float, float]:
    cluster = Cluster()
    try:
        await cluster.start(n, preset=preset)
        names = {p.name for p in cluster.nodes}
        await cluster.converged(names, timeout=60)
        await asyncio.sleep(1.0)  # settle: let joins finish disseminating
        victim = cluster.nodes[-1]
        marks = [len(p.events) for p in cluster.nodes]
        killed_at = time.monotonic()
        victim.signal(signal.SIGKILL)
        survivors = cluster.nodes[:-1]
        failed = []
        suspected = []
        for node, mark in zip(survivors, marks, strict=False):
            ev = await node.wait_for(
                lambda e: (
                    e["ev"] == "member" and e["name"] == victim.name and e["kind"] == "failed"
                ),
                timeout=60,
                since=mark,
            )
            failed.append(ev["t"])
            first = [
                e["t"]
                for e in node.events[mark:]
                if e["ev"] == "member"
                and e["name"] == victim.name
                and e["kind"] in ("suspected", "failed")
            ]
            suspected.append(min(first))
        return min(suspected) - killed_at, max(failed) - killed_at
    finally:
        await cluster.close()


async def join_run(n: int, preset: str) -> float:
    cluster = Cluster()
    try:
        await cluster.start(n - 1, preset=preset)
        names = {p.name for p in cluster.nodes}
        await cluster.converged(names, timeout=60)
        marks = [len(p.events) for p in cluster.nodes]
        (newcomer,) = await cluster.start(1, preset=preset)
        listening = next(e for e in newcomer.events if e["ev"] == "listening")["t"]
        seen = []
        for node, mark in zip(cluster.nodes[:-1], marks, strict=True):
            ev = await node.wait_for(
                lambda e: (
                    e["ev"] == "member" and e["name"] == newcomer.name and e["kind"] == "joined"
                ),
                timeout=60,
                since=mark,
            )
            seen.append(ev["t"])
        return max(seen) - listening
    finally:
        await cluster.close()


def loopback_bytes() -> int:
    """Bytes sent on the loopback interface so far (TCP/IP headers and ACKs included)."""
    with open("/proc/net/dev") as f:
        for line in f:
            name, _, counters = line.partition(":")
            if name.strip() == "lo":
                return int(counters.split()[8])  # transmit bytes
    raise RuntimeError("no loopback interface in /proc/net/dev")


async def idle_run(n: int, preset: str, seconds: float) -> float:
    cluster = Cluster()
    try:
        await cluster.start(n, preset=preset)
        await cluster.converged({p.name for p in cluster.nodes}, timeout=60)
        await asyncio.sleep(3.0)  # joins disseminated; steady state
        before = loopback_bytes()
        await asyncio.sleep(seconds)
        return (loopback_bytes() - before) / seconds / n
    finally:
        await cluster.close()


def burn(stop_at: float) -> None:
    while time.monotonic() < stop_at:
        pass


async def soak(n: int, seconds: float) -> dict[str, Any]:
    cluster = Cluster()
    burners = []
    try:
        await cluster.start(n, preset="local")
        await cluster.converged({p.name for p in cluster.nodes}, timeout=60)
        for node in cluster.nodes:
            await node.command(cmd="drop", p=0.05)
        stop_at = time.monotonic() + seconds
        burners = [
            multiprocessing.Process(target=burn, args=(stop_at,))
            for _ in range(os.cpu_count() or 2)
        ]
        for b in burners:
            b.start()
        await asyncio.sleep(seconds)
        deaths = [
            (node.name, e["name"])
            for node in cluster.nodes
            for e in node.events
            if e["ev"] == "member" and e["kind"] == "failed"
        ]
        suspicions = sum(
            1
            for node in cluster.nodes
            for e in node.events
            if e["ev"] == "member" and e["kind"] == "suspected"
        )
        return {
            "nodes": n,
            "seconds": seconds,
            "drop": 0.05,
            "cores_saturated": len(burners),
            "false_deaths": len(deaths),
            "suspicions_refuted": suspicions,
        }
    finally:
        for b in burners:
            b.join()
        await cluster.close()


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": pct(values, 0.5),
        "p99": pct(values, 0.99),
        "min": min(values),
        "max": max(values),
        "runs": len(values),
    }


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--n50", action="store_true", help="also N = 50")
    parser.add_argument("--soak", type=float, default=300.0, help="soak seconds (0 to skip)")
    parser.add_argument("--idle", type=float, default=20.0, help="idle window seconds")
    parser.add_argument("--json", default=str(ROOT / "scripts/bench/results/membership.json"))
    args = parser.parse_args()
    runs, idle_s, soak_s = args.runs, args.idle, args.soak
    if args.quick:
        runs, idle_s, soak_s = 2, 5.0, min(soak_s, 20.0)
    sizes = [3, 5, 10] + ([50] if args.n50 else [])
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "runs": runs,
        "kill": {},
        "join": {},
        "idle": {},
    }
    rows = []
    for preset in ("local", "lan"):
        for n in sizes:
            kills = [await kill_run(n, preset) for _ in range(runs)]
            k = {
                "first_suspicion": summary([a for a, _ in kills]),
                "dead_everywhere": summary([b for _, b in kills]),
            }
            report["kill"][f"{preset}/{n}"] = k
            joins = [await join_run(n, preset) for _ in range(runs)]
            report["join"][f"{preset}/{n}"] = summary(joins)
            rows.append((preset, n, k["first_suspicion"], k["dead_everywhere"], summary(joins)))
            print(
                f"{preset:5} N={n:<3} suspicion p50 {k['first_suspicion']['p50']:.2f}s "
                f"p99 {k['first_suspicion']['p99']:.2f}s | dead everywhere p50 "
                f"{k['dead_everywhere']['p50']:.2f}s p99 {k['dead_everywhere']['p99']:.2f}s | "
                f"join visible p50 {summary(joins)['p50']:.2f}s p99 {summary(joins)['p99']:.2f}s",
                flush=True,
            )
    for preset in ("lan", "local"):
        rate = await idle_run(10, preset, idle_s)
        report["idle"][f"{preset}/10"] = rate
        print(f"idle traffic {preset} N=10: {rate:.0f} bytes/s on the wire per node", flush=True)
    if soak_s:
        report["soak"] = await soak(5, soak_s)
        print(f"soak: {report['soak']}", flush=True)
    goals = {
        "local N=5 dead everywhere p50 <= 2.0 s": report["kill"]["local/5"]["dead_everywhere"][
            "p50"
        ],
        "lan N=10 dead everywhere p50 <= 6.5 s": report["kill"]["lan/10"]["dead_everywhere"]["p50"],
        "local N=10 join visible p50 <= 0.7 s": report["join"]["local/10"]["p50"],
        "lan N=10 idle <= 1500 bytes/s per node": report["idle"]["lan/10"],
    }
    limits = [2.0, 6.5, 0.7, 1500]
    report["goals"] = {}
    print("\ngoal                                           measured   met")
    for (name, value), limit in zip(goals.items(), limits, strict=True):
        report["goals"][name] = {"measured": value, "met": value <= limit}
        print(f"{name:46} {value:9.2f}   {'yes' if value <= limit else 'NO'}")
    if "soak" in report:
        ok = report["soak"]["false_deaths"] == 0
        report["goals"]["zero false deaths (soak)"] = {
            "measured": report["soak"]["false_deaths"],
            "met": ok,
        }
        deaths = report["soak"]["false_deaths"]
        print(f"{'zero false deaths in soak':46} {deaths:9d}   {'yes' if ok else 'NO'}")
    write_report(Path(args.json), report)


if __name__ == "__main__":
    asyncio.run(main())
