"""Cluster core benchmarks (issue 7 targets) with real node processes on loopback (preset
``local``), driven through ``tests/cluster/harness.py``.

1. Scale: N children (100,000; ``--quick``: 10,000) started from one of 3 nodes with the default
   timeouts: start errors (goal: 0), when the start call returned, and seconds until every
   node's registry holds all of them (goal: <= 5 s), both counted from the moment
   ``hub.start_children`` is called (the node first builds the 100,000 specs, which the
   benchmark reports apart). Also: starts beyond one per child (goal: 0), live nodes declared
   failed meanwhile (a node that starves its event loop misses its probes; goal: 0) and
   ``CHILD_CONFLICT`` events (two copies found; goal: 0).
2. Failover: kill -9 of one of those 3 nodes: seconds to detection (first survivor to declare
   it failed) and until every child runs again (every survivor's registry holds every child,
   none on the dead node; goal: <= detection + 2 s); how many of the dead node's children
   were restarted exactly once, the extra starts, live nodes declared failed and conflicts
   (goal: all, 0, 0, 0).
   Steps 1 and 2 run twice, side by side: with Python's garbage collector thresholds, and with
   ``hub.tune_gc()`` in every node process.
   Then a 4th node joins 3 that hold the N children (``hub.tune_gc()``): seconds until every
   registry shows each child exactly once on its owner in the ring of 4 (no goal is set), the
   starts beyond one per moved child, live nodes declared failed and conflicts (goal: 0 each).
3. Memory per registry entry on a node that does not run the child (goal: <= 600 bytes): a
   fresh 3-node cluster with ``hub.tune_gc()`` (with Python's thresholds n0's full collections,
   as it starts all N children, can stall it long enough to be declared failed now and then:
   the others then run copies of its children, which the reading would count), N children
   that all belong to n0; n1 holds them without running any
   (RSS delta from /proc/self/status VmRSS against the same hub empty), and so does n2, which
   traces allocations from its start (tracemalloc's current traced size, same delta). Both
   are divided by the entries the node holds but does not run. Each reading is the smallest
   of ten taken a second apart (a node holds a decoded snapshot for a few seconds now and
   then). RSS is also read after ``malloc_trim(0)`` (free C-heap memory handed back).
4. Churn: 5 nodes, 800 children, then in turn kill -9 a node, restart it (same name and port),
   a new node joins, a graceful stop, SIGSTOP 3 s, a 2|3 partition for 2 s then heal. For each
   step: seconds from the end of the step (kill, start, stop, SIGCONT, heal) until every child
   runs exactly once on its ring owner and every registry is equal (goal: <= detection + 2 s),
   and the extra starts: ``PROCESS_STARTUPS`` beyond what the step allows, per child (once for
   each child of a node some live node declared dead, once for each child whose ring owner
   changed; goal: 0). The detection period of the goal is the one measured in the kill step.

Times are the nodes' own ``time.monotonic()`` stamps where a node reports the moment (system-
wide on Linux), else this process's clock at the moment a poll (every 0.1 s) saw it.

Usage: python scripts/bench/bench_core.py [--quick] [--children N]
"""

from __future__ import annotations

import argparse
import asyncio
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

from common import write_report  # noqa: E402

from strategies import ConsistentHashing  # noqa: E402
from tests.cluster.harness import Cluster, NodeProc, Observation, on, owners  # noqa: E402

HUB = "orders"
LONG = 600.0  # seconds: only so that a broken run ends


def failed_at(node: NodeProc, name: str, since: int) -> float | None:
    """When ``node`` first declared ``name`` failed (its clock), from event ``since`` on."""
    for e in node.events[since:]:
        if e["ev"] == "member" and e["name"] == name and e["kind"] == "failed":
            return float(e["t"])
    return None


