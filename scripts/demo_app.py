"""The application of the multi-node demo, loaded into each node by
``processhub node --app scripts.demo_app``.

It defines the ``Counter`` children and a ``setup(hub)`` that gives the demo controller a
control channel: JSON commands on the node's stdin, JSON lines on its stdout (replies, hook
events, sampled). End of stdin means the controller is gone: the node then stops gracefully, as
on SIGTERM. Not a public protocol: it exists for ``scripts/demo.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import signal
import sys
import time
from collections import Counter as Tally
from collections.abc import AsyncIterator
from typing import Any

from hub import WILDCARD, ChildSpec, Hook, HookHandler, Hub, HubError, Process
from strategies import ConsistentHashing

#: How many times each child id was started in this process (restarts and migrations count).
STARTS: Tally[str] = Tally()

#: Per-child events: only every ``SAMPLE``-th (and the first) is printed; all are counted.
PER_CHILD = {Hook.REGISTRY_PID_INSERTED, Hook.REGISTRY_PID_REMOVED, Hook.CHILD_STOPPED}
SAMPLE = 250
WATCHED = [
    Hook.PRE_CLUSTER_JOIN,
    Hook.POST_CLUSTER_JOIN,
    Hook.PRE_CLUSTER_LEAVE,
    Hook.POST_CLUSTER_LEAVE,
    Hook.PRE_NODES_REDISTRIBUTION,
    Hook.POST_NODES_REDISTRIBUTION,
    Hook.PRE_CHILDREN_REDISTRIBUTION,
    Hook.CHILDREN_MIGRATED,
    Hook.FORWARDED_MIGRATION,
    Hook.PROCESS_STARTUPS,
    Hook.CLUSTER_SYNCHRONIZED,
    Hook.CHILD_CONFLICT,
    Hook.CHILD_CRASHED,
    Hook.COORDINATOR_SHUTDOWN,
    *PER_CHILD,
]


class Counter(Process):
    """A counter child: starts at ``start``, adds ``by`` on each cast, answers calls with n."""

    async def init(self, start: int = 0) -> None:
        self.n = start
        STARTS[self.ctx.child_id] += 1

    async def handle_cast(self, message: Any) -> None:
        self.n += message["by"]

    async def handle_call(self, message: Any) -> Any:
        return self.n


def emit(**fields: Any) -> None:
    fields["t"] = time.monotonic()  # CLOCK_MONOTONIC: comparable between local processes
    sys.stdout.write(json.dumps(fields, default=str) + "\n")
    sys.stdout.flush()


def summary(hook: str, data: Any) -> tuple[str, int]:
    """A short text for an event's data and how many children it concerns."""
    if hook == Hook.PROCESS_STARTUPS:
        return f"{_children(len(data))} started here", len(data)
    if hook == Hook.PRE_CHILDREN_REDISTRIBUTION:
        targets = ", ".join(sorted({move[2] for move in data}))
        return f"{_children(len(data))} about to move to {targets}", len(data)
    if hook == Hook.CHILDREN_MIGRATED:
        return f"{_children(len(data.specs))} arrived on {data.node}", len(data.specs)
    if hook == Hook.FORWARDED_MIGRATION:
        count = sum(len(ids) for _, ids in data)
        return f"{count} start requests forwarded to their owners", count
    if hook == Hook.REGISTRY_PID_INSERTED:
        return f"{data.child_id} on " + ", ".join(f"{n} {pid}" for n, pid in data.nodes), 1
    if hook == Hook.REGISTRY_PID_REMOVED:
        return f"{data.child_id} from {', '.join(data.nodes)}", 1
    if hook == Hook.CHILD_STOPPED:
        return f"{data.child_id} (reason: {data.reason})", 1
    text = str(tuple(data)) if isinstance(data, tuple) else str(data)
    return text[:100], 0


def _children(n: int) -> str:
    return f"{n} child" if n == 1 else f"{n} children"


