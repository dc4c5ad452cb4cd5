"""Distributed hub benchmarks with real node processes on loopback (preset ``local``).

1. Start 10,000 children from one of 3 nodes; time until every node's registry holds all of
   them (children/s), against the single-node start rate of the same children in this run.
2. kill -9 one node holding ~1/3 of them: time to detection (first "failed") and until every
   child runs again (every survivor's registry holds all of them, none on the dead node).
3. A fourth node joins: time until it has received every child it owns (ColdSwap migration).
4. Remote ``call`` round trip (p50/p99) against a raw aiohttp websocket echo between two
   processes, and remote ``cast`` throughput against raw pipelined websocket frames.

Times are the nodes' own ``time.monotonic()`` stamps (system-wide on Linux).

Usage: python scripts/bench/bench_cluster.py [--quick] [--children N]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

import aiohttp  # noqa: E402
import msgpack  # noqa: E402
from common import pct, write_report  # noqa: E402

from hub import ChildSpec, Hub  # noqa: E402
from hub.cluster.node import Node  # noqa: E402
from strategies import ConsistentHashing  # noqa: E402
from tests.cluster.harness import COOKIE, Cluster  # noqa: E402

ECHO_SERVER = """
import asyncio, sys
from aiohttp import web
async def ws(request):
    sock = web.WebSocketResponse(max_msg_size=16 * 1024 * 1024)
    await sock.prepare(request)
    count = 0
    async for msg in sock:
        if msg.data[:1] == b"S":
            await sock.send_bytes(str(count).encode())
        elif msg.data[:1] == b"E":
            await sock.send_bytes(msg.data)
        else:
            count += 1
    return sock
