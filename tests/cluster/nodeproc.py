"""A cluster node in its own OS process, driven by the tests.

Prints one JSON object per line on stdout (``listening``, ``member``, ``conflict``, ``hook``,
replies to commands) and reads JSON commands on stdin: ``members``, ``partition``, ``heal``,
``drop``, ``delay``, ``stats``, ``leave`` (graceful stop and exit).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import Counter
from typing import Any

from hub import WILDCARD, ChildSpec, Hook, HookHandler, Hub
from hub.cluster.faults import Faults
from hub.cluster.membership import MemberEvent, NameConflict
from hub.cluster.node import Node, NodeEvent


def emit(**fields: Any) -> None:
    fields["t"] = time.monotonic()
    sys.stdout.write(json.dumps(fields, default=str) + "\n")
    sys.stdout.flush()


def on_event(event: NodeEvent) -> None:
    if isinstance(event, MemberEvent):
        m = event.member
        emit(ev="member", kind=event.kind, name=m.node.name, boot=m.node.boot_id, inc=m.incarnation)
    elif isinstance(event, NameConflict):
        emit(ev="conflict", name=event.name, other=str(event.other.address))


STARTUPS: Counter[str] = Counter()


def count_startups(startups: list[tuple[str, Any]]) -> None:
    STARTUPS.update(cid for cid, _ in startups)


async def hub_command(hub: Hub | None, cmd: dict[str, Any]) -> None:
    assert hub is not None, "this node runs no hub"
    match cmd["cmd"]:
        case "start":
            specs = [
                ChildSpec(f"{cmd['prefix']}{i}", "tests.procs:Counter", args=[i])
                for i in range(cmd["n"])
            ]
            res = await hub.start_children(specs, timeout=30)
            emit(ev="started", ok=len(res.started), errors=[str(e) for _, e in res.errors][:5])
        case "stop_all":
            res = await hub.stop_children([cid for cid, _ in hub.process_list()])
            emit(ev="stopped_all", ok=len(res.stopped), errors=len(res.errors))
        case "registry":
            emit(
                ev="registry",
                children={cid: [n for n, _ in where] for cid, where in hub.process_list()},
            )
        case "startups":
            emit(ev="startups", counts=dict(STARTUPS))
        case "watch":
            WATCHES.add(asyncio.create_task(watch(hub, cmd["count"], cmd.get("without"))))
            emit(ev="ok", cmd="watch")


WATCHES: set[asyncio.Task[None]] = set()


async def watch(hub: Hub, count: int, without: str | None) -> None:
    """Report the moment this node's registry holds ``count`` children (and no partition of
    ``without``): sums partition sizes every millisecond, O(nodes) per look."""
    partitions = hub._registry.partitions
    while not (  # noqa: ASYNC110 - sampling the registry is what is measured
        sum(len(p.entries) for p in partitions.values()) == count
        and (without is None or not partitions.get(without, None))
    ):
        await asyncio.sleep(0.001)
    emit(ev="reached", count=count)


async def commands(node: Node, stop: asyncio.Event, hub: Hub | None) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        faults = node.faults
        assert faults is not None
        match cmd["cmd"]:
            case "members":
                members = [[m.node.name, m.state.name, m.incarnation] for m in node.members()]
                emit(ev="members", members=members)
            case "partition":
                faults.partition(cmd["groups"])
                emit(ev="ok", cmd="partition")
            case "heal":
                faults.partition(None)
                emit(ev="ok", cmd="heal")
            case "drop":
                faults.set_drop(cmd["p"])
                emit(ev="ok", cmd="drop")
            case "delay":
                faults.set_delay(cmd["low"], cmd["high"])
                emit(ev="ok", cmd="delay")
            case "stats":
                emit(ev="stats", **node.stats)
            case "leave":
                break
            case _:
                await hub_command(hub, cmd)
    stop.set()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seeds", default="")
    parser.add_argument("--cookie", default=None)
    parser.add_argument("--preset", default="local")
    parser.add_argument("--hub", default=None, help="also run a hub with this id")
    parser.add_argument("--log", default="WARNING")
    args = parser.parse_args()
    logging.basicConfig(
        level=args.log, stream=sys.stderr, format="%(asctime)s %(name)s %(levelname)s %(message)s"
    )
    seeds = [s for s in args.seeds.split(",") if s]
    node = Node(
        args.name,
        port=args.port,
        seeds=seeds,
        cookie=args.cookie,
        preset=args.preset,
        faults=Faults(),
    )
    node.subscribe(on_event)
    await node.start()
    hub = None
    if args.hub:
        hooks = {
            e: [
                HookHandler(
                    f"report_{e}",
                    lambda ev, data: emit(ev="hook", hook=ev, data=data),
                    [str(e), WILDCARD],
                )
            ]
            for e in (
                Hook.PRE_CLUSTER_JOIN,
                Hook.POST_CLUSTER_JOIN,
                Hook.PRE_CLUSTER_LEAVE,
                Hook.POST_CLUSTER_LEAVE,
            )
        }
        hooks[Hook.PROCESS_STARTUPS] = [HookHandler("count", count_startups)]
        hooks[Hook.CHILDREN_MIGRATED] = [
            HookHandler("migrated", lambda d: emit(ev="migrated", n=len(d.specs)))
        ]
        hub = await Hub(args.hub, endpoint=node, hooks=hooks).start()
    emit(ev="listening", name=node.name, port=node.address.port, boot=node.boot_id)
    stop = asyncio.Event()
    reader = asyncio.create_task(commands(node, stop, hub))
    await stop.wait()
    if hub is not None:
        await hub.stop()
    await node.stop()
    reader.cancel()
    emit(ev="stopped")


if __name__ == "__main__":
    asyncio.run(main())
