"""A cluster node in its own OS process, driven by the tests.

Prints one JSON object per line on stdout and reads JSON commands on stdin.

Events: ``listening``, ``member`` (membership changes), ``conflict`` (name conflict), ``hook``
(join/leave hooks), ``migrated`` (``CHILDREN_MIGRATED``: ``n`` and ``ids``), ``forwarded``
(``FORWARDED_MIGRATION``), ``buried_hook`` (``CHILD_BURIED``), ``child_conflict``
(``CHILD_CONFLICT``), ``migration_failed``, ``handover_delivered``, ``handover_skipped``,
``quorum_lost``, ``quorum_regained``, ``mode_changed`` (``CHILD_MODE_CHANGED``),
``synchronized`` (``CLUSTER_SYNCHRONIZED``, with the number of children
this node's registry holds at that moment), ``reached`` (a ``watch`` condition held).

Commands (a command may carry ``rid``; its reply echoes it): ``members``, ``partition``,
``heal``, ``drop``, ``delay``, ``stats``, ``leave`` (graceful stop of hub and node, then exit),
and with a hub: ``start``, ``stop``, ``stop_all``, ``registry``, ``local``, ``lookup``,
``nodes``, ``startups``, ``buried``, ``call``, ``cast``, ``drain``, ``hub_stop``, ``memory``,
``watch`` (``ids``, or ``count`` with ``prefix``; ``on``: exactly once on its owner; ``total``:
the registry holds that many children), ``locked``, ``try_start``, ``modes``.
Hub commands run concurrently (each in its own task); a command that raises answers
``{"ev": "error"}``. Every read goes through the hub's public API, except the ``watch``
probes: they read the registry's partitions (``hub.runtime.registry``, what ``hub.lookup``
reads) without building a pid per child.
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import gc
import json
import logging
import re
import sys
import time
import tracemalloc
from collections import Counter
from typing import Any

import hub as hub_api
from hub import WILDCARD, ChildSpec, Hook, HookHandler, Hub, HubError, tune_gc
from hub.cluster.membership import MemberEvent, NameConflict
from hub.cluster.node import NodeEvent
from strategies import (
    ColdSwap,
    ConsistentHashing,
    DynamicQuorum,
    Guided,
    HotSwap,
    MajorityQuorum,
    Replication,
    StaticQuorum,
)

try:  # the test facility's public names (DESIGN.md section 3)
    from hub.cluster import Faults, Node
except ImportError:  # not exported yet
    from hub.cluster.faults import Faults
    from hub.cluster.node import Node

# Exception classes exported by ``hub`` (what a user can catch by name).
EXPORTED = {
    obj
    for name in hub_api.__all__
    if isinstance(obj := getattr(hub_api, name), type) and issubclass(obj, BaseException)
}


def emit(**fields: Any) -> None:
    fields["t"] = time.monotonic()
    sys.stdout.write(json.dumps(fields, default=str) + "\n")
    sys.stdout.flush()


def reply(request: dict[str, Any], ev: str, **fields: Any) -> None:
    emit(ev=ev, rid=request.get("rid"), **fields)


def on_event(event: NodeEvent) -> None:
    if isinstance(event, MemberEvent):
        m = event.member
        emit(ev="member", kind=event.kind, name=m.node.name, boot=m.node.boot_id, inc=m.incarnation)
    elif isinstance(event, NameConflict):
        emit(ev="conflict", name=event.name, other=str(event.other.address))


STARTUPS: Counter[str] = Counter()


def count_startups(startups: list[tuple[str, Any]]) -> None:
    STARTUPS.update(cid for cid, _ in startups)


def describe_error(exc: BaseException) -> dict[str, Any]:
    """What a test needs to judge an exception a user would see."""
    cls = type(exc)
    return {
        "type": f"{cls.__module__}.{cls.__qualname__}",
        "name": cls.__name__,
        "message": str(exc),
        "hub_error": isinstance(exc, HubError),
        "exported": cls in EXPORTED,
    }


def vm_rss() -> int:
    """This process's resident set size in bytes (``VmRSS`` of /proc/self/status)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def malloc_trim() -> bool:
    """Hand the C heap's free memory back to the system (glibc), so that RSS counts what is
    in use rather than the allocator's high-water mark; False where unavailable."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    libc.malloc_trim(0)
    return True


async def make_specs(cmd: dict[str, Any]) -> list[ChildSpec]:
    """``ids`` (explicit) or ``n`` ids ``prefix0..`` ; ``proc`` names the process; ``args``
    (shared) or ``[i]`` (the default: a Counter starting at its index); ``spec``: further
    ChildSpec keyword arguments (``max_restarts``, ``metadata``, ...)."""
    proc = cmd.get("proc", "tests.procs:Counter")
    extra = cmd.get("spec", {})
    ids = list(cmd["ids"]) if "ids" in cmd else [f"{cmd['prefix']}{i}" for i in range(cmd["n"])]
    shared = cmd.get("args")
    specs = []
    for i, cid in enumerate(ids):
        args = shared if shared is not None else [_index(cid, i)]
        specs.append(ChildSpec(cid, proc, args=args, **extra))
        if i % 1_000 == 999:  # 100,000 specs take a second: the node keeps answering probes
            await asyncio.sleep(0)
    return specs


def _index(cid: str, i: int) -> int:
    """The number an id ends with (``c17`` -> 17), else its position in the request."""
    found = re.search(r"(\d+)$", cid)
    return int(found.group(1)) if found else i


async def hub_command(hub: Hub | None, cmd: dict[str, Any]) -> None:
    assert hub is not None, "this node runs no hub"
    match cmd["cmd"]:
        case "start":
            specs = await make_specs(cmd)
            # "timeout": null (or absent with "default_timeout") uses the hub's default
            timeout = None if cmd.get("default_timeout") else cmd.get("timeout", 30)
            called = time.monotonic()  # the specs are built: the hub's part begins
            res = await hub.start_children(specs, timeout=timeout)
            reply(
                cmd,
                "started",
                called=called,
                ok=len(res.started),
                status=res.status,
                n_errors=len(res.errors),
                errors=[str(e) for _, e in res.errors][:5],
                error_ids=[cid for cid, _ in res.errors][:1000],
                placed={cid: [n for n, _ in where] for cid, where in res.started[:1000]},
            )
        case "stop":
            res = await hub.stop_children(cmd["ids"])
            reply(
                cmd,
                "stopped_ids",
                ok=len(res.stopped),
                errors=[[cid, describe_error(e)] for cid, e in res.errors][:100],
            )
        case "stop_all":
            res = await hub.stop_children([cid for cid, _ in hub.process_list()])
            reply(cmd, "stopped_all", ok=len(res.stopped), errors=len(res.errors))
        case "registry":
            reply(
                cmd,
                "registry",
                children={cid: [n for n, _ in where] for cid, where in hub.process_list()},
            )
        case "local":
            reply(cmd, "local", ids=[cid for cid, _ in hub.process_list("local")])
        case "lookup":
            reply(cmd, "lookup", where={cid: [n for n, _ in hub.lookup(cid)] for cid in cmd["ids"]})
        case "nodes":
            reply(cmd, "nodes", nodes=hub.nodes(include_local=True))
        case "startups":
            reply(cmd, "startups", counts=dict(STARTUPS))
        case "buried":
            reply(
                cmd,
                "buried",
                ids=[b.child_id for b in hub.buried()],
                attempts={b.child_id: getattr(b, "attempts", None) for b in hub.buried()},
            )
        case "call":
            began = time.monotonic()
            timeout = cmd.get("timeout", 10.0)
            outcomes = await asyncio.gather(
                *(hub.call(cid, cmd.get("message", "get"), timeout=timeout) for cid in cmd["ids"]),
                return_exceptions=True,
            )
            results: dict[str, Any] = {}
            for cid, outcome in zip(cmd["ids"], outcomes, strict=True):
                if isinstance(outcome, BaseException):
                    results[cid] = {"ok": False, **describe_error(outcome)}
                else:
                    results[cid] = {"ok": True, "value": outcome}
            reply(cmd, "called", results=results, began=began)
        case "modes":  # each local copy's ctx.mode (asked by pid: a replica, not the primary)
            local = hub.process_list("local")
            answers = await asyncio.gather(*(hub.call(pid, "mode") for _, pid in local))
            modes = {cid: a["mode"] for (cid, _), a in zip(local, answers, strict=True)}
            reply(cmd, "modes", modes=modes)
        case "versions":  # registry partition versions this node holds (a diagnostic)
            parts = hub.runtime.registry.partitions
            reply(cmd, "versions", versions={n: [p.boot_id, p.version] for n, p in parts.items()})
        case "locked":
            reply(cmd, "locked", locked=hub.is_locked(), partitioned=hub.is_partitioned())
        case "try_start":  # a start that may be refused: the error, by name
            try:
                specs = await make_specs(cmd)
                res = await hub.start_children(specs, timeout=cmd.get("timeout", 10))
            except HubError as exc:
                reply(cmd, "tried", error=describe_error(exc))
            else:
                reply(cmd, "tried", error=None, ok=len(res.started))
        case "cast":
            for cid in cmd["ids"]:
                await hub.cast(cid, cmd["message"])
            reply(cmd, "ok", cmd="cast", n=len(cmd["ids"]))
        case "drain":
            res = await hub.drain()
            reply(cmd, "drained", ok=len(res.stopped), errors=len(res.errors))
        case "hub_stop":
            await hub.stop()
            reply(cmd, "hub_stopped")
        case "memory":
            gc.collect()
            traced = tracemalloc.get_traced_memory()[0] if tracemalloc.is_tracing() else None
            rss = vm_rss()
            trimmed = vm_rss() if malloc_trim() else None
            top = []
            if cmd.get("top") and tracemalloc.is_tracing():  # the largest allocation sites
                stats = tracemalloc.take_snapshot().statistics("lineno")[: cmd["top"]]
                top = [[str(st.traceback[0]), st.size, st.count] for st in stats]
            reply(cmd, "memory", rss=rss, rss_trimmed=trimmed, traced=traced, top=top)
        case "watch" if "total" in cmd:  # no ids: the registry holds this many children
            task = asyncio.create_task(watch_total(hub, int(cmd["total"]), cmd))
            WATCHES.add(task)
            task.add_done_callback(WATCHES.discard)
            reply(cmd, "ok", cmd="watch")
        case "watch":
            ids = cmd.get("ids") or [f"{cmd.get('prefix', 'c')}{i}" for i in range(cmd["count"])]
            task = asyncio.create_task(watch(hub, ids, cmd.get("without"), cmd, cmd.get("on")))
            WATCHES.add(task)
            task.add_done_callback(WATCHES.discard)
            reply(cmd, "ok", cmd="watch")
        case other:
            raise ValueError(f"unknown command {other!r}")


WATCHES: set[asyncio.Task[None]] = set()


async def watch(
    hub: Hub,
    ids: list[str],
    without: str | None,
    cmd: dict[str, Any],
    on: list[str] | None = None,
) -> None:
    """Report the moment this node's registry shows every child of ``ids`` somewhere (and,
    with ``without``, none of them on that node; with ``on``, exactly once, on its owner in a
    ring of those nodes).

    It reads what ``hub.lookup`` reads (the registry's partitions) without building the pids
    ``lookup`` returns: a probe that costs microseconds per id would take a good part of the
    CPU of a node that starts 100,000 children, and one that walks the ids a few thousand at a
    time, a turn of the event loop apart, sees the moment late on a busy node (0.4-0.5 s after
    the last change, measured at the end of a 100,000-child failover). Every 5 ms it counts the
    entries of the partitions (those of ``without`` aside): only when they are at least as many
    as ``ids`` does it check every id at once, with set operations on the partitions' keys,
    and after a check that failed, not again within 50 ms (a registry that holds other
    children too passes the count and fails the check)."""
    count = len(ids)
    partitions = hub.runtime.registry.partitions
    wanted = set(ids)
    owned: dict[str, set[str]] | None = None
    if on:
        ring = ConsistentHashing(nodes=on)
        owned = {node: set() for node in on}
        for i, cid in enumerate(ids):
            owned[ring.belongs_to(cid)[0]].add(cid)
            if i % 5_000 == 4_999:
                await asyncio.sleep(0)

    def enough() -> bool:
        return sum(len(p.entries) for n, p in partitions.items() if n != without) >= count

    def all_shown() -> bool:
        if owned is not None:  # each on its owner, and on no other node
            for node, part in partitions.items():
                mine = owned.get(node, set())
                keys = part.entries.keys()
                if not mine <= keys or not (keys & wanted) <= mine:
                    return False
            return all(node in partitions or not mine for node, mine in owned.items())
        present: set[str] = set()
        for node, part in partitions.items():
            if node == without:
                if not wanted.isdisjoint(part.entries):
                    return False
            else:
                present.update(part.entries)
        return wanted <= present

    loop = asyncio.get_running_loop()
    retry_at = 0.0
    while True:
        if enough() and loop.time() >= retry_at:
            if all_shown():
                break
            retry_at = loop.time() + 0.05
        await asyncio.sleep(0.005)  # the moment is known within 5 ms
    reply(cmd, "reached", count=count)


async def watch_total(hub: Hub, total: int, cmd: dict[str, Any]) -> None:
    """Report the moment this node's registry holds ``total`` children (it allocates nothing
    per child: memory measurements use it)."""
    while len(hub.runtime.registry) < total:  # noqa: ASYNC110 (a probe: no event to wait on)
        await asyncio.sleep(0.01)
    reply(cmd, "reached", count=total)


async def run_hub_command(hub: Hub | None, cmd: dict[str, Any]) -> None:
    try:
        await hub_command(hub, cmd)
    except Exception as exc:
        logging.getLogger("nodeproc").exception("command %s failed", cmd.get("cmd"))
        reply(cmd, "error", cmd=cmd.get("cmd"), **describe_error(exc))


COMMANDS: set[asyncio.Task[None]] = set()


async def commands(node: Node, stop: asyncio.Event, hub: Hub | None) -> None:
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=64 * 1024 * 1024)
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := await reader.readline():
        cmd = json.loads(line)
        if cmd["cmd"] == "leave":
            break
        try:
            node_command(node, hub, cmd)
        except Exception as exc:
            logging.getLogger("nodeproc").exception("command %s failed", cmd.get("cmd"))
            reply(cmd, "error", cmd=cmd.get("cmd"), **describe_error(exc))
    stop.set()


def node_command(node: Node, hub: Hub | None, cmd: dict[str, Any]) -> None:
    """Membership and fault commands (answered at once); hub commands get their own task."""
    faults = node.faults
    assert faults is not None
    match cmd["cmd"]:
        case "members":
            members = [  # with the hubs that drain there
                [m.node.name, m.state.name, m.incarnation, m.node.boot_id, m.meta.get("draining")]
                for m in node.members()
            ]
            reply(cmd, "members", members=members)
        case "partition":
            faults.partition(cmd["groups"])
            reply(cmd, "ok", cmd="partition")
        case "heal":
            faults.partition(None)
            reply(cmd, "ok", cmd="heal")
        case "drop":
            faults.set_drop(cmd["p"])
            reply(cmd, "ok", cmd="drop")
        case "delay":
            faults.set_delay(cmd["low"], cmd["high"])
            reply(cmd, "ok", cmd="delay")
        case "stats":
            reply(cmd, "stats", **node.stats)
        case _:
            task = asyncio.create_task(run_hub_command(hub, cmd))
            COMMANDS.add(task)
            task.add_done_callback(COMMANDS.discard)


def hub_hooks(holder: list[Hub]) -> dict[Hook | str, list[HookHandler]]:
    """The hooks every hub of a node process reports on stdout."""

    def report(ev: str, data: Any) -> None:
        emit(ev="hook", hook=ev, data=data)

    hooks: dict[Hook | str, list[HookHandler]] = {
        e: [HookHandler(f"report_{e}", report, [str(e), WILDCARD])]
        for e in (
            Hook.PRE_CLUSTER_JOIN,
            Hook.POST_CLUSTER_JOIN,
            Hook.PRE_CLUSTER_LEAVE,
            Hook.POST_CLUSTER_LEAVE,
        )
    }

    def synchronized(data: Any) -> None:
        emit(ev="synchronized", entries=len(holder[0].runtime.registry) if holder else None)

    hooks[Hook.PROCESS_STARTUPS] = [HookHandler("count", count_startups)]
    hooks[Hook.CHILDREN_MIGRATED] = [
        HookHandler(
            "migrated",
            lambda d: emit(ev="migrated", n=len(d.specs), ids=[s.id for s in d.specs][:2000]),
        )
    ]
    hooks[Hook.FORWARDED_MIGRATION] = [
        HookHandler(
            "forwarded",
            lambda d: emit(ev="forwarded", to=[[n, len(ids)] for n, ids in d]),
        )
    ]
    hooks[Hook.CHILD_BURIED] = [
        HookHandler(
            "buried",
            lambda d: emit(ev="buried_hook", id=d.child_id, attempts=d.attempts, error=d.error),
        )
    ]
    hooks[Hook.CHILD_CONFLICT] = [
        HookHandler(
            "conflict",
            lambda d: emit(ev="child_conflict", id=d.child_id, winner=d.winner, loser=d.loser),
        )
    ]
    hooks[Hook.CLUSTER_SYNCHRONIZED] = [HookHandler("synchronized", synchronized)]
    hooks[Hook.MIGRATION_FAILED] = [
        HookHandler(
            "migration_failed",
            lambda d: emit(ev="migration_failed", id=d.child_id, to=d.to_node, reason=d.reason),
        )
    ]
    for event in (Hook.QUORUM_LOST, Hook.QUORUM_REGAINED):
        hooks[event] = [
            HookHandler(
                f"report_{event}",
                lambda ev, d: emit(ev=ev, locked=d.locked, info=d.info),
                [str(event), WILDCARD],
            )
        ]
    hooks[Hook.CHILD_MODE_CHANGED] = [
        HookHandler(
            "mode_changed",
            lambda d: emit(ev="mode_changed", id=d.child_id, old=d.old, new=d.new),
        )
    ]
    hooks[Hook.HANDOVER_DELIVERED] = [
        HookHandler(
            "handover_delivered",
            lambda d: emit(ev="handover_delivered", id=d.child_id, source=d.from_node),
        )
    ]
    hooks[Hook.HANDOVER_SKIPPED] = [
        HookHandler(
            "handover_skipped",
            lambda d: emit(ev="handover_skipped", id=d.child_id, reason=d.reason),
        )
    ]
    return hooks


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--seeds", default="")
    parser.add_argument("--cookie", default=None)
    parser.add_argument("--preset", default="local")
    parser.add_argument("--hub", default=None, help="also run a hub with this id")
    parser.add_argument("--reconcile", type=float, default=None, help="reconcile_interval")
    parser.add_argument("--guided", action="store_true", help="distribution=Guided()")
    parser.add_argument(
        "--migration", default=None, help="cold | hot | hot:<retention> (migration strategy)"
    )
    parser.add_argument("--redundancy", default=None, help="<factor>[:passive] (Replication)")
    parser.add_argument(
        "--partition", default=None, help="static:<size> | majority | dynamic:<threshold>:<window>"
    )
    parser.add_argument("--tracemalloc", action="store_true", help="trace allocations from start")
    parser.add_argument("--log", default="WARNING")
    parser.add_argument("--tuned-gc", action="store_true", help="hub.tune_gc() at start")
    args = parser.parse_args()
    if args.tracemalloc:
        tracemalloc.start()
    if args.tuned_gc:
        tune_gc()
    logging.basicConfig(  # the node's name in every line: the nodes of a test share stderr
        level=args.log,
        stream=sys.stderr,
        format=f"%(asctime)s [{args.name}] %(name)s %(levelname)s %(message)s",
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
        holder: list[Hub] = []
        options: dict[str, Any] = {}
        if args.reconcile is not None:
            options["reconcile_interval"] = args.reconcile
        if args.guided:
            options["distribution"] = Guided()
        if args.migration:
            kind, _, retention = args.migration.partition(":")
            options["migration"] = (
                HotSwap(retention=float(retention or 5.0)) if kind == "hot" else ColdSwap()
            )
        if args.redundancy:
            factor, _, model = args.redundancy.partition(":")
            options["redundancy"] = Replication(
                factor=int(factor), replication_model="passive" if model else "active"
            )
        if args.partition:
            kind, *params = args.partition.split(":")
            options["partition"] = {
                "static": lambda: StaticQuorum(int(params[0])),
                "majority": MajorityQuorum,
                "dynamic": lambda: DynamicQuorum(float(params[0]), float(params[1])),
            }[kind]()
        hub = Hub(args.hub, endpoint=node, hooks=hub_hooks(holder), **options)
        holder.append(hub)
        await hub.start()
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
