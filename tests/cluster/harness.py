"""Run cluster nodes as real OS processes on loopback and watch what they report.

:class:`NodeProc` is one ``tests.cluster.nodeproc`` process (its JSON events, its commands,
signals, a restart under the same name and port); :class:`Cluster` is a set of them with
helpers that read every node's registry, what each node runs, and its startup counts, and wait
(with a deadline) for "every child exactly once on its ring owner, all registries equal".
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import signal
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from strategies import ConsistentHashing

ROOT = Path(__file__).resolve().parents[2]
COOKIE = "test-cookie-0123456789abcdef"

#: The reply event of each command (commands not listed answer ``ok``).
REPLIES = {
    "versions": "versions",
    "modes": "modes",
    "locked": "locked",
    "try_start": "tried",
    "members": "members",
    "stats": "stats",
    "start": "started",
    "stop": "stopped_ids",
    "registry": "registry",
    "local": "local",
    "lookup": "lookup",
    "nodes": "nodes",
    "startups": "startups",
    "buried": "buried",
    "call": "called",
    "drain": "drained",
    "hub_stop": "hub_stopped",
    "memory": "memory",
    "stop_all": "stopped_all",
}

_RIDS = itertools.count(1)


class CommandFailed(AssertionError):
    """A node process answered a command with an error."""


class NodeProc:
    """One node process. ``events`` holds every JSON line it printed, with arrival times."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, Any]] = []
        self.port = 0
        self.boot = ""
        self.options: dict[str, Any] = {}
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self._triggers: list[tuple[Callable[[dict[str, Any]], bool], Callable[[], None]]] = []

    async def start(
        self,
        *,
        seeds: list[str],
        preset: str = "local",
        hub: str | None = None,
        port: int = 0,
        cookie: str | None = COOKIE,
        reconcile: float | None = None,
        guided: bool = False,
        migration: str | None = None,
        redundancy: str | None = None,
        partition: str | None = None,
        trace_memory: bool = False,
        log: str | None = None,
        tuned_gc: bool = False,
    ) -> None:
        self.options = {
            "seeds": seeds,
            "preset": preset,
            "hub": hub,
            "cookie": cookie,
            "reconcile": reconcile,
            "guided": guided,
            "migration": migration,
            "redundancy": redundancy,
            "partition": partition,
            "trace_memory": trace_memory,
            "log": log,
            "tuned_gc": tuned_gc,
        }
        cmd = [
            sys.executable,
            "-m",
            "tests.cluster.nodeproc",
            "--name",
            self.name,
            "--port",
            str(port),
            "--seeds",
            ",".join(seeds),
            "--preset",
            preset,
        ]
        if cookie:
            cmd += ["--cookie", cookie]
        if hub:
            cmd += ["--hub", hub]
        if reconcile is not None:
            cmd += ["--reconcile", str(reconcile)]
        if guided:
            cmd += ["--guided"]
        if migration:
            cmd += ["--migration", migration]
        if redundancy:
            cmd += ["--redundancy", redundancy]
        if partition:
            cmd += ["--partition", partition]
        if trace_memory:
            cmd += ["--tracemalloc"]
        if log:
            cmd += ["--log", log]
        if tuned_gc:
            cmd += ["--tuned-gc"]
        if self._reader is not None:  # a restart: the previous process's reader is done
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        self.events.clear()
        path = os.environ.get("PYTHONPATH")  # kept after the repository (e.g. a profiler's)
        self.proc = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, (str(ROOT), path)))},
            limit=64 * 1024 * 1024,
        )
        self._reader = asyncio.create_task(self._read())
        listening = await self.wait_for(lambda e: e["ev"] == "listening", timeout=30)
        self.port, self.boot = listening["port"], listening["boot"]

    async def restart(self, *, same_port: bool = True, **changes: Any) -> None:
        """Start this node again (after it died): same name, same options, and by default the
        same port, so that peers see a new boot of the same member at the same address."""
        assert self.proc is not None
        if self.proc.returncode is None:
            raise AssertionError(f"{self.name} still runs; kill it first")
        options = {**self.options, **changes}
        await self.start(port=self.port if same_port else 0, **options)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        while line := await self.proc.stdout.readline():
            event = json.loads(line)
            event["arrived"] = loop.time()
            for match, action in list(self._triggers):
                if match(event):
                    self._triggers.remove((match, action))
                    action()
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

    def on_event(self, match: Callable[[dict[str, Any]], bool], action: Callable[[], None]) -> None:
        """Run ``action`` (synchronously, in the reader, before anyone else sees the event) for
        the first event from now on that ``match``es: e.g. kill -9 the moment a hook fires."""
        self._triggers.append((match, action))

    async def wait_for(
        self, match: Callable[[dict[str, Any]], bool], timeout: float = 30.0, since: int = 0
    ) -> dict[str, Any]:
        """The first event (from index ``since``) that ``match``es; fails after ``timeout``."""

        async def find() -> dict[str, Any]:
            async with self._changed:
                while True:
                    for event in self.events[since:]:
                        if match(event):
                            return event
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name}: no matching event within {timeout}s") from None

    def member_events(self, name: str, kind: str | None = None) -> list[dict[str, Any]]:
        return [
            e
            for e in self.events
            if e["ev"] == "member" and e["name"] == name and (kind is None or e["kind"] == kind)
        ]

    def of(self, ev: str, since: int = 0) -> list[dict[str, Any]]:
        """The events named ``ev`` (from index ``since``)."""
        return [e for e in self.events[since:] if e["ev"] == ev]

    async def command(self, reply_timeout: float = 60.0, **cmd: Any) -> dict[str, Any]:
        """Send a command and wait (up to ``reply_timeout``) for its reply, matched by request
        id. Every other keyword is part of the command."""
        timeout = reply_timeout
        assert self.proc is not None
        assert self.proc.stdin is not None
        mark = len(self.events)
        rid = next(_RIDS)
        cmd["rid"] = rid
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        if cmd["cmd"] == "leave":
            return await self.wait_for(lambda e: e["ev"] == "stopped", since=mark, timeout=timeout)
        reply = await self.wait_for(lambda e: e.get("rid") == rid, since=mark, timeout=timeout)
        if reply["ev"] == "error":
            raise CommandFailed(f"{self.name}: {cmd['cmd']} failed: {reply}")
        want = REPLIES.get(cmd["cmd"], "ok")
        assert reply["ev"] == want, reply
        return reply

    async def members(self) -> dict[str, tuple[str, int]]:
        reply = await self.command(cmd="members")
        return {m[0]: (m[1], m[2]) for m in reply["members"]}

    async def registry(self) -> dict[str, list[str]]:
        """This node's registry: child id -> the nodes it runs on."""
        return dict((await self.command(cmd="registry"))["children"])

    async def local(self) -> set[str]:
        """The children this node runs (``process_list("local")``)."""
        return set((await self.command(cmd="local"))["ids"])

    async def startups(self) -> dict[str, int]:
        """``PROCESS_STARTUPS`` counts per child id since this process started."""
        return dict((await self.command(cmd="startups"))["counts"])

    async def hub_nodes(self) -> list[str]:
        return list((await self.command(cmd="nodes"))["nodes"])

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    async def kill(self) -> None:
        """kill -9 and wait until the process is gone."""
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            self.proc.send_signal(signal.SIGKILL)
        await self.proc.wait()

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGCONT)
                self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