async def main():
    app = web.Application(); app.router.add_get("/ws", ws)
    runner = web.AppRunner(app); await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0); await site.start()
    print(runner.addresses[0][1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""


async def single_node_rate(n: int) -> float:
    async with Hub("bench", node="solo", host=None) as hub:
        specs = [ChildSpec(f"c{i}", "tests.procs:Counter", args=[i]) for i in range(n)]
        t0 = time.perf_counter()
        result = await hub.start_children(specs, timeout=60)
        elapsed = time.perf_counter() - t0
        assert len(result.started) == n
    return n / elapsed


async def cluster_runs(n: int) -> dict[str, Any]:
    cluster = Cluster()
    out: dict[str, Any] = {}
    try:
        nodes = await cluster.start(3, hub="orders")
        await cluster.converged({p.name for p in nodes})
        marks = [len(p.events) for p in nodes]
        for p in nodes:
            await p.command(cmd="watch", count=n)
        t0 = time.monotonic()
        reply = await nodes[0].command(cmd="start", n=n, prefix="c")
        assert reply["ok"] == n, reply
        reached = [
            await p.wait_for(lambda e: e["ev"] == "reached", since=m, timeout=120)
            for p, m in zip(nodes, marks, strict=True)
        ]
        visible = max(e["t"] for e in reached) - t0
        out["start"] = {
            "children": n,
            "visible_everywhere_s": visible,
            "children_per_s": n / visible,
            "start_call_returned_s": reply["t"] - t0,
        }
        print(
            f"start {n} from one of 3 nodes: visible everywhere in {visible:.3f}s "
            f"({n / visible:,.0f} children/s)",
            flush=True,
        )

        # kill -9
        victim, survivors = nodes[2], nodes[:2]
        marks = [len(p.events) for p in survivors]
        for p in survivors:
            await p.command(cmd="watch", count=n, without=victim.name)
        killed = time.monotonic()
        victim.signal(signal.SIGKILL)
        failed = [
            await p.wait_for(
                lambda e: (
                    e["ev"] == "member" and e["name"] == victim.name and e["kind"] == "failed"
                ),
                since=m,
                timeout=60,
            )
            for p, m in zip(survivors, marks, strict=True)
        ]
        back = [
            await p.wait_for(lambda e: e["ev"] == "reached", since=m, timeout=120)
            for p, m in zip(survivors, marks, strict=True)
        ]
        detect = min(e["t"] for e in failed) - killed
        rerun = max(e["t"] for e in back) - killed
        out["kill"] = {
            "detection_s": detect,
            "all_running_again_s": rerun,
            "restart_after_detection_s": rerun - detect,
        }
        print(
            f"kill -9: detected after {detect:.2f}s, every child running again after "
            f"{rerun:.2f}s ({rerun - detect:.2f}s after detection)",
            flush=True,
        )

        # join
        (newcomer,) = await cluster.start(1, hub="orders")
        listening = next(e for e in newcomer.events if e["ev"] == "listening")["t"]
        ring = ConsistentHashing(nodes=[p.name for p in (*survivors, newcomer)])
        share = sum(1 for i in range(n) if ring.belongs_to(f"c{i}")[0] == newcomer.name)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 120
        while sum(e["n"] for e in newcomer.events if e["ev"] == "migrated") < share:
            if loop.time() > deadline:
                raise AssertionError("migration did not complete")
            await asyncio.sleep(0.01)
        done = max(e["t"] for e in newcomer.events if e["ev"] == "migrated")
        out["join"] = {"migrated_children": share, "migration_done_s": done - listening}
        print(
            f"join: {share} children migrated to the newcomer within {done - listening:.2f}s "
            f"of it listening",
            flush=True,
        )
    finally:
        await cluster.close()
    return out


async def messaging(calls: int, casts: int) -> dict[str, Any]:
    cluster = Cluster()
    echo = await asyncio.create_subprocess_exec(
        sys.executable, "-c", ECHO_SERVER, stdout=asyncio.subprocess.PIPE
    )
    try:
        (remote,) = await cluster.start(1, hub="orders")
        node = await Node("bench", cookie=COOKIE, preset="local", seeds=[remote.address]).start()
        hub = await Hub("orders", endpoint=node).start()
        while remote.name not in hub.nodes():  # noqa: ASYNC110 - a poll with the caller's bound
            await asyncio.sleep(0.01)
        ring = ConsistentHashing(nodes=[remote.name, "bench"])
        cid = next(f"t{i}" for i in range(1000) if ring.belongs_to(f"t{i}")[0] == remote.name)
        await hub.start_children([ChildSpec(cid, "tests.procs:Counter", args=[0])])
        for _ in range(200):  # warm up
            await hub.call(cid, "get")
        rtts = []
        for _ in range(calls):
            t0 = time.perf_counter()
            await hub.call(cid, "get")
            rtts.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for _ in range(casts):
            await hub.cast(cid, {"by": 1})
        total = await hub.call(cid, "get", timeout=60)
        cast_rate = casts / (time.perf_counter() - t0)
        assert total == casts, total
        await hub.stop()
        await node.stop()

        assert echo.stdout is not None
        port = int(await echo.stdout.readline())
        raw_rtts = []
        async with (
            aiohttp.ClientSession() as session,
            session.ws_connect(f"http://127.0.0.1:{port}/ws") as ws,
        ):
            frame = msgpack.packb([1, 1, "orders", "call", ["c", "get", 5.0]])
            for i in range(200 + calls):
                t0 = time.perf_counter()
                await ws.send_bytes(b"E" + frame)
                await ws.receive()
                if i >= 200:
                    raw_rtts.append(time.perf_counter() - t0)
            cast_frame = msgpack.packb([0, 0, "orders", "cast", ["c", {"by": 1}]])
            t0 = time.perf_counter()
            for _ in range(casts):
                await ws.send_bytes(b"C" + cast_frame)
            await ws.send_bytes(b"S")
            count = int((await ws.receive()).data)
            raw_rate = casts / (time.perf_counter() - t0)
            assert count == casts
    finally:
        echo.kill()
        await echo.wait()
        await cluster.close()
    ours50, raw50 = statistics.median(rtts), statistics.median(raw_rtts)
    result = {
        "call_rtt_ms": {"p50": ours50 * 1e3, "p99": pct(rtts, 0.99) * 1e3},
        "raw_ws_echo_rtt_ms": {"p50": raw50 * 1e3, "p99": pct(raw_rtts, 0.99) * 1e3},
        "call_ratio_p50": ours50 / raw50,
        "cast_per_s": cast_rate,
        "raw_pipelined_ws_per_s": raw_rate,
        "cast_ratio": cast_rate / raw_rate,
    }
    print(
        f"remote call p50 {ours50 * 1e3:.3f} ms p99 {pct(rtts, 0.99) * 1e3:.3f} ms vs raw "
        f"websocket echo p50 {raw50 * 1e3:.3f} ms: {ours50 / raw50:.2f}x (goal <= 2x)",
        flush=True,
    )
    print(
        f"remote cast {cast_rate:,.0f}/s vs raw pipelined websocket {raw_rate:,.0f}/s: "
        f"{cast_rate / raw_rate:.2f}x (goal >= 0.5x)",
        flush=True,
    )
    return result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--children", type=int, default=10_000)
    parser.add_argument("--json", default=str(ROOT / "scripts/bench/results/cluster.json"))
    args = parser.parse_args()
    n = 2_000 if args.quick else args.children
    calls, casts = (500, 5_000) if args.quick else (3_000, 50_000)
    report: dict[str, Any] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    solo = await single_node_rate(n)
    report["single_node_start_per_s"] = solo
    print(f"single-node start rate: {solo:,.0f} children/s", flush=True)
    report.update(await cluster_runs(n))
    report["start"]["ratio_to_single_node"] = report["start"]["children_per_s"] / solo
    report["messaging"] = await messaging(calls, casts)
    goals = {
        f"{n} children visible cluster-wide <= 1.0 s": (
            report["start"]["visible_everywhere_s"],
            1.0,
        ),
        "every child running again <= 3 s after kill -9": (
            report["kill"]["all_running_again_s"],
            3.0,
        ),
        "remote call p50 <= 2x raw websocket echo": (report["messaging"]["call_ratio_p50"], 2.0),
    }
    report["goals"] = {}
    print("\ngoal                                                measured   met")
    for name, (value, limit) in goals.items():
        report["goals"][name] = {"measured": value, "met": value <= limit}
        print(f"{name:50} {value:9.2f}   {'yes' if value <= limit else 'NO'}")
    cast_ok = report["messaging"]["cast_ratio"] >= 0.5
    report["goals"]["remote cast >= 0.5x raw pipelined websocket"] = {
        "measured": report["messaging"]["cast_ratio"],
        "met": cast_ok,
    }
    print(
        f"{'remote cast >= 0.5x raw pipelined websocket':50} "
        f"{report['messaging']['cast_ratio']:9.2f}   {'yes' if cast_ok else 'NO'}"
    )
    write_report(Path(args.json), report)


if __name__ == "__main__":
    asyncio.run(main())
