"""Several real nodes (``Node`` + ``Hub`` each) on loopback in this process, for the in-process
cluster tests: every hub can be read at the same instant, and faults are set on every node at
once (``partition``/``heal``: all traffic between the groups, as the real-process tests do
through their nodes' commands)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from hub import WILDCARD, Hook, HookHandler, Hub
from hub.cluster import Faults, Node
from strategies import ConsistentHashing
from tests.conftest import wait_until

COOKIE = "core-inproc-cookie-0123456789"
DEADLINE = 30.0
RECORDED = (
    Hook.PROCESS_STARTUPS,
    Hook.CHILDREN_MIGRATED,
    Hook.FORWARDED_MIGRATION,
    Hook.CHILD_CONFLICT,
    Hook.CLUSTER_SYNCHRONIZED,
    Hook.CHILD_BURIED,
    Hook.CHILD_PROCESS_PID_UPDATE,
)


class Nodes:
    """Real nodes (``Node`` + ``Hub`` each) in this process; the first is everyone's seed."""

    def __init__(self) -> None:
        self.hubs: dict[str, Hub] = {}
        self.endpoints: list[Any] = []
        self.events: dict[str, list[tuple[str, Any]]] = {}

    async def add(
        self,
        name: str,
        *,
        hooks: dict[Hook | str, list[HookHandler]] | None = None,
        **hub_args: Any,
    ) -> Hub:
        seeds = [f"127.0.0.1:{self.endpoints[0].address.port}"] if self.endpoints else []
        node = await Node(name, cookie=COOKIE, preset="local", seeds=seeds, faults=Faults()).start()
        self.endpoints.append(node)
        log = self.events.setdefault(name, [])
        handlers: dict[Hook | str, list[HookHandler]] = {
            e: [
                HookHandler(
                    f"log_{e}", lambda ev, d, log=log: log.append((ev, d)), [str(e), WILDCARD]
                )
            ]
            for e in RECORDED
        }
        for event, extra in (hooks or {}).items():
            handlers.setdefault(event, []).extend(extra)
        hub = Hub("orders", endpoint=node, hooks=handlers, **hub_args)
        self.hubs[name] = hub
        await hub.start()
        await self.settled()
        return hub

    @property
    def live(self) -> list[Hub]:
        return [h for h in self.hubs.values() if h.is_alive()]

    async def settled(self) -> None:
        """Every live hub has exactly the live hubs as its members."""
        names = sorted(h.node for h in self.live)
        for hub in self.live:
            await wait_until(lambda h=hub: h.nodes(include_local=True) == names, timeout=DEADLINE)

    def running(self) -> dict[str, list[str]]:
        """child id -> the nodes that run it (each live hub's ``process_list("local")``)."""
        where: dict[str, list[str]] = {}
        for hub in self.live:
            for cid, _ in hub.process_list("local"):
                where.setdefault(cid, []).append(hub.node)
        return where

    def of(self, node: str, event: Hook) -> list[Any]:
        return [d for e, d in self.events[node] if e == event]

    def problems(self, ids: set[str], placement: list[str] | None = None) -> list[str]:
        """What keeps the cluster from "every child exactly once on its owner among
        ``placement`` (default: the live hubs), every live registry identical and exact"."""
        ring = ConsistentHashing(nodes=placement or [h.node for h in self.live])
        want = {cid: [ring.belongs_to(cid)[0]] for cid in ids}
        running = self.running()
        out = []
        missing = set(want) - set(running)
        if missing:
            out.append(f"{len(missing)} of {len(want)} run nowhere")
        doubled = [c for c, w in running.items() if len(w) > 1]
        if doubled:
            out.append(f"{len(doubled)} run more than once")
        misplaced = [c for c, w in running.items() if c in want and len(w) == 1 and w != want[c]]
        if misplaced:
            out.append(f"{len(misplaced)} not on their owner, e.g. {misplaced[:3]}")
        if set(running) - set(want):
            out.append(f"{len(set(running) - set(want))} unexpected")
        for hub in self.live:
            view = {cid: [n for n, _ in where] for cid, where in hub.process_list()}
            if view != want:
                out.append(f"{hub.node}'s registry differs ({len(view)} entries)")
        return out

    async def exactly_once(
        self, ids: set[str], placement: list[str] | None = None, timeout: float = DEADLINE
    ) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while problems := self.problems(ids, placement):
            if loop.time() > deadline:
                raise AssertionError(f"not exactly once within {timeout}s: {'; '.join(problems)}")
            await asyncio.sleep(0.02)

    def partition(self, groups: list[list[str]]) -> None:
        """Cut all traffic between ``groups`` (node names), on every node."""
        for endpoint in self.endpoints:
            endpoint.faults.partition(groups)

    def heal(self) -> None:
        for endpoint in self.endpoints:
            endpoint.faults.partition(None)

    async def close(self) -> None:
        """Stop every child first (nothing left to hand off), then each hub and its node in
        turn, so that the peers see a graceful leave."""
        live = self.live
        if live:
            ids = {cid for hub in live for cid, _ in hub.process_list()}
            with contextlib.suppress(Exception):
                await asyncio.wait_for(live[0].stop_children(sorted(ids)), DEADLINE)
        for hub, endpoint in zip(self.hubs.values(), self.endpoints, strict=True):
            await hub.stop()
            await endpoint.stop()


def owned(names: list[str], pick: Callable[[str], bool], prefix: str = "x") -> str:
    """The first id ``prefix<i>`` whose ring owner among ``names`` satisfies ``pick``."""
    ring = ConsistentHashing(nodes=names)
    return next(f"{prefix}{i}" for i in range(10_000) if pick(ring.belongs_to(f"{prefix}{i}")[0]))