def owner(nodes: Iterable[str], child_id: str) -> str:
    """The ring owner of ``child_id`` among ``nodes`` (what every node with that view
    computes)."""
    return ConsistentHashing(nodes=list(nodes)).belongs_to(child_id)[0]


def owners(nodes: Iterable[str], child_ids: Iterable[str]) -> dict[str, str]:
    ring = ConsistentHashing(nodes=list(nodes))
    return {cid: ring.belongs_to(cid)[0] for cid in child_ids}


def on(where: dict[str, list[str]], names: Iterable[str]) -> set[str]:
    """The children that ``where`` (child id -> nodes) places on one of ``names``."""
    wanted = set(names)
    return {cid for cid, nodes in where.items() if wanted.intersection(nodes)}


def diff_startups(before: dict[str, int], after: dict[str, int]) -> dict[str, int]:
    return {cid: n - before.get(cid, 0) for cid, n in after.items() if n != before.get(cid, 0)}


class Cluster:
    """N node processes; the first is every other one's seed."""

    def __init__(self) -> None:
        self.nodes: list[NodeProc] = []

    async def start(
        self,
        n: int,
        *,
        preset: str = "local",
        hub: str | None = None,
        cookie: str | None = COOKIE,
        **options: Any,
    ) -> list[NodeProc]:
        names = [f"n{i}" for i in range(len(self.nodes), len(self.nodes) + n)]
        started = []
        for name in names:
            proc = NodeProc(name)
            seeds = [self.seed()] if self.nodes else []
            await proc.start(seeds=seeds, preset=preset, hub=hub, cookie=cookie, **options)
            self.nodes.append(proc)
            started.append(proc)
        return started

    async def add(
        self,
        name: str,
        *,
        prepare: Callable[[NodeProc], None] | None = None,
        preset: str = "local",
        hub: str | None = None,
        cookie: str | None = COOKIE,
        **options: Any,
    ) -> NodeProc:
        """Start one more node named ``name`` (seeded by a running node); ``prepare`` runs
        before the process starts (e.g. to register an :meth:`NodeProc.on_event` trigger)."""
        proc = NodeProc(name)
        if prepare is not None:
            prepare(proc)
        seeds = [self.seed()] if self.live else []
        self.nodes.append(proc)
        await proc.start(seeds=seeds, preset=preset, hub=hub, cookie=cookie, **options)
        return proc

    def seed(self) -> str:
        """The address of a running node (the first one that still runs)."""
        return next(n for n in self.nodes if n.running).address

    def get(self, name: str) -> NodeProc:
        return next(n for n in self.nodes if n.name == name)

    @property
    def live(self) -> list[NodeProc]:
        return [n for n in self.nodes if n.running]

    async def converged(
        self, alive: set[str], among: list[NodeProc] | None = None, timeout: float = 30.0
    ) -> None:
        """Wait until every node in ``among`` sees exactly ``alive`` as its live members."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for node in among or [n for n in self.nodes if n.name in alive]:
            while True:
                members = await node.members()
                live = {
                    name for name, (state, _) in members.items() if state in ("ALIVE", "SUSPECT")
                }
                if live == alive:
                    break
                if loop.time() > deadline:
                    raise AssertionError(f"{node.name} sees {sorted(live)}, wanted {sorted(alive)}")
                await asyncio.sleep(0.1)

    async def hub_converged(self, nodes: list[NodeProc], timeout: float = 30.0) -> None:
        """Wait until every hub in ``nodes`` has exactly ``nodes`` as its hub members
        (``hub.nodes(include_local=True)``)."""
        want = sorted(n.name for n in nodes)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        for node in nodes:
            while (seen := await node.hub_nodes()) != want:
                if loop.time() > deadline:
                    raise AssertionError(f"{node.name}'s hub sees {seen}, wanted {want}")
                await asyncio.sleep(0.05)

    async def startups(self, nodes: list[NodeProc]) -> dict[str, dict[str, int]]:
        return {n.name: await n.startups() for n in nodes}

    async def new_starts(
        self,
        nodes: list[NodeProc],
        before: dict[str, dict[str, int]],
        expect: Iterable[str] = (),
        timeout: float = 10.0,
    ) -> dict[str, int]:
        """Child id -> ``PROCESS_STARTUPS`` since ``before`` (a :meth:`startups` reading),
        summed over ``nodes``. Startup hooks run in their own task, so this polls until every
        id of ``expect`` shows up and two reads 0.3 s apart agree (or ``timeout``)."""
        want = set(expect)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: dict[str, int] | None = None
        while True:
            total: dict[str, int] = {}
            for name, counts in (await self.startups(nodes)).items():
                for cid, n in diff_startups(before.get(name, {}), counts).items():
                    total[cid] = total.get(cid, 0) + n
            if (total == last and set(total) >= want) or loop.time() > deadline:
                return total
            last = total
            await asyncio.sleep(0.3)

    async def observe(self, nodes: list[NodeProc]) -> Observation:
        regs = await asyncio.gather(*(n.registry() for n in nodes))
        runs = await asyncio.gather(*(n.local() for n in nodes))
        return Observation(
            {n.name: r for n, r in zip(nodes, regs, strict=True)},
            {n.name: r for n, r in zip(nodes, runs, strict=True)},
        )

    async def exactly_once(
        self,
        nodes: list[NodeProc],
        ids: set[str],
        *,
        placement: Iterable[str] | None = None,
        timeout: float = 30.0,
        lost: set[str] | None = None,
        poll: float = 0.1,
    ) -> Observation:
        """Wait until every child of ``ids`` runs exactly once among ``nodes``, on its ring owner
        among ``placement`` (default: ``nodes``), nothing else runs, and every node's registry is
        identical and says exactly that. On the deadline, fail with what is wrong (``lost``:
        the ids whose node died, counted separately in the message). ``poll``: seconds between
        two looks (each reads every node's registry: with many children, look less often)."""
        ring_nodes = sorted(placement if placement is not None else (n.name for n in nodes))
        want = owners(ring_nodes, ids)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            seen = await self.observe(nodes)
            problems = seen.problems(want)
            if not problems:
                return seen
            if loop.time() > deadline:
                raise AssertionError(
                    f"not exactly once on the owners among {ring_nodes} within {timeout}s: "
                    + seen.describe(want, lost)
                )
            await asyncio.sleep(poll)

    async def close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.nodes))