async def reached(nodes: list[NodeProc], marks: list[int], timeout: float) -> float | None:
    """The latest ``reached`` stamp of ``nodes`` (None if one never got there)."""
    try:
        stamps = [
            (await n.wait_for(lambda e: e["ev"] == "reached", since=m, timeout=timeout))["t"]
            for n, m in zip(nodes, marks, strict=True)
        ]
    except AssertionError:
        return None
    return float(max(stamps))


async def started_since(nodes: list[NodeProc], before: dict[str, int]) -> dict[str, int]:
    """Starts per child (``PROCESS_STARTUPS``, summed over ``nodes``) beyond ``before``."""
    total: dict[str, int] = {}
    for node in nodes:
        for cid, count in (await node.startups()).items():
            total[cid] = total.get(cid, 0) + count
    return {c: k - before.get(c, 0) for c, k in total.items() if k > before.get(c, 0)}


def falsely_failed(nodes: list[NodeProc], marks: list[int], dead: tuple[str, ...]) -> int:
    """How often ``nodes`` declared a member failed that was not killed (a node that starved
    its event loop long enough to miss its probes), since ``marks``."""
    return sum(
        1
        for node, mark in zip(nodes, marks, strict=True)
        for e in node.events[mark:]
        if e["ev"] == "member" and e["kind"] == "failed" and e["name"] not in dead
    )


def conflicts(nodes: list[NodeProc], marks: list[int]) -> int:
    """``CHILD_CONFLICT`` events (two copies of a child found) on ``nodes`` since ``marks``."""
    return sum(
        1
        for node, m in zip(nodes, marks, strict=True)
        for e in node.events[m:]
        if e["ev"] == "child_conflict"
    )


async def three_watching(
    cluster: Cluster, n: int, tuned_gc: bool
) -> tuple[list[NodeProc], list[int]]:
    """3 node processes with the hub, each watching for the ``n`` children ``c0``..; returns
    them and their event marks (``reached`` comes after the marks)."""
    nodes = await cluster.start(3, hub=HUB, tuned_gc=tuned_gc)
    await cluster.hub_converged(nodes)
    marks = [len(p.events) for p in nodes]
    for p in nodes:
        await p.command(cmd="watch", count=n, prefix="c")
    return nodes, marks


# -- 1 and 2: scale and failover ---------------------------------------------------------------


async def scale_and_failover(n: int, tuned_gc: bool) -> dict[str, Any]:
    cluster = Cluster()
    out: dict[str, Any] = {"children": n, "gc": "tuned" if tuned_gc else "default"}
    gc = f"[gc {out['gc']}] "
    try:
        nodes, marks = await three_watching(cluster, n, tuned_gc)
        t0 = time.monotonic()
        reply = await nodes[0].command(
            cmd="start", n=n, prefix="c", default_timeout=True, reply_timeout=LONG
        )
        visible = await reached(nodes, marks, LONG)
        called = reply["called"]  # the node built the specs: the hub's part begins
        starts = await started_since(nodes, {})
        out["start"] = {
            "errors": reply["n_errors"],
            "error_examples": reply["errors"][:3],
            "specs_built_s": called - t0,
            "start_call_returned_s": reply["t"] - called,
            "visible_everywhere_s": None if visible is None else visible - called,
            "extra_starts": sum(starts.values()) - len(starts),
            "false_failures": falsely_failed(nodes, marks, dead=()),
            "conflicts": conflicts(nodes, marks),
        }
        print(
            f"{gc}start {n:,} from one of 3 nodes (default timeouts; {called - t0:.2f}s to build "
            f"the specs first): {reply['n_errors']} errors, start_children returned after "
            f"{reply['t'] - called:.2f}s, every registry holds all after "
            + ("never" if visible is None else f"{visible - called:.2f}s")
            + f"; {out['start']['extra_starts']} extra starts, {out['start']['false_failures']}"
            f" live nodes declared failed, {out['start']['conflicts']} conflicts",
            flush=True,
        )
        if visible is None:
            return out

        victim, survivors = nodes[2], nodes[:2]
        orphans = await victim.local()
        before = await started_since(survivors, {})
        marks = [len(p.events) for p in survivors]
        for p in survivors:
            await p.command(cmd="watch", count=n, prefix="c", without=victim.name)
        killed = time.monotonic()
        victim.signal(signal.SIGKILL)
        back = await reached(survivors, marks, LONG)
        detected = [failed_at(p, victim.name, m) for p, m in zip(survivors, marks, strict=True)]
        first = min((t for t in detected if t is not None), default=None)
        restarts = await started_since(survivors, before)
        out["kill"] = {
            "detection_s": None if first is None else first - killed,
            "all_running_again_s": None if back is None else back - killed,
            "orphans": len(orphans),
            "restarted_once": sum(1 for c in orphans if restarts.get(c) == 1),
            "extra_starts": sum(restarts.values()) - len(orphans),
            "false_failures": falsely_failed(survivors, marks, dead=(victim.name,)),
            "conflicts": conflicts(survivors, marks),
        }
        print(
            f"{gc}kill -9 of 1 of 3 holding {n:,}: detected after "
            + ("never" if first is None else f"{first - killed:.2f}s")
            + ", every child running again after "
            + ("never" if back is None else f"{back - killed:.2f}s")
            + f"; {out['kill']['restarted_once']:,} of its {len(orphans):,} children restarted "
            f"exactly once, {out['kill']['extra_starts']} extra starts, "
            f"{out['kill']['false_failures']} live nodes declared failed, "
            f"{out['kill']['conflicts']} conflicts",
            flush=True,
        )
    finally:
        await cluster.close()
    return out


