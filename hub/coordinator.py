"""Cluster coordination of one hub: placement, registry sync, routing, failover, migration.

The coordinator turns the hub's local runtime into a distributed one. It runs on every node
and needs no leader: every decision follows from this node's view of the hub's members
(DESIGN principle 2), and every node only ever writes its own registry partition
(principle 3).

* **Placement**: ``distribution.belongs_to(child_id, replication_factor)`` over the live members.
  The ring is kept current by the strategy's own hooks on ``PRE_CLUSTER_JOIN/LEAVE``.
* **Registry sync** (PubSub): local writes are coalesced for ``batch_window`` and broadcast as
  versioned deltas over the peer links; a gap is answered with a snapshot; a newcomer gets a
  snapshot of every partition owner; every ``anti_entropy_interval`` each node announces its
  partition's version so a replica that fell behind catches up.
* **Routing**: starts go to each child's owners (one batch per node, a timeout per node); a
  node that is no longer the owner forwards (``FORWARDED_MIGRATION``); stops, casts and calls
  go where the registry says the child runs.
* **Failover**: when a member fails, each survivor starts, from the dead node's partition, the
  children it now owns (``temporary`` ones are not restarted).
* **Migration** (ColdSwap): a child whose owner changed is stopped here, then started on its new
  owner with its spec (``CHILDREN_MIGRATED`` there); at most ``max_concurrent`` at a time. If the
  new owner refuses, the child is started here again: a child is never dropped.
* **Reconciliation** (after every topology change and every ``reconcile_interval``): a local
  copy that is not on an owner migrates to its owner, or stops if an owner (or, when no owner
  runs it, a lower-named node) already runs it (``CHILD_CONFLICT``).
* **Graceful leave / drain**: every local child is handed to its owner in the ring without this
  node (stop here, then start there), before the node leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from .cluster.links import LinkError
from .cluster.messages import NodeId
from .errors import (
    AlreadyStarted,
    CallFailed,
    HubError,
    InvalidSpec,
    NotDelivered,
    NotFound,
    StartFailed,
    Timeout,
)
from .events import (
    ChildConflict,
    ChildrenMigrated,
    Hook,
    PidInserted,
    PidRemoved,
    PidUpdate,
    Redistribution,
)
from .pid import Pid
from .process import Call
from .registry import Change, Delta, Entry, Snapshot
from .spec import ChildSpec

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["Coordinator", "error_from_wire", "error_to_wire"]

logger = logging.getLogger(__name__)

MIGRATION_BATCH = 500
TRANSIT_WINDOW = 5.0  # seconds a message waits for a child that just moved or lost its node
MAX_IN_TRANSIT = 100_000


def error_to_wire(exc: HubError) -> list[Any]:
    return [type(exc).__name__, str(exc)]


def error_from_wire(target: Any, kind: str, message: str) -> HubError:
    """The local exception for an error (type name ``kind``) that a peer reported about
    ``target``: start and stop results, and the errors of remote requests."""
    if kind == "NotFound":
        return NotFound(target)
    if kind == "AlreadyStarted":
        return AlreadyStarted(target, message)
    if kind == "StartFailed":
        return StartFailed(target, message)
    if kind == "NotDelivered":
        return NotDelivered(target, message)
    if kind == "CallFailed":
        return CallFailed(target, message)
    if kind == "Timeout":
        return Timeout(message)
    if kind == "InvalidSpec":
        return InvalidSpec(message)
    return HubError(message)


def _entry_to_wire(entry: Entry) -> list[Any]:
    return [entry.spec.to_wire(), entry.pid.to_wire(), dict(entry.metadata)]


def _entry_from_wire(data: Any) -> Entry:
    if not isinstance(data, list) or len(data) != 3 or not isinstance(data[2], dict):
        raise ValueError("malformed registry entry")
    metadata = MappingProxyType(data[2]) if data[2] else MappingProxyType({})
    return Entry(ChildSpec.from_wire(data[0]), Pid.from_wire(data[1]), metadata)


def _delta_to_wire(delta: Delta) -> list[Any]:
    ops = [[cid, None if e is None else _entry_to_wire(e)] for cid, e in delta.ops]
    return [delta.node, delta.boot_id, delta.base, delta.version, ops]


def _snapshot_to_wire(snapshot: Snapshot) -> list[Any]:
    entries = [_entry_to_wire(e) for e in snapshot.entries]
    return [snapshot.node, snapshot.boot_id, snapshot.version, entries]


def _snapshot_from_wire(data: Any) -> Snapshot:
    node, boot, version, entries = data
    return Snapshot(node, boot, int(version), tuple(_entry_from_wire(e) for e in entries))


def _delta_from_wire(data: Any) -> Delta:
    node, boot, base, version, ops = data
    return Delta(
        node,
        boot,
        int(base),
        int(version),
        tuple((cid, None if e is None else _entry_from_wire(e)) for cid, e in ops),
    )


class Coordinator:
    """The distributed half of a :class:`~hub.Hub` (created by the hub when it has an endpoint)."""

    def __init__(self, hub: Hub, strategies: Mapping[str, Any], reconcile_interval: float) -> None:
        self.hub = hub
        self.distribution = strategies["distribution"]
        self.redundancy = strategies["redundancy"]
        self.migration = strategies["migration"]
        self.sync = strategies["synchronization"]
        self.partition = strategies["partition"]
        self.reconcile_interval = reconcile_interval
        self._dirty = asyncio.Event()
        self._published = 0
        self._behind: set[str] = set()  # peers that missed a delta: they get a snapshot next
        self._moving = asyncio.Semaphore(self.migration.max_concurrent)
        self._reconcile_lock = asyncio.Lock()
        self._in_transit: dict[str, float] = {}  # child id -> until when a lookup may wait
        self._registry_changed = asyncio.Event()

    # -- children in transit -------------------------------------------------------------------

    def mark_moving(self, child_ids: Iterable[str], window: float = TRANSIT_WINDOW) -> None:
        """Messages to these ids wait (bounded) for them to reappear instead of failing."""
        until = asyncio.get_running_loop().time() + window
        transit = self._in_transit
        for cid in child_ids:
            transit[cid] = until
        if len(transit) > MAX_IN_TRANSIT:
            now = asyncio.get_running_loop().time()
            for cid in [c for c, t in transit.items() if t < now]:
                del transit[cid]
            while len(transit) > MAX_IN_TRANSIT:
                transit.pop(next(iter(transit)))

    def moving(self, child_id: str) -> bool:
        until = self._in_transit.get(child_id)
        return until is not None and until > asyncio.get_running_loop().time()

    def route(self, child_id: str) -> str:
        """The node to send a message for ``child_id`` to (the primary owner that runs it,
        else any node that runs it); raises :class:`NotFound`."""
        where = [n for n, _ in self.hub._registry.lookup(child_id)]
        if not where:
            raise NotFound(child_id)
        if len(where) == 1:
            return where[0]
        return next((o for o in self.owners(child_id) if o in where), where[0])

    @property
    def rf(self) -> int:
        return int(self.redundancy.replication_factor)

    def owners(self, child_id: str) -> list[str]:
        return list(self.distribution.belongs_to(child_id, self.rf))

    # -- lifecycle -----------------------------------------------------------------------------

    def attach(self) -> None:
        hub = self.hub
        self.distribution.attach(hub.hooks, hub.node)
        self.partition.attach(hub.hooks, hub.node)
        assert hub.endpoint is not None
        hub.endpoint.links.register(hub.hub_id, self._on_frame)
        hub._own(self._publisher(), "registry-publisher")
        hub._own(self._background(), "anti-entropy+reconcile")

    def detach(self) -> None:
        if self.hub.endpoint is not None:
            self.hub.endpoint.links.unregister(self.hub.hub_id)

    # -- registry sync -------------------------------------------------------------------------

    def local_changed(self) -> None:
        self._dirty.set()

    async def _publisher(self) -> None:
        """Coalesce local writes for ``batch_window``, then send one delta to every member; a
        member that missed one gets a snapshot instead (retried every second until it lands)."""
        registry = self.hub._registry
        while True:
            if self._behind:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._dirty.wait()
            else:
                await self._dirty.wait()
            await asyncio.sleep(self.sync.batch_window)
            self._dirty.clear()
            delta = registry.local.changes_since(self._published)
            snapshot = registry.local.snapshot() if delta is None or self._behind else None
            version = delta.version if delta is not None else registry.local.version
            peers = self.hub.nodes()
            self._behind &= set(peers)
            wire_delta = _delta_to_wire(delta) if delta is not None and delta.ops else None
            wire_snapshot = _snapshot_to_wire(snapshot) if snapshot is not None else None
            await asyncio.gather(
                *(
                    self._publish_to(peer, wire_delta, wire_snapshot, delta is None)
                    for peer in peers
                )
            )
            self._published = version

    async def _publish_to(
        self, peer: str, delta: Any, snapshot: Any, snapshot_for_all: bool
    ) -> None:
        if snapshot is not None and (snapshot_for_all or peer in self._behind):
            if await self._send(peer, "snapshot", snapshot):
                self._behind.discard(peer)
        elif delta is not None and not await self._send(peer, "delta", delta):
            self._behind.add(peer)

    async def _send(self, peer: str, kind: str, payload: Any) -> bool:
        assert self.hub.endpoint is not None
        try:
            await self.hub.endpoint.links.send(peer, self.hub.hub_id, kind, payload, timeout=5.0)
        except (LinkError, NotFound, Timeout) as exc:
            logger.debug("hub %s: %s to %s not sent: %s", self.hub.hub_id, kind, peer, exc)
            return False
        return True

    async def _request(self, peer: str, kind: str, payload: Any, timeout: float) -> Any:
        assert self.hub.endpoint is not None
        return await self.hub.endpoint.links.request(
            peer, self.hub.hub_id, kind, payload, timeout=timeout
        )

    async def until_visible(self, placed: Iterable[tuple[str, Pid]], deadline: float) -> None:
        """Wait (until ``deadline``, loop time) until this node's registry shows each
        ``(child_id, pid)``: a caller reads its own writes after a remote start."""
        registry = self.hub._registry
        pending = [(cid, pid) for cid, pid in placed if (pid.node, pid) not in registry.lookup(cid)]
        loop = asyncio.get_running_loop()
        while pending and loop.time() < deadline:
            self._registry_changed.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._registry_changed.wait()
            except TimeoutError:
                return
            pending = [
                (cid, pid) for cid, pid in pending if (pid.node, pid) not in registry.lookup(cid)
            ]

    def _apply_changes(self, changes: Iterable[Change]) -> None:
        self._registry_changed.set()
        events = self.hub._events
        for change in changes:
            if change.kind != "removed":
                assert change.pid is not None
                if change.kind == "replaced":
                    update = PidUpdate(change.node, change.child_id, change.pid)
                    events.emit(Hook.CHILD_PROCESS_PID_UPDATE, update)
                events.emit(
                    Hook.REGISTRY_PID_INSERTED,
                    PidInserted(change.child_id, [(change.node, change.pid)]),
                )
            else:
                self.mark_moving((change.child_id,))
                events.emit(Hook.REGISTRY_PID_REMOVED, PidRemoved(change.child_id, [change.node]))

    async def _catch_up(self, peer: str) -> None:
        try:
            data = await self._request(peer, "get_snapshot", None, timeout=10.0)
            snapshot = _snapshot_from_wire(data)
        except (HubError, ValueError, TypeError) as exc:
            logger.warning("hub %s: no snapshot from %s: %s", self.hub.hub_id, peer, exc)
            return
        self._apply_changes(self.hub._registry.load(snapshot))

    async def send_snapshot(self, peer: str) -> None:
        await self._send(peer, "snapshot", _snapshot_to_wire(self.hub._registry.local.snapshot()))

    async def _background(self) -> None:
        """Anti-entropy announcements every ``anti_entropy_interval`` and reconciliation every
        ``reconcile_interval``, each on its own schedule."""
        loop = asyncio.get_running_loop()
        announce_at = loop.time() + self.sync.anti_entropy_interval
        reconcile_at = loop.time() + self.reconcile_interval
        while True:
            await asyncio.sleep(max(0.0, min(announce_at, reconcile_at) - loop.time()))
            now = loop.time()
            if now >= announce_at:
                announce_at = now + self.sync.anti_entropy_interval
                local = self.hub._registry.local
                for peer in self.hub.nodes():
                    await self._send(peer, "version", [local.boot_id, local.version])
            if now >= reconcile_at:
                reconcile_at = now + self.reconcile_interval
                await self.reconcile()

    # -- frames from peers ---------------------------------------------------------------------

    async def _on_frame(self, peer: NodeId, kind: str, payload: Any) -> Any:
        hub = self.hub
        registry = hub._registry
        if kind == "delta":
            try:
                delta = _delta_from_wire(payload)
            except (ValueError, TypeError) as exc:
                raise InvalidSpec(f"malformed delta: {exc}") from None
            changes = registry.apply(delta)
            if changes is None:
                await self._catch_up(peer.name)
            else:
                self._apply_changes(changes)
            return None
        if kind == "snapshot":
            self._apply_changes(registry.load(_snapshot_from_wire(payload)))
            return None
        if kind == "get_snapshot":
            return _snapshot_to_wire(registry.local.snapshot())
        if kind == "version":
            boot, version = payload
            part = registry.partitions.get(peer.name)
            if part is None or part.boot_id != boot or part.version < version:
                await self._catch_up(peer.name)
            return None
        if kind in ("start", "migrate"):
            return await self._serve_start(peer, kind, payload)
        if kind == "stop":
            ids, reason = payload
            result = await hub._stop_local(list(ids), reason)
            return [[cid, error_to_wire(exc)] for cid, exc in result.errors]
        if kind == "cast":
            target, message = payload
            self._local_ctx(target).deliver(message)
            return None
        if kind == "call":
            target, message, timeout = payload
            ctx = self._local_ctx(target)
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            ctx.deliver(Call(message, future))
            try:
                async with asyncio.timeout(float(timeout)):
                    return await future
            except TimeoutError:
                raise Timeout(f"call to {target} got no reply within {timeout}s") from None
        raise InvalidSpec(f"unknown frame kind {kind!r}")

    def _local_ctx(self, target: Any) -> Any:
        """The local instance a remote message is for; a child that just moved away answers
        :class:`NotDelivered` so that the sender retries where it went."""
        local = Pid.from_wire(target) if isinstance(target, list) else str(target)
        try:
            return self.hub._target(local)
        except NotFound:
            if isinstance(local, str) and self.moving(local):
                raise NotDelivered(local, "moved away from this node") from None
            raise

    async def _serve_start(self, peer: NodeId, kind: str, payload: Any) -> list[Any]:
        hub = self.hub
        specs = [ChildSpec.from_wire(s) for s in payload["specs"]]
        raw_meta = payload.get("metadata") or {}
        if isinstance(raw_meta, list):  # one mapping per spec (migrations)
            if len(raw_meta) != len(specs):
                raise InvalidSpec("metadata list does not match the specs")
            meta_of = {
                s.id: MappingProxyType(dict(m)) for s, m in zip(specs, raw_meta, strict=True)
            }
        else:
            shared = MappingProxyType(dict(raw_meta))
            meta_of = {s.id: shared for s in specs}
        timeout = float(payload.get("timeout", hub._start_timeout))
        mine: list[ChildSpec] = []
        forward: dict[str, list[ChildSpec]] = defaultdict(list)
        for spec in specs:
            owners = self.owners(spec.id)
            if kind == "migrate" or hub.node in owners:
                mine.append(spec)
            else:
                forward[owners[0]].append(spec)
        out: list[Any] = []
        if forward:
            hub._events.emit(
                Hook.FORWARDED_MIGRATION,
                [(node, [s.id for s in group]) for node, group in forward.items()],
            )
            for node, group in forward.items():
                metas = [meta_of[s.id] for s in group]
                forwarded = await self.start_remote(node, group, metas, timeout)
                out += [
                    [cid, "ok", pid.to_wire()]
                    if isinstance(pid, Pid)
                    else [cid, "error", *error_to_wire(pid)]
                    for cid, pid in forwarded
                ]
        if mine:
            results = await hub._start_local([(s, meta_of[s.id], None) for s in mine], timeout)
            for spec in mine:
                outcome = results[spec.id]
                if isinstance(outcome, Pid):
                    out.append([spec.id, "ok", outcome.to_wire()])
                else:
                    out.append([spec.id, "error", *error_to_wire(outcome)])
            if kind == "migrate":
                moved = [s for s in mine if isinstance(results[s.id], Pid)]
                hub._events.emit(Hook.CHILDREN_MIGRATED, ChildrenMigrated(hub.node, moved))
        return out

    # -- routing -------------------------------------------------------------------------------

    def plan_start(self, specs: Iterable[ChildSpec]) -> dict[str, list[ChildSpec]]:
        """Group specs by owner node (each spec once per owner under replication)."""
        groups: dict[str, list[ChildSpec]] = defaultdict(list)
        for spec in specs:
            for node in self.owners(spec.id):
                groups[node].append(spec)
        return groups

    async def start_remote(
        self,
        node: str,
        specs: list[ChildSpec],
        metadata: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        timeout: float,
        kind: str = "start",
    ) -> list[tuple[str, Pid | HubError]]:
        """Ask ``node`` to start ``specs``; ``metadata`` is shared, or one mapping per spec."""
        meta_wire: Any = (
            dict(metadata) if isinstance(metadata, Mapping) else [dict(m) for m in metadata]
        )
        payload = {"specs": [s.to_wire() for s in specs], "metadata": meta_wire, "timeout": timeout}
        try:
            reply = await self._request(node, kind, payload, timeout=timeout + 1.0)
        except (HubError, LinkError) as exc:
            failure = exc if isinstance(exc, Timeout) else HubError(f"{node}: {exc}")
            return [(s.id, failure) for s in specs]
        results: list[tuple[str, Pid | HubError]] = []
        for item in reply:
            cid, status, *rest = item
            results.append(
                (cid, Pid.from_wire(rest[0]) if status == "ok" else error_from_wire(cid, *rest))
            )
        return results

    async def stop_remote(
        self, node: str, ids: list[str], reason: Any
    ) -> list[tuple[str, HubError]]:
        try:
            reply = await self._request(node, "stop", [ids, reason], timeout=30.0)
        except (HubError, LinkError) as exc:
            return [(cid, HubError(f"{node}: {exc}")) for cid in ids]
        return [(cid, error_from_wire(cid, *err)) for cid, err in reply]

    async def send_message(self, node: str, target: str | Pid, message: Any) -> None:
        """A remote cast: one-way and in order on the link (no round trip per message)."""
        wire = target.to_wire() if isinstance(target, Pid) else target
        assert self.hub.endpoint is not None
        await self.hub.endpoint.links.send(node, self.hub.hub_id, "cast", [wire, message])

    async def call(self, node: str, target: str | Pid, message: Any, timeout: float) -> Any:
        wire = target.to_wire() if isinstance(target, Pid) else target
        return await self._request(node, "call", [wire, message, timeout], timeout=timeout)

    # -- topology ------------------------------------------------------------------------------

    async def node_joined(self, node: str) -> None:
        hooks = self.hub.hooks
        await hooks.dispatch(Hook.PRE_NODES_REDISTRIBUTION, Redistribution("nodeup", node))
        await self.send_snapshot(node)
        await self.reconcile()
        await hooks.dispatch(Hook.POST_NODES_REDISTRIBUTION, Redistribution("nodeup", node))

    async def node_left(self, node: str) -> None:
        hub = self.hub
        await hub.hooks.dispatch(Hook.PRE_NODES_REDISTRIBUTION, Redistribution("nodedown", node))
        part = hub._registry.partitions.get(node)
        orphans = list(part.entries.values()) if part is not None else []
        self._apply_changes(hub._registry.drop(node))
        supervisor = hub._supervisor
        todo = [
            (e.spec, e.metadata, None)
            for e in orphans
            if e.spec.restart != "temporary"
            and hub.node in self.owners(e.spec.id)
            and supervisor.get(e.spec.id) is None
        ]
        if todo:
            results = await hub._start_local(todo, hub._start_timeout)
            failed = {cid: r for cid, r in results.items() if not isinstance(r, Pid)}
            logger.info(
                "hub %s: restarted %d children of %s here%s",
                hub.hub_id,
                len(todo) - len(failed),
                node,
                f"; {len(failed)} failed" if failed else "",
            )
            for cid, err in failed.items():
                logger.error("hub %s: could not restart %s from %s: %s", hub.hub_id, cid, node, err)
        await hub.hooks.dispatch(Hook.POST_NODES_REDISTRIBUTION, Redistribution("nodedown", node))

    # -- reconciliation and migration ----------------------------------------------------------

    async def reconcile(self) -> None:
        """Move or stop every local child that is not on one of its owners."""
        async with self._reconcile_lock:
            hub = self.hub
            me = hub.node
            live = set(hub.nodes(include_local=True))
            moves: dict[str, list[str]] = defaultdict(list)
            stops: list[str] = []
            conflicts: list[ChildConflict] = []
            for cid in list(hub._supervisor.children):
                owners = self.owners(cid)
                if me in owners:
                    continue
                elsewhere = {n for n, _ in hub._registry.lookup(cid) if n != me and n in live}
                winner = next((o for o in owners if o in elsewhere), None)
                if winner is None and elsewhere and min(elsewhere) < me:
                    winner = min(elsewhere)
                if winner is not None:
                    stops.append(cid)
                    conflicts.append(ChildConflict(cid, winner, me))
                else:
                    moves[owners[0]].append(cid)
            if stops:
                for conflict in conflicts:  # decided: reported before the copy stops
                    logger.warning(
                        "hub %s: %s also runs on %s; stopping the copy here",
                        hub.hub_id,
                        conflict.child_id,
                        conflict.winner,
                    )
                    hub._events.emit(Hook.CHILD_CONFLICT, conflict)
                await hub._stop_local(stops, "conflict")
            if moves:
                await self.migrate(moves)

    async def migrate(self, moves: Mapping[str, list[str]]) -> None:
        """ColdSwap: stop each child here, then start it on its target with its spec."""
        hub = self.hub
        if hub.hooks.has_handlers(Hook.PRE_CHILDREN_REDISTRIBUTION):
            plan = [(cid, hub.node, target) for target, ids in moves.items() for cid in ids]
            await hub.hooks.dispatch(Hook.PRE_CHILDREN_REDISTRIBUTION, plan)
        batches = [
            (target, ids[i : i + MIGRATION_BATCH])
            for target, ids in moves.items()
            for i in range(0, len(ids), MIGRATION_BATCH)
        ]
        await asyncio.gather(*(self._migrate_batch(target, ids) for target, ids in batches))

    async def _migrate_batch(self, target: str, ids: list[str]) -> None:
        hub = self.hub
        supervisor = hub._supervisor
        async with self._moving:
            children = [supervisor.get(cid) for cid in ids]
            entries = [(c.spec, c.metadata) for c in children if c is not None]
            if not entries:
                return
            self.mark_moving(spec.id for spec, _ in entries)
            await hub._stop_local([spec.id for spec, _ in entries], "migrate")
            specs = [spec for spec, _ in entries]
            metas = [meta for _, meta in entries]
            results = dict(
                await self.start_remote(target, specs, metas, hub._start_timeout, "migrate")
            )
            lost = [(s, m, None) for s, m in entries if not isinstance(results.get(s.id), Pid)]
            if lost:  # never drop a child: take it back, reconciliation retries later
                logger.error(
                    "hub %s: %d children could not move to %s; restarting them here",
                    hub.hub_id,
                    len(lost),
                    target,
                )
                await hub._start_local(lost, hub._start_timeout)

    async def hand_off(self) -> None:
        """Give every local child to its owner in the ring without this node (graceful leave)."""
        hub = self.hub
        me = hub.node
        moves: dict[str, list[str]] = defaultdict(list)
        for cid in list(hub._supervisor.children):
            owners = [n for n in self.distribution.belongs_to(cid, self.rf + 1) if n != me]
            if owners:
                moves[owners[0]].append(cid)
        if moves:
            logger.info(
                "hub %s: handing %d children to %d nodes before leaving",
                hub.hub_id,
                sum(map(len, moves.values())),
                len(moves),
            )
            await self.migrate(moves)