class Observation:
    """One look at the cluster: each node's registry and what each node runs."""

    def __init__(self, registries: dict[str, dict[str, list[str]]], runs: dict[str, set[str]]):
        self.registries = registries
        self.runs = runs

    def running(self) -> dict[str, list[str]]:
        """child id -> the nodes that run it (from each node's own local list)."""
        where: dict[str, list[str]] = {}
        for node, ids in sorted(self.runs.items()):
            for cid in ids:
                where.setdefault(cid, []).append(node)
        return where

    def problems(self, want: dict[str, str]) -> list[str]:
        running = self.running()
        out = []
        if set(running) != set(want):
            out.append("running set differs")
        if any(running.get(cid) != [node] for cid, node in want.items()):
            out.append("placement differs")
        expected = {cid: [node] for cid, node in want.items()}
        if any(reg != expected for reg in self.registries.values()):
            out.append("a registry differs")
        return out

    def describe(self, want: dict[str, str], lost: set[str] | None = None) -> str:
        running = self.running()
        missing = sorted(set(want) - set(running))
        doubled = sorted(cid for cid, where in running.items() if len(where) > 1)
        misplaced = sorted(
            cid for cid, where in running.items() if cid in want and where != [want[cid]]
        )
        stray = sorted(set(running) - set(want))
        parts = [f"{len(missing)} of {len(want)} run nowhere"]
        if lost is not None:
            parts.append(
                f"lost {len(set(missing) & lost)} of the {len(lost)} children of the dead nodes"
            )
        parts += [
            f"{len(doubled)} run more than once",
            f"{len(misplaced)} not on their owner",
            f"{len(stray)} unexpected",
        ]
        expected = {cid: [node] for cid, node in want.items()}
        for node, reg in sorted(self.registries.items()):
            if reg != expected:
                wrong = sum(
                    1 for cid in set(reg) | set(expected) if reg.get(cid) != expected.get(cid)
                )
                parts.append(f"{node}'s registry: {len(reg)} entries, {wrong} differ")
        examples = (missing + doubled + misplaced)[:5]
        if examples:
            parts.append(f"e.g. {[(cid, running.get(cid), want.get(cid)) for cid in examples]}")
        return "; ".join(parts)