async def join_large(n: int) -> dict[str, Any]:
    """A 4th node joins 3 (``hub.tune_gc()``) that hold ``n`` children: seconds until every
    node's registry shows each child exactly once, on its owner in the ring of 4; the starts
    beyond one per child that moved; live nodes declared failed; conflicts."""
    cluster = Cluster()
    out: dict[str, Any] = {"children": n}
    try:
        nodes, marks = await three_watching(cluster, n, tuned_gc=True)
        await nodes[0].command(
            cmd="start", n=n, prefix="c", default_timeout=True, reply_timeout=LONG
        )
        if await reached(nodes, marks, LONG) is None:
            return out
        before = await started_since(nodes, {})
        marks = [len(p.events) for p in nodes]
        began = time.monotonic()
        joiner = await cluster.add("n3", hub=HUB, tuned_gc=True)
        everyone = [*nodes, joiner]
        marks.append(0)
        ring = [p.name for p in everyone]
        for p in everyone:
            await p.command(cmd="watch", count=n, prefix="c", on=ring)
        settled = await reached(everyone, marks, 120.0)
        owner = ConsistentHashing(nodes=ring)
        moved = sum(1 for i in range(n) if owner.belongs_to(f"c{i}")[0] == joiner.name)
        starts = await started_since(everyone, before)
        out.update(
            settled_s=None if settled is None else settled - began,
            moved=moved,
            extra_starts=sum(starts.values()) - moved,
            false_failures=falsely_failed(everyone, marks, dead=()),
            conflicts=conflicts(everyone, marks),
        )
        print(
            f"a 4th node joins 3 holding {n:,}: every child on its owner after "
            + ("never (120 s)" if settled is None else f"{settled - began:.2f}s")
            + f"; {moved:,} moved, {out['extra_starts']} extra starts, "
            f"{out['false_failures']} live nodes declared failed, {out['conflicts']} conflicts",
            flush=True,
        )
    finally:
        await cluster.close()
    return out


# -- 3: memory per registry entry --------------------------------------------------------------


async def steady_memory(node: NodeProc, window: float = 10.0) -> dict[str, Any]:
    """The node's memory at rest: one reading a second for ``window`` seconds, keeping the
    smallest (traced size when tracing, else RSS). A node decodes and holds large frames for
    a few seconds at a time (snapshots, anti-entropy); a single reading can land on one."""
    key = "traced" if (await node.command(cmd="memory"))["traced"] is not None else "rss"
    readings = []
    for _ in range(max(1, round(window))):
        readings.append(await node.command(cmd="memory"))
        await asyncio.sleep(1.0)
    return min(readings, key=lambda r: r[key])