class Control:
    def __init__(self, hub: Hub) -> None:
        self.hub = hub
        self.counts: Tally[str] = Tally()
        self.tasks: set[asyncio.Task[None]] = set()

    def on_hook(self, hook: str, data: Any) -> None:
        self.counts[hook] += 1
        seq = self.counts[hook]
        if hook in PER_CHILD and seq != 1 and seq % SAMPLE:
            return
        text, children = summary(hook, data)
        emit(ev="hook", node=self.hub.node, hook=hook, seq=seq, text=text, children=children)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(limit=1 << 20)
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
        while line := await reader.readline():
            task = loop.create_task(self.answer(json.loads(line)))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        os.kill(os.getpid(), signal.SIGTERM)  # the controller is gone: stop gracefully

    async def answer(self, cmd: dict[str, Any]) -> None:
        try:
            reply = await getattr(self, "cmd_" + cmd["cmd"])(**cmd.get("args", {}))
            emit(ev="reply", id=cmd["id"], ok=True, **reply)
        except Exception as exc:
            emit(ev="reply", id=cmd["id"], ok=False, error=f"{type(exc).__name__}: {exc}")

    # -- commands --------------------------------------------------------------------------

    async def cmd_start(self, prefix: str, n: int) -> dict[str, Any]:
        specs = [ChildSpec(f"{prefix}{i}", Counter, args=[i]) for i in range(n)]
        t0 = time.perf_counter()
        result = await self.hub.start_children(specs, timeout=30.0)
        return {
            "status": result.status,
            "started": len(result.started),
            "errors": [[cid, str(err)] for cid, err in result.errors[:5]],
            "error_count": len(result.errors),
            "ms": (time.perf_counter() - t0) * 1000,
        }

    async def cmd_cast(self, ids: list[str], by: int) -> dict[str, Any]:
        failed: list[str] = []
        for cid in ids:
            try:
                await self.hub.cast(cid, {"by": by})
            except HubError as exc:
                failed.append(f"{cid}: {exc}")
        return {"sent": len(ids) - len(failed), "failed": failed[:5], "failed_count": len(failed)}

    async def cmd_values(self, ids: list[str]) -> dict[str, Any]:
        slots = asyncio.Semaphore(100)

        async def value(cid: str) -> Any:
            async with slots:
                try:
                    return await self.hub.call(cid, "get", timeout=10.0)
                except HubError as exc:
                    return f"error: {type(exc).__name__}: {exc}"

        return {"values": await asyncio.gather(*(value(cid) for cid in ids))}

    async def cmd_census(self) -> dict[str, Any]:
        """A summary of this node's registry view, cheap enough to poll."""
        hub = self.hub
        members = hub.nodes(include_local=True)
        live = set(members)
        where = [(cid, sorted(str(pid) for _, pid in found)) for cid, found in hub.process_list()]
        places = [(cid, sorted(n for n, _ in found)) for cid, found in hub.process_list()]
        digest = hashlib.sha1(json.dumps(where).encode()).hexdigest()[:12]
        ring = ConsistentHashing(nodes=members)  # the hub's default distribution
        return {
            "members": members,
            "listed": len(places),
            "copies": sum(len(nodes) for _, nodes in places),
            "duplicated": sum(1 for _, nodes in places if len(nodes) > 1),
            "off_live": sum(1 for _, nodes in places for n in nodes if n not in live),
            "digest": digest,
            "local": len(hub.process_list("local")),
            "misplaced": sum(1 for cid, nodes in places if nodes != ring.belongs_to(cid)[:1]),
        }

    async def cmd_registry(self) -> dict[str, Any]:
        hub = self.hub
        return {
            "members": hub.nodes(include_local=True),
            "global": {
                cid: [[n, str(pid)] for n, pid in found] for cid, found in hub.process_list()
            },
            "local": [cid for cid, _ in hub.process_list("local")],
            "starts": dict(STARTS),
        }

    async def cmd_stop_all(self) -> dict[str, Any]:
        ids = [cid for cid, _ in self.hub.process_list()]
        result = await self.hub.stop_children(ids)
        return {
            "stopped": len(result.stopped),
            "errors": [[cid, str(err)] for cid, err in result.errors[:5]],
        }

    async def cmd_stats(self) -> dict[str, Any]:
        return {"hooks": dict(self.counts)}


async def setup(hub: Hub) -> AsyncIterator[None]:
    """Called by ``processhub node`` for each hub after it started; resumed at shutdown."""
    control = Control(hub)
    for hook in WATCHED:
        hub.hooks.register(
            hook, HookHandler(f"demo_{hook}", control.on_hook, [str(hook), WILDCARD])
        )
    reader = asyncio.get_running_loop().create_task(control.run(), name="demo-control")
    emit(ev="ready", node=hub.node, hub=hub.hub_id, pid=os.getpid())
    try:
        yield
    finally:
        for task in [reader, *control.tasks]:
            task.cancel()
        for task in [reader, *control.tasks]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
