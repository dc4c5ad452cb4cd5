"""Run cluster nodes as real OS processes on loopback and watch what they report."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
COOKIE = "test-cookie-0123456789abcdef"


class NodeProc:
    """One node process. ``events`` holds every JSON line it printed, with arrival times."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None
        self.events: list[dict[str, Any]] = []
        self.port = 0
        self.boot = ""
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(
        self,
        *,
        seeds: list[str],
        preset: str = "local",
        hub: str | None = None,
        port: int = 0,
        cookie: str | None = COOKIE,
    ) -> None:
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
        self.events.clear()
        self.proc = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=ROOT,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        self._reader = asyncio.create_task(self._read())
        listening = await self.wait_for(lambda e: e["ev"] == "listening", timeout=30)
        self.port, self.boot = listening["port"], listening["boot"]

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        loop = asyncio.get_running_loop()
        while line := await self.proc.stdout.readline():
            event = json.loads(line)
            event["arrived"] = loop.time()
            async with self._changed:
                self.events.append(event)
                self._changed.notify_all()

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

    async def command(self, **cmd: Any) -> dict[str, Any]:
        assert self.proc is not None
        assert self.proc.stdin is not None
        mark = len(self.events)
        self.proc.stdin.write((json.dumps(cmd) + "\n").encode())
        await self.proc.stdin.drain()
        if cmd["cmd"] == "leave":
            return await self.wait_for(lambda e: e["ev"] == "stopped", since=mark)
        want = {
            "members": "members",
            "stats": "stats",
            "start": "started",
            "registry": "registry",
            "startups": "startups",
            "stop_all": "stopped_all",
        }.get(cmd["cmd"], "ok")
        return await self.wait_for(lambda e: e["ev"] == want, since=mark, timeout=60)

    async def members(self) -> dict[str, tuple[str, int]]:
        reply = await self.command(cmd="members")
        return {name: (state, inc) for name, state, inc in reply["members"]}

    def signal(self, sig: signal.Signals) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

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


class Cluster:
    """N node processes; the first is every other one's seed."""

    def __init__(self) -> None:
        self.nodes: list[NodeProc] = []

    async def start(
        self, n: int, *, preset: str = "local", hub: str | None = None, cookie: str | None = COOKIE
    ) -> list[NodeProc]:
        names = [f"n{i}" for i in range(len(self.nodes), len(self.nodes) + n)]
        started = []
        for name in names:
            proc = NodeProc(name)
            seeds = [self.nodes[0].address] if self.nodes else []
            await proc.start(seeds=seeds, preset=preset, hub=hub, cookie=cookie)
            self.nodes.append(proc)
            started.append(proc)
        return started

    def get(self, name: str) -> NodeProc:
        return next(n for n in self.nodes if n.name == name)

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

    async def close(self) -> None:
        await asyncio.gather(*(n.close() for n in self.nodes))