async def memory_per_entry(n: int) -> dict[str, Any]:
    cluster = Cluster()
    try:
        first, rss_node = await cluster.start(2, hub=HUB, tuned_gc=True)
        traced_node = await cluster.add("n2", hub=HUB, trace_memory=True, tuned_gc=True)
        nodes = [first, rss_node, traced_node]
        await cluster.hub_converged(nodes)
        ring = ConsistentHashing(nodes=[p.name for p in nodes])
        ids: list[str] = []
        i = 0
        while len(ids) < n:  # children that all belong to n0
            batch = [f"m{j}" for j in range(i, i + 4 * n)]
            i += 4 * n
            placed = ring.belongs_to_many(batch)
            ids += [cid for cid in batch if placed[cid][0] == first.name][: n - len(ids)]
        watched = (rss_node, traced_node)
        empty = dict(
            zip(
                (p.name for p in watched),
                await asyncio.gather(*map(steady_memory, watched)),
                strict=True,
            )
        )
        marks = [len(p.events) for p in watched]
        for p in watched:  # by count: 100,000 ids sent to a node would be memory it measures
            await p.command(cmd="watch", total=n)
        reply = await first.command(cmd="start", ids=ids, reply_timeout=LONG)
        assert reply["ok"] == n, reply
        if await reached(list(watched), marks, LONG) is None:
            print(
                f"memory: the replicas never held all {n:,} entries within {LONG:.0f}s", flush=True
            )
            return {"error": f"the replicas never held all {n} entries within {LONG}s"}
        full = dict(
            zip(
                (p.name for p in watched),
                await asyncio.gather(*map(steady_memory, watched)),
                strict=True,
            )
        )
        held = {p.name: n - len(await p.local()) for p in watched}

        def per_entry(node: NodeProc, key: str) -> float | None:
            after, before = full[node.name][key], empty[node.name][key]
            return None if after is None or before is None else (after - before) / held[node.name]

        rss = per_entry(rss_node, "rss")
        trimmed = per_entry(rss_node, "rss_trimmed")
        traced = per_entry(traced_node, "traced")
        out = {
            "entries_held_not_run": held,
            "rss_node": rss_node.name,
            "rss_bytes_per_entry": rss,
            "rss_after_malloc_trim_bytes_per_entry": trimmed,
            "tracemalloc_node": traced_node.name,
            "tracemalloc_bytes_per_entry": traced,
            "rss_of_the_traced_node_bytes_per_entry": per_entry(traced_node, "rss"),
        }
        print(
            f"memory per registry entry held but not run ({n:,} entries): "
            f"RSS {rss:,.0f} B ({rss_node.name}; {trimmed or 0:,.0f} B after malloc_trim), "
            f"tracemalloc {traced:,.0f} B ({traced_node.name})",
            flush=True,
        )
    finally:
        await cluster.close()
    return out


# -- 4: churn ----------------------------------------------------------------------------------


async def until_exact(
    cluster: Cluster, nodes: list[NodeProc], ids: set[str], since: float, timeout: float = 60.0
) -> tuple[float | None, Observation]:
    """Seconds from ``since`` until every child of ``ids`` runs exactly once among ``nodes``
    on its ring owner and every registry says so (None after ``timeout``)."""
    want = owners([p.name for p in nodes], ids)
    while True:
        seen = await cluster.observe(nodes)
        now = time.monotonic()
        if not seen.problems(want):
            return now - since, seen
        if now - since > timeout:
            print(f"    not converged: {seen.describe(want)}", flush=True)
            return None, seen
        await asyncio.sleep(0.1)


#: (running before, {node: [live nodes that declared it dead]}, live names after) -> the
#: children a step may start once each (more starts than that, per child, are extra)
Expected = Any


