"""processhub multi-node demo (``scripts/demo``; the single-node one is ``scripts/demo --local``).

Starts a cluster of node processes on loopback (each one is ``processhub node ... --app
scripts.demo_app``, preset ``local``, a random cookie in a 0600 file), starts counter children
from one node, casts to them from another and reads them back from a third, kills a node with
SIGKILL and measures the time until every child runs again exactly once, adds a node and reports
the migrations, then stops everything cleanly. Hook events from the nodes are printed as they
happen (sampled). Every step checks invariants; the demo exits 1 if one fails.

The controller (this process) is not a cluster member: it drives each node over the node's
stdin and reads JSON lines from its stdout (see ``scripts/demo_app.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter as Tally
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import IO, Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from strategies import ConsistentHashing

ROOT = Path(__file__).resolve().parent.parent

HUB = "demo"
PREFIX = "counter-"


class DemoFailed(Exception):
    """A step could not complete (a timeout, a node that died, a refused command)."""


class NodeProc:
    """One ``processhub node`` process and its JSON-lines control channel."""

    def __init__(self, demo: Demo, name: str) -> None:
        self.demo = demo
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.dashboard = ""  # the URL the node printed
        self.ready = asyncio.Event()
        self.listening = asyncio.Event()
        self.expect_exit = False
        self.lines: list[str] = []  # non-JSON output of the node (the CLI's own lines)
        self._pending: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._ids = iter(range(1, 1 << 62))
        self._reader: asyncio.Task[None] | None = None
        self._log: IO[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.demo.workdir / f"{self.name}.log"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def start(self, seeds: list[str]) -> None:
        cmd = [
            sys.executable,
            "-m",
            "hub",
            "node",
            "--name",
            self.name,
            "--host",
            "127.0.0.1",
            "--port",
            "0",
            "--cookie-file",
            str(self.demo.cookie_file),
            "--hub",
            HUB,
            "--app",
            "scripts.demo_app",
            "--app-dir",
            str(ROOT),
            "--preset",
            "local",
            "--reconcile-interval",
            "1",
            "--log-level",
            "WARNING",
        ]
        if seeds:
            cmd += ["--seeds", ",".join(seeds)]
        self._log = self.log_path.open("wb")
        self.proc = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=self._log,
            start_new_session=True,  # Ctrl-C reaches the controller only; it stops the nodes
            limit=1 << 22,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            text = line.decode(errors="replace").strip()
            if not text.startswith("{"):
                self.lines.append(text)
                if text.startswith("listening on "):
                    self.port = int(text.split()[2].rpartition(":")[2])
                    self.listening.set()
                elif text.startswith("dashboard on "):
                    self.dashboard = text.removeprefix("dashboard on ")
                continue
            event = json.loads(text)
            kind = event.get("ev")
            if kind == "reply":
                future = self._pending.pop(event["id"], None)
                if future is not None and not future.done():
                    future.set_result(event)
            elif kind == "hook":
                self.demo.on_hook(self.name, event)
            elif kind == "ready":
                self.ready.set()
        await self.proc.wait()
        for future in self._pending.values():
            if not future.done():
                future.set_exception(DemoFailed(f"{self.name} exited"))
        self._pending.clear()
        if not self.expect_exit:
            self.demo.node_died(self)

    async def wait_ready(self, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await self.ready.wait()
        except TimeoutError:
            raise DemoFailed(f"{self.name} did not start within {timeout}s") from None

    async def request(self, cmd: str, timeout: float = 30.0, **args: Any) -> dict[str, Any]:
        if not self.running or self.proc is None or self.proc.stdin is None:
            raise DemoFailed(f"{self.name} is not running")
        rid = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        line = json.dumps({"id": rid, "cmd": cmd, "args": args}) + "\n"
        try:
            self.proc.stdin.write(line.encode())
            await self.proc.stdin.drain()
            async with asyncio.timeout(timeout):
                reply = await future
        except TimeoutError:
            raise DemoFailed(f"{self.name} did not answer {cmd!r} within {timeout}s") from None
        except (ConnectionError, BrokenPipeError):
            raise DemoFailed(f"{self.name}: control channel closed") from None
        finally:
            self._pending.pop(rid, None)
        if not reply["ok"]:
            raise DemoFailed(f"{self.name}: {cmd} failed: {reply['error']}")
        return reply

    def kill(self) -> None:
        self.expect_exit = True
        if self.running:
            assert self.proc is not None
            self.proc.kill()

    async def terminate(self, timeout: float) -> int | None:
        """SIGTERM (graceful stop); the exit code, or None if it did not exit in time."""
        self.expect_exit = True
        if self.proc is None:
            return None
        if self.running:
            self.proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(timeout):
                return await self.proc.wait()
        except TimeoutError:
            return None

    async def close(self) -> None:
        self.kill()
        if self.proc is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(5):
                    await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._log is not None:
            self._log.close()


class LiveView:
    """A table of the nodes that redraws itself in place (with ``rich``, on a terminal); on
    anything else ``update`` returns False and the caller prints lines instead."""

    def __init__(self, title: str) -> None:
        self.title = title
        self._live: Any = None
        if sys.stdout.isatty():
            try:
                from rich.live import Live
            except ImportError:
                return
            self._live = Live(refresh_per_second=8, transient=False)

    def __enter__(self) -> LiveView:
        if self._live is not None:
            self._live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._live is not None:
            self._live.__exit__(*exc)

    def update(
        self, views: dict[str, dict[str, Any]], dead: str, elapsed: float, done: bool = False
    ) -> bool:
        if self._live is None:
            return False
        from rich.table import Table

        table = Table(title=f"{self.title}: +{elapsed:.2f}s" + ("  (converged)" * done))
        for column in ("node", "hub members", "runs here", "registry lists", "misplaced"):
            table.add_column(column, justify="right" if column != "node" else "left")
        for name, view in sorted(views.items()):
            members = ",".join(view["members"])
            if dead and dead in view["members"]:
                members += f"  (still sees {dead})"
            table.add_row(
                name, members, str(view["local"]), str(view["listed"]), str(view["misplaced"])
            )
        self._live.update(table)
        return True


class Demo:
    def __init__(self, nodes: int, children: int, workdir: Path) -> None:
        self.n_nodes = nodes
        self.n_children = children
        self.workdir = workdir
        self.cookie_file = workdir / "cookie"
        self.nodes: dict[str, NodeProc] = {}
        self.failures: list[str] = []
        self.ids = [f"{PREFIX}{i}" for i in range(children)]
        self.start_of = {f"{PREFIX}{i}": i for i in range(children)}
        self.expected: dict[str, int] = {}  # child id -> its counter value, if all is well
        self.known_pid: dict[str, str] = {}
        self.hook_log: list[tuple[float, str, str, dict[str, Any]]] = []
        self.phase = ""
        self.phase_printed: Tally[str] = Tally()
        self.facts: list[tuple[str, str]] = []
        self.t0 = time.monotonic()

    # -- output ----------------------------------------------------------------------------

    def step(self, text: str) -> None:
        self.phase = text
        self.phase_printed.clear()
        print(f"\n[{time.monotonic() - self.t0:5.1f}s] {text}", flush=True)

    def check(self, what: str, ok: bool, detail: str = "") -> bool:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}{'' if ok or not detail else ': ' + detail}")
        if not ok:
            self.failures.append(what)
        return ok

    def on_hook(self, node: str, event: dict[str, Any]) -> None:
        hook = event["hook"]
        self.hook_log.append((event["t"], node, hook, event))
        self.phase_printed[hook] += 1
        seen = self.phase_printed[hook]
        if seen <= 2 or seen % 25 == 0:
            more = f" (#{event['seq']} on this node)" if event["seq"] > 1 else ""
            print(f"    hook {node:<4} {hook:<27} {event['text']}{more}", flush=True)

    def node_died(self, node: NodeProc) -> None:
        code = node.proc.returncode if node.proc is not None else None
        print(f"  !! node {node.name} exited unexpectedly (code {code}); log: {node.log_path}")
        self.failures.append(f"node {node.name} exited unexpectedly")

    # -- helpers ---------------------------------------------------------------------------

    def live(self) -> list[NodeProc]:
        return [n for n in self.nodes.values() if n.running and not n.expect_exit]

    async def wait_until(
        self, what: str, probe: Callable[[], Awaitable[bool]], timeout: float, every: float = 0.05
    ) -> float:
        """Poll ``probe`` until it holds; returns the seconds it took. Fails after ``timeout``."""
        t0 = time.monotonic()
        while not await probe():
            if time.monotonic() - t0 > timeout:
                raise DemoFailed(f"{what}: not reached within {timeout}s")
            await asyncio.sleep(every)
        return time.monotonic() - t0

    async def census(self, nodes: list[NodeProc]) -> dict[str, dict[str, Any]]:
        replies = await asyncio.gather(*(n.request("census", timeout=5) for n in nodes))
        return {n.name: r for n, r in zip(nodes, replies, strict=True)}

    def exact(self, census: dict[str, dict[str, Any]], names: list[str]) -> bool:
        """Every node sees ``names`` as the hub's members, lists every child exactly once on
        one of them, and all registries are identical (same digest of ids and pids)."""
        n = self.n_children
        views = list(census.values())
        return (
            all(v["members"] == names for v in views)
            and all(v["listed"] == n and v["copies"] == n for v in views)
            and all(v["duplicated"] == 0 and v["off_live"] == 0 for v in views)
            and len({v["digest"] for v in views}) == 1
            and sum(v["local"] for v in views) == n
        )

    async def registries(self) -> dict[str, dict[str, Any]]:
        live = self.live()
        replies = await asyncio.gather(*(n.request("registry", timeout=10) for n in live))
        return {n.name: r for n, r in zip(live, replies, strict=True)}

    def check_placement(self, regs: dict[str, dict[str, Any]]) -> dict[str, str]:
        """Invariants of the registries; returns child id -> node."""
        names = sorted(regs)
        views = [r["global"] for r in regs.values()]
        self.check(f"the {len(names)} registries are identical", all(v == views[0] for v in views))
        glob = views[0]
        runs: dict[str, list[str]] = {}
        for name, reg in regs.items():
            for cid in reg["local"]:
                runs.setdefault(cid, []).append(name)
        missing = [c for c in self.ids if c not in runs]
        doubled = {c: ns for c, ns in runs.items() if len(ns) > 1}
        self.check(
            f"every one of the {self.n_children} children runs exactly once",
            not missing and not doubled and len(runs) == self.n_children,
            f"missing {missing[:5]} ({len(missing)}), duplicated {list(doubled.items())[:5]}",
        )
        self.check(
            "the registry says where each child runs",
            all(sorted(n for n, _ in glob.get(c, [])) == sorted(runs.get(c, [])) for c in self.ids),
        )
        ring = ConsistentHashing(nodes=names)
        wrong = [c for c in self.ids if runs.get(c, [None])[0] != ring.belongs_to(c)[0]]
        self.check(
            f"each child runs on its ring owner among {', '.join(names)}",
            not wrong,
            f"{len(wrong)} misplaced, e.g. {wrong[:3]}",
        )
        return {c: ns[0] for c, ns in runs.items()}

    def note_pids(self, regs: dict[str, dict[str, Any]]) -> set[str]:
        """Children whose pid changed since the last look: a restart or a cold migration
        started them from their spec again, so their expected value is their start value."""
        glob = next(iter(regs.values()))["global"]
        changed = set()
        for cid in self.ids:
            pid = glob[cid][0][1] if glob.get(cid) else ""
            if cid in self.known_pid and self.known_pid[cid] != pid:
                changed.add(cid)
                self.expected[cid] = self.start_of[cid]  # ColdSwap: fresh state from the spec
            self.known_pid[cid] = pid
        return changed

    async def cast_all(self, via: NodeProc, by: int) -> None:
        reply = await via.request("cast", timeout=60, ids=self.ids, by=by)
        for cid in self.ids:
            self.expected[cid] += by
        self.check(
            f"{via.name} cast {{'by': {by}}} to all {self.n_children} children",
            reply["failed_count"] == 0,
            f"{reply['failed_count']} failed, e.g. {reply['failed']}",
        )

    async def check_values(self, via: NodeProc, what: str) -> None:
        """Call every child from ``via``; a value below the expected one is retried briefly
        (a cast may still be on its way), anything else is final."""
        todo = list(self.ids)
        got: dict[str, Any] = {}
        deadline = time.monotonic() + 3.0
        while todo:
            reply = await via.request("values", timeout=60, ids=todo)
            got.update(zip(todo, reply["values"], strict=True))
            todo = [
                c
                for c in todo
                if (isinstance(got[c], int) and got[c] < self.expected[c])
                or isinstance(got[c], str)
            ]
            if not todo or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.05)
        wrong = {c: (got[c], self.expected[c]) for c in self.ids if got[c] != self.expected[c]}
        self.check(
            f"{via.name} called all {self.n_children} children: {what}",
            not wrong,
            f"{len(wrong)} wrong (got, expected), e.g. {list(wrong.items())[:3]}",
        )

    def table(self, regs: dict[str, dict[str, Any]], title: str) -> None:
        print(f"  {title}")
        print(f"    {'NODE':<6}{'RUNS':>6}  {'REGISTRY':>8}  BAR")
        scale = max(1, self.n_children // max(1, len(regs)) // 40)
        for name, reg in sorted(regs.items()):
            runs = len(reg["local"])
            print(f"    {name:<6}{runs:>6}  {len(reg['global']):>8}  {'#' * (runs // scale)}")
        for name in sorted(set(self.nodes) - set(regs)):
            print(f"    {name:<6}{'-':>6}  {'-':>8}  (killed)")

    def hooks_since(self, t: float, hook: str, nodes: set[str] | None = None) -> list[Any]:
        return [
            (ts, node, ev)
            for ts, node, h, ev in self.hook_log
            if ts >= t and h == hook and (nodes is None or node in nodes)
        ]

    # -- the story -------------------------------------------------------------------------

    async def run(self, keep: bool) -> None:
        t_all = time.monotonic()
        self.step(f"1. start {self.n_nodes} node processes (processhub node, preset local)")
        seed = self.nodes["n0"] = NodeProc(self, "n0")
        await seed.start([])
        await seed.wait_ready(30)
        others = [NodeProc(self, f"n{i}") for i in range(1, self.n_nodes)]
        for node in others:
            self.nodes[node.name] = node
        await asyncio.gather(*(n.start([seed.address]) for n in others))
        await asyncio.gather(*(n.wait_ready(30) for n in others))
        for node in self.nodes.values():
            assert node.proc is not None
            print(f"  {node.name}: pid {node.proc.pid}, listening on {node.address}")
        print(f"  live dashboard (any node serves one): {seed.dashboard}", flush=True)
        names = sorted(self.nodes)

        async def formed() -> bool:
            views = await self.census(self.live())
            return all(v["members"] == names for v in views.values())

        await self.wait_until("cluster formation", formed, 30)
        took = time.monotonic() - t_all
        self.facts.append(
            ("cluster formed", f"{self.n_nodes} node processes up and joined in {took:.1f} s")
        )
        print(f"  every node's hub sees {', '.join(names)} ({took:.2f} s after the first spawn)")

        # -- 2 ------------------------------------------------------------------------------
        self.step(f"2. start {self.n_children} counter children from n0 (routed to ring owners)")
        t = time.monotonic()
        reply = await seed.request("start", timeout=60, prefix=PREFIX, n=self.n_children)
        self.check(
            f"start_children: {reply['started']} started in {reply['ms']:.0f} ms",
            reply["status"] == "ok" and reply["started"] == self.n_children,
            f"{reply['error_count']} errors, e.g. {reply['errors']}",
        )

        async def everywhere() -> bool:
            return self.exact(await self.census(self.live()), names)

        await self.wait_until("registries in sync", everywhere, 20, every=0.02)
        took = time.monotonic() - t
        print(f"  every registry lists each child once, identical on all nodes, {took:.2f} s")
        self.facts.append(
            ("children started", f"{self.n_children} visible everywhere in {took:.2f} s")
        )
        regs = await self.registries()
        self.check_placement(regs)
        self.table(regs, "children per node:")
        self.expected = dict(self.start_of)
        self.note_pids(regs)

        # -- 3 ------------------------------------------------------------------------------
        victim = self.nodes[names[-1]]  # killed in step 4; the reader must survive it
        caster = self.nodes["n1"]
        reader = self.nodes["n2" if self.n_nodes > 3 else "n0"]
        self.step(
            f"3. cast to every child from {caster.name}, read back with calls from {reader.name}"
        )
        await self.cast_all(caster, 1)
        await self.cast_all(caster, 1)
        await self.check_values(reader, "each holds start + 2")

        # -- 4 ------------------------------------------------------------------------------
        survivors = [n for n in self.live() if n is not victim]
        lost = set(regs[victim.name]["local"])
        self.step(f"4. kill -9 {victim.name} ({len(lost)} children on it)")
        victim.kill()
        t_kill = time.monotonic()
        alive_names = sorted(n.name for n in survivors)
        last_line = ""
        last_print = 0.0
        with LiveView(f"failover after kill -9 {victim.name}") as live:
            while True:
                views = await self.census(survivors)
                now = time.monotonic()
                if self.exact(views, alive_names):
                    t_done = now
                    live.update(views, victim.name, now - t_kill, done=True)
                    break
                if not live.update(views, victim.name, now - t_kill):
                    line = self.failover_line(views, victim.name)
                    if (line != last_line and now - last_print > 0.1) or now - last_print > 0.5:
                        print(f"  +{now - t_kill:5.2f}s  {line}", flush=True)
                        last_line, last_print = line, now
                if now - t_kill > 20:
                    raise DemoFailed(f"children of {victim.name} not running again within 20 s")
                await asyncio.sleep(0.02)
        views = await self.census(survivors)
        print(f"  +{t_done - t_kill:5.2f}s  {self.failover_line(views, victim.name)}")
        leaves = self.hooks_since(t_kill, "pre_cluster_leave")
        seen = [ts for ts, _, ev in leaves if ev["text"] == victim.name]
        detect = (min(seen) - t_kill) if seen else float("nan")
        recover = t_done - t_kill
        print(
            f"  detected by the survivors after {detect:.2f} s; every child running again "
            f"exactly once after {recover:.2f} s ({recover - detect:.2f} s after detection)"
        )
        self.facts.append(
            (
                f"kill -9 {victim.name}",
                f"{len(lost)} children lost: detected after {detect:.2f} s, all "
                f"{self.n_children} running exactly once after {recover:.2f} s",
            )
        )
        regs = await self.registries()
        self.check_placement(regs)
        self.table(regs, "children per node:")
        changed = self.note_pids(regs)
        self.check(
            f"exactly the {len(lost)} children of {victim.name} got new pids",
            changed == lost,
            f"{len(changed - lost)} others restarted, {len(lost - changed)} not",
        )
        starts: Tally[str] = Tally()
        for reg in regs.values():
            starts.update(reg["starts"])
        self.check(
            "each was started exactly once on the survivors (no child started twice)",
            all(starts[c] == 1 for c in self.ids),
            f"{[c for c in self.ids if starts[c] != 1][:5]}",
        )
        await self.check_values(reader, "survivors' children kept start + 2, restarted ones start")

        # -- 5 ------------------------------------------------------------------------------
        newcomer = self.nodes[f"n{self.n_nodes}"] = NodeProc(self, f"n{self.n_nodes}")
        self.step(f"5. add node {newcomer.name}")
        before = {c: n for c, n in self.check_placement_quiet(regs).items()}
        t_join = time.monotonic()
        await newcomer.start([seed.address])
        await newcomer.wait_ready(30)
        t_ready = time.monotonic()
        members = sorted(n.name for n in self.live())

        async def migrated() -> bool:
            views = await self.census(self.live())
            return self.exact(views, members) and all(v["misplaced"] == 0 for v in views.values())

        await self.wait_until("migration to the newcomer", migrated, 20, every=0.02)
        t_moved = time.monotonic()
        regs = await self.registries()
        after = self.check_placement(regs)
        moved = {c: (before[c], after[c]) for c in self.ids if before.get(c) != after.get(c)}
        flows = Tally(f"{a} -> {b}" for a, b in moved.values())
        print(
            f"  migrations ({len(moved)} children, ColdSwap: stopped, then started on the owner):"
        )
        for flow, count in sorted(flows.items()):
            print(f"    {flow}: {count}")
        self.check(
            f"only children the newcomer owns moved, all to {newcomer.name}",
            all(b == newcomer.name for _, b in moved.values()) and len(moved) > 0,
        )

        async def reported() -> bool:
            arrived = self.hooks_since(t_join, "children_migrated", {newcomer.name})
            return sum(int(ev["children"]) for _, _, ev in arrived) >= len(moved)

        with contextlib.suppress(DemoFailed):
            await self.wait_until("children_migrated hooks", reported, 3)
        arrived = self.hooks_since(t_join, "children_migrated", {newcomer.name})
        hooked = sum(ev["children"] for _, _, ev in arrived)
        self.check(
            f"children_migrated hooks on {newcomer.name} report {hooked} arrivals",
            hooked == len(moved),
        )
        self.table(regs, "children per node:")
        changed = self.note_pids(regs)
        self.check("exactly the migrated children got new pids", changed == set(moved))
        starts = Tally()
        for reg in regs.values():
            starts.update(reg["starts"])
        self.check(
            "no child was started more than its migration needs",
            all(starts[c] == 1 + (c in moved) for c in self.ids),
        )
        took = t_moved - t_ready
        print(f"  {len(moved)} children migrated {took:.2f} s after {newcomer.name} was up")
        self.facts.append(
            (f"join {newcomer.name}", f"{len(moved)} children migrated in {took:.2f} s")
        )
        await self.check_values(
            reader, "unmoved children kept their value, migrated ones restarted"
        )

        # -- 6 ------------------------------------------------------------------------------
        self.step(f"6. cast from the newcomer {newcomer.name}, read back from n0")
        await self.cast_all(newcomer, 1)
        await self.check_values(seed, "every child counted the cast once")
        stats = await asyncio.gather(*(n.request("stats") for n in self.live()))
        totals: Tally[str] = Tally()
        for s in stats:
            totals.update(s["hooks"])
        print("  hook events dispatched on the live nodes (all, not just the printed sample):")
        for hook, count in sorted(totals.items()):
            print(f"    {hook:<28}{count:>7}")

        if keep:
            urls = "\n".join(f"    {n.name}: {n.dashboard}" for n in self.live())
            print(
                f"\n  the cluster keeps running; open a dashboard:\n{urls}\n  or try:\n"
                f"    .venv/bin/processhub status --node {seed.address} --cookie-file "
                f"{self.cookie_file}\n  Ctrl-C to stop it.",
                flush=True,
            )
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGINT, stop.set)
            with LiveView("the cluster, live (Ctrl-C to stop)") as live:
                while not stop.is_set():
                    nodes = self.live()
                    if nodes:
                        live.update(await self.census(nodes), "", time.monotonic() - self.t0)
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await stop.wait()
            loop.remove_signal_handler(signal.SIGINT)

        # -- 7 ------------------------------------------------------------------------------
        self.step("7. stop: every child, then every node (SIGTERM: graceful leave)")
        reply = await seed.request("stop_all", timeout=60)
        self.check(
            f"stop_children stopped {reply['stopped']}",
            reply["stopped"] == self.n_children and not reply["errors"],
            f"errors {reply['errors']}",
        )

        async def empty() -> bool:
            views = await self.census(self.live())
            return all(v["listed"] == 0 and v["local"] == 0 for v in views.values())

        took = await self.wait_until("empty registries", empty, 10)
        self.check(f"every registry is empty ({took:.2f} s)", True)
        live = self.live()
        codes = await asyncio.gather(*(n.terminate(20) for n in live))
        self.check(
            f"{len(live)} nodes exited 0 after a graceful leave",
            all(c == 0 for c in codes),
            ", ".join(f"{n.name}: {c}" for n, c in zip(live, codes, strict=True)),
        )
        self.facts.append(("total", f"{time.monotonic() - t_all:.1f} s"))

    def check_placement_quiet(self, regs: dict[str, dict[str, Any]]) -> dict[str, str]:
        where: dict[str, str] = {}
        for name, reg in regs.items():
            for cid in reg["local"]:
                where[cid] = name
        return where

    def failover_line(self, views: dict[str, dict[str, Any]], dead: str) -> str:
        runs = " ".join(f"{n} {v['local']:>4}" for n, v in sorted(views.items()))
        total = sum(v["local"] for v in views.values())
        listed = sorted({v["listed"] for v in views.values()})
        seeing = sum(dead not in v["members"] for v in views.values())
        return (
            f"running: {runs} = {total:>5} | registries list {'/'.join(map(str, listed))} | "
            f"{seeing}/{len(views)} survivors dropped {dead}"
        )


async def amain(args: argparse.Namespace) -> int:
    workdir = Path(tempfile.mkdtemp(prefix="processhub-demo-"))
    demo = Demo(args.nodes, args.children, workdir)
    fd = os.open(demo.cookie_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_urlsafe(32) + "\n")
    print(
        f"processhub multi-node demo: {args.nodes} nodes, {args.children} children, hub "
        f"{HUB!r}\n  random cookie in {demo.cookie_file} (mode 0600); node logs in {workdir}"
    )
    error = None
    try:
        await demo.run(args.keep)
    except DemoFailed as exc:
        error = str(exc)
    finally:
        await asyncio.gather(*(n.close() for n in demo.nodes.values()))
    print("\nsummary")
    for what, fact in demo.facts:
        print(f"  {what:<18} {fact}")
    if error is not None or demo.failures:
        if error is not None:
            print(f"\nFAILED: {error}")
        for failure in demo.failures:
            print(f"FAILED: {failure}")
        print(f"node logs kept in {workdir}")
        return 1
    shutil.rmtree(workdir, ignore_errors=True)
    print("\nall invariants held")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--nodes", type=int, default=4, help="node processes to start (default 4)")
    parser.add_argument(
        "--children", type=int, default=1000, help="counter children (default 1000)"
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the cluster running at the end until Ctrl-C"
    )
    parser.add_argument(
        "--local", action="store_true", help="run the single-node demo (scripts/demo_local.py)"
    )
    args, rest = parser.parse_known_args()
    if args.local:
        local = str(ROOT / "scripts" / "demo_local.py")
        os.execv(sys.executable, [sys.executable, local, *rest])
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.nodes < 2:
        parser.error("--nodes must be at least 2 (one of them is killed)")
    if args.children < 1:
        parser.error("--children must be at least 1")
    sys.exit(asyncio.run(amain(args)))


if __name__ == "__main__":
    main()