async def churn(children: int) -> list[dict[str, Any]]:
    cluster = Cluster()
    steps: list[dict[str, Any]] = []
    try:
        nodes = await cluster.start(5, hub=HUB)
        await cluster.hub_converged(nodes)
        reply = await nodes[0].command(cmd="start", n=children, prefix="c")
        assert reply["ok"] == children, reply
        ids = {f"c{i}" for i in range(children)}
        took, seen = await until_exact(cluster, nodes, ids, time.monotonic())
        assert took is not None, "the cluster did not settle before the churn"

        async def step(name: str, act: Any, expected: Expected, watch: list[str]) -> None:
            """Run ``act`` (it returns the moment the fault ended), wait until exact among the
            nodes then running, and count their starts against ``expected``."""
            nonlocal seen
            before_live = cluster.live
            before_starts = await cluster.startups(before_live)
            before = seen.running()
            marks = {p.name: len(p.events) for p in before_live}
            began = time.monotonic()
            ended = await act()
            live = cluster.live
            took, seen = await until_exact(cluster, live, ids, ended)
            declared = {
                dead: [p.name for p in live if failed_at(p, dead, marks.get(p.name, 0))]
                for dead in watch
            }
            detections = [
                t
                for p in live
                for dead in watch
                if (t := failed_at(p, dead, marks.get(p.name, 0))) is not None
            ]
            allowed = expected(before, declared, [p.name for p in live])
            starts = await cluster.new_starts(live, before_starts)
            total = sum(starts.values())
            extra = sum(max(0, n - (cid in allowed)) for cid, n in starts.items())
            record = {
                "step": name,
                "converged_s": took,
                "fault_s": ended - began,
                "detection_s": min(detections) - began if detections else None,
                "starts": total,
                "allowed_starts": len(allowed),
                "extra_starts": extra,
            }
            steps.append(record)
            detected = record["detection_s"]
            print(
                f"  {name:30} exact after "
                + ("never" if took is None else f"{took:5.2f}s")
                + f"; starts {total} (allowed {len(allowed)}, extra {extra})"
                + ("" if detected is None else f"; detected {detected:.2f}s into the step"),
                flush=True,
            )

        def failed_over(before: Any, declared: dict[str, list[str]], _: list[str]) -> set[str]:
            """One start per child of a node that some live node declared dead."""
            return on(before, {dead for dead, by in declared.items() if by})

        def moved(before: Any, _: Any, names: list[str]) -> set[str]:
            """One start per child whose ring owner changed (it moves there)."""
            want = owners(names, before)
            return {cid for cid, where in before.items() if where != [want[cid]]}

        print(f"churn on 5 nodes with {children} children:", flush=True)
        victim = cluster.get("n4")

        async def kill() -> float:
            victim.signal(signal.SIGKILL)
            t = time.monotonic()
            await victim.kill()
            return t

        await step("kill -9", kill, failed_over, [victim.name])

        async def restart() -> float:
            await victim.restart()  # same name and port, a new boot
            return time.monotonic()

        await step("restart (same name and port)", restart, moved, [])

        async def join() -> float:
            await cluster.add(f"n{len(cluster.nodes)}", hub=HUB)
            return time.monotonic()

        await step("join", join, moved, [])
        leaver = cluster.get("n1")

        async def leave() -> float:
            await leaver.command(cmd="leave")
            assert leaver.proc is not None
            await leaver.proc.wait()
            return time.monotonic()

        await step("graceful stop", leave, moved, [])
        sleeper = cluster.get("n2")

        async def pause() -> float:
            sleeper.signal(signal.SIGSTOP)
            await asyncio.sleep(3.0)  # the fault: a 3 s stall
            sleeper.signal(signal.SIGCONT)
            return time.monotonic()

        await step("SIGSTOP 3 s", pause, failed_over, [sleeper.name])
        live = cluster.live
        sides = [[p.name for p in live[: len(live) // 2]], [p.name for p in live[len(live) // 2 :]]]

        async def split() -> float:
            for p in live:
                await p.command(cmd="partition", groups=sides)
            await asyncio.sleep(2.0)  # the fault: a 2 s partition
            for p in live:
                await p.command(cmd="heal")
            return time.monotonic()

        await step(
            f"partition {len(sides[0])}|{len(sides[1])} 2 s, heal",
            split,
            failed_over,
            [p.name for p in live],
        )
    finally:
        await cluster.close()
    return steps


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="10,000 children instead of 100,000")
    parser.add_argument("--children", type=int, default=None)
    parser.add_argument("--churn-children", type=int, default=800)
    parser.add_argument("--json", default=str(ROOT / "scripts/bench/results/core.json"))
    args = parser.parse_args()
    n = args.children or (10_000 if args.quick else 100_000)
    report: dict[str, Any] = {
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "children": n,
    }
    report["scale"] = {
        "default_gc": await scale_and_failover(n, tuned_gc=False),
        "tuned_gc": await scale_and_failover(n, tuned_gc=True),
    }
    report["join"] = await join_large(n)
    report["memory"] = await memory_per_entry(n)
    report["churn"] = await churn(args.churn_children)

    memory = report["memory"]
    rows: list[tuple[str, float | None, float | None]] = []
    for variant, scale in report["scale"].items():
        start, kill = scale.get("start", {}), scale.get("kill", {})
        detection = kill.get("detection_s")
        label = variant.replace("_", " ")
        rows += [
            (f"[{label}] start errors (default timeouts)", start.get("errors"), 0),
            (
                f"[{label}] {n:,} visible in every registry, s",
                start.get("visible_everywhere_s"),
                5.0,
            ),
            (
                f"[{label}] kill -9: every child running again, s",
                kill.get("all_running_again_s"),
                None if detection is None else detection + 2.0,
            ),
        ]
        for phase, figures in (("start", start), ("kill -9", kill)):
            for key, what in (
                ("extra_starts", "extra starts"),
                ("false_failures", "live nodes declared failed"),
                ("conflicts", "conflicts"),
            ):
                rows.append((f"[{label}] {phase}: {what}", figures.get(key), 0))
    join = report["join"]
    rows += [
        ("a 4th node joins: every child on its owner, s", join.get("settled_s"), None),
        ("a 4th node joins: extra starts", join.get("extra_starts"), 0),
        ("a 4th node joins: live nodes declared failed", join.get("false_failures"), 0),
        ("a 4th node joins: conflicts", join.get("conflicts"), 0),
    ]
    rows += [
        ("registry entry (not run here), RSS, B", memory.get("rss_bytes_per_entry"), 600),
        (
            "registry entry (not run here), RSS after malloc_trim, B",
            memory.get("rss_after_malloc_trim_bytes_per_entry"),
            600,
        ),
        (
            "registry entry (not run here), tracemalloc, B",
            memory.get("tracemalloc_bytes_per_entry"),
            600,
        ),
    ]
    churn_detection = next(
        (s["detection_s"] for s in report["churn"] if s["step"] == "kill -9"), None
    )
    for s in report["churn"]:  # goal: one detection period (of the kill step) + 2 s
        limit = None if churn_detection is None else churn_detection + 2.0
        rows.append((f"churn {s['step']}: exact after, s", s["converged_s"], limit))
        rows.append((f"churn {s['step']}: extra starts", s["extra_starts"], 0))
    report["goals"] = {}
    print(f"\n{'measure':54} {'measured':>10} {'goal':>8}  met")
    for name, value, goal in rows:
        met = value is not None and goal is not None and value <= goal
        report["goals"][name] = {"measured": value, "goal": goal, "met": met}
        shown = "never" if value is None else f"{value:,.2f}"
        target = "" if goal is None else f"{goal:,.2f}"
        verdict = "-" if goal is None else "yes" if met else "NO"
        print(f"{name:54} {shown:>10} {target:>8}  {verdict}")
    write_report(Path(args.json), report)


if __name__ == "__main__":
    asyncio.run(main())
