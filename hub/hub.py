"""The :class:`Hub`: the object an application holds.

It wires the local supervisor, the registry and the hook manager together and exposes the
public API (start/stop children, lookups, messaging). Reads are local and need no network.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import socket
from collections.abc import Callable, Iterable, Mapping, Sequence
from ssl import SSLContext
from types import MappingProxyType, TracebackType
from typing import Any, Literal

from .cluster.links import RemoteError
from .cluster.membership import Member, MemberEvent
from .cluster.messages import State
from .cluster.node import Node, NodeEvent
from .coordinator import Coordinator, error_from_wire
from .errors import (
    AlreadyStarted,
    HubClosed,
    HubError,
    InvalidSpec,
    NotDelivered,
    NotFound,
    Timeout,
)
from .events import (
    ChildBuried,
    ChildCrashed,
    ChildStarted,
    ChildStopped,
    Hook,
    PidInserted,
    PidRemoved,
    PidUpdate,
)
from .events_pump import EventPump
from .hooks import HookHandler, HookManager
from .pid import Pid
from .process import Call, ProcessContext
from .registry import Entry, Registry
from .spec import ChildSpec, RegistryRecord, StartResult, StopResult
from .supervisor import Backoff, Buried, Child, RemovalKind, Supervisor

__all__ = ["Hub"]

logger = logging.getLogger(__name__)

_EMPTY: Mapping[str, Any] = MappingProxyType({})
HookConfig = Mapping[Hook | str, HookHandler | Sequence[HookHandler]]


class Hub:
    """A process hub on this node.

    Use it as ``async with Hub("orders") as hub: ...`` or with ``await hub.start()`` /
    ``await hub.stop()``. A hub is started once; after :meth:`stop` it stays closed.
    """

    def __init__(
        self,
        hub_id: str,
        *,
        node: str | None = None,
        host: str | None = "127.0.0.1",
        port: int = 0,
        seeds: Iterable[str] = (),
        cookie: str | bytes | None = None,
        preset: str = "lan",
        cluster: str = "processhub",
        ssl: SSLContext | None = None,
        client_ssl: SSLContext | None = None,
        endpoint: Node | None = None,
        distribution: Any = None,
        redundancy: Any = None,
        migration: Any = None,
        synchronization: Any = None,
        partition: Any = None,
        reconcile_interval: float = 5.0,
        hooks: HookConfig | None = None,
        child_specs: Iterable[ChildSpec] = (),
        mailbox_limit: int = 10_000,
        restart_backoff: Backoff | None = None,
        start_timeout: float = 5.0,
        call_timeout: float = 5.0,
        event_queue_limit: int = 100_000,
    ) -> None:
        if not isinstance(hub_id, str) or not hub_id:
            raise InvalidSpec(f"hub_id must be a non-empty string, got {hub_id!r}")
        if node is not None and (not isinstance(node, str) or not node):
            raise InvalidSpec(f"node must be a non-empty string, got {node!r}")
        for name, value in (("start_timeout", start_timeout), ("call_timeout", call_timeout)):
            if not isinstance(value, int | float) or value <= 0:
                raise InvalidSpec(f"{name} must be a positive number, got {value!r}")
        if type(mailbox_limit) is not int or mailbox_limit < 1:
            raise InvalidSpec(f"mailbox_limit must be a positive int, got {mailbox_limit!r}")
        if isinstance(seeds, str):
            raise InvalidSpec("seeds must be a list of 'host:port' strings")
        self.hub_id = hub_id
        self._owns_endpoint = endpoint is None and host is not None
        if self._owns_endpoint:
            assert host is not None
            endpoint = Node(
                node,
                host=host,
                port=port,
                seeds=seeds,
                cookie=cookie,
                cluster=cluster,
                preset=preset,
                ssl=ssl,
                client_ssl=client_ssl,
            )
        self.endpoint = endpoint
        #: This node's name: ``node``, else ``"host:port"`` once started (or, for a standalone
        #: hub made with ``host=None``, ``"<hostname>-<pid>"``).
        self.node = node or (endpoint.name if endpoint else f"{socket.gethostname()}-{os.getpid()}")
        self.boot_id = secrets.token_hex(8)
        self.hooks = HookManager(name=f"hub:{hub_id}")
        for event, handlers in (hooks or {}).items():
            self.hooks.register(event, handlers)
        self._static_specs = _check_specs(child_specs)
        chosen = {
            "distribution": distribution,
            "redundancy": redundancy,
            "migration": migration,
            "synchronization": synchronization,
            "partition": partition,
        }
        self._strategies = {
            k: v if v is not None else d
            for (k, v), d in zip(chosen.items(), _default_strategies().values(), strict=True)
        }
        self._reconcile_interval = reconcile_interval
        self.coordinator: Coordinator | None = None
        self._start_timeout = float(start_timeout)
        self._call_timeout = float(call_timeout)
        self._mailbox_limit = mailbox_limit
        self._backoff = restart_backoff
        self._registry = Registry(self.node, self.boot_id)
        self._supervisor = self._make_supervisor()
        self._members: set[str] = set()
        self._topology: asyncio.Queue[tuple[str, str]] | None = None
        self._unsubscribe: Callable[[], None] | None = None
        self._by_local_id: dict[int, Child] = {}
        self._events = EventPump(self.hooks, name=f"hub:{hub_id}:events", limit=event_queue_limit)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._state: Literal["new", "running", "draining", "stopping", "stopped"] = "new"

    def __repr__(self) -> str:
        return f"<Hub {self.hub_id!r} node={self.node!r} {self._state}>"

    def _make_supervisor(self) -> Supervisor:
        return Supervisor(
            self.node,
            self.boot_id,
            self,
            hub=self,
            mailbox_limit=self._mailbox_limit,
            backoff=self._backoff,
        )

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Hub:
        """Start the hub and its static ``child_specs`` (a failing one stops the hub again)."""
        if self._state != "new":
            raise HubClosed(f"hub {self.hub_id!r} was already started")
        endpoint = self.endpoint
        if endpoint is not None:
            if self._owns_endpoint:
                await endpoint.start()
            elif endpoint._state != "running":
                raise HubClosed("the shared endpoint node must be started before its hubs")
            if self.node != endpoint.name:  # the name is known once the node is bound
                self.node = endpoint.name
                self.boot_id = endpoint.boot_id
                self._registry = Registry(self.node, self.boot_id)
                self._supervisor = self._make_supervisor()
        self._state = "running"
        self._events.start()
        if endpoint is not None:
            self.coordinator = Coordinator(self, self._strategies, self._reconcile_interval)
            self.coordinator.attach()  # the link handler exists before peers learn of the hub
            self._topology = asyncio.Queue(maxsize=10_000)
            self._own(self._follow_topology(), "topology")
            self._unsubscribe = endpoint.subscribe(self._on_node_event)
            for member in endpoint.alive():
                self._member_changed(member)
            hubs = list(endpoint.meta.get("hubs", ()))
            endpoint.update_meta(hubs=sorted({*hubs, self.hub_id}))
        logger.info("hub %s started on node %s (boot %s)", self.hub_id, self.node, self.boot_id)
        if self._static_specs:
            result = await self.start_children(self._static_specs, timeout=self._start_timeout)
            if result.errors:
                await self.stop("static children failed")
                raise result.errors[0][1]
        return self

    async def stop(self, reason: str = "shutdown") -> None:
        """Stop every local child (``terminate`` within each ``shutdown_timeout``), deliver the
        remaining hook events, and cancel and await every task the hub owns. Idempotent."""
        if self._state in ("stopping", "stopped"):
            return
        if self._state == "new":
            self._state = "stopped"
            await self.hooks.aclose()
            return
        was = self._state
        self._state = "stopping"
        logger.info("hub %s on %s stopping: %s", self.hub_id, self.node, reason)
        if self.coordinator is not None and was == "running" and self._members:
            await self.coordinator.hand_off()
        await self.hooks.dispatch(Hook.COORDINATOR_SHUTDOWN, reason)
        if self._unsubscribe is not None:
            self._unsubscribe()
        if self.coordinator is not None:
            self.coordinator.detach()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._supervisor.close(reason)
        await self._events.aclose()
        await self.hooks.aclose()
        if self.endpoint is not None:
            if self._owns_endpoint:
                await self.endpoint.stop()
            else:
                hubs = [h for h in self.endpoint.meta.get("hubs", ()) if h != self.hub_id]
                self.endpoint.update_meta(hubs=hubs)
        self._state = "stopped"
        logger.info("hub %s on %s stopped", self.hub_id, self.node)

    async def drain(self) -> StopResult:
        """Refuse new children and give the local ones away: in a cluster each moves to its
        owner among the other nodes (stopped here, then started there); alone, they stop
        (``reason="drain"``). The hub stays up for reads and messages until :meth:`stop`."""
        self._check_running()
        self._state = "draining"
        ids = list(self._supervisor.children)
        if self.coordinator is not None and self._members:
            await self.coordinator.hand_off()
            left = [cid for cid in ids if self._supervisor.get(cid) is not None]
            result = await self._stop_local(left, "drain")
            result.stopped = [(cid, [self.node]) for cid in ids]
            return result
        return await self._stop_local(ids, "drain")

    async def __aenter__(self) -> Hub:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    def is_alive(self) -> bool:
        return self._state in ("running", "draining")

    def is_locked(self) -> bool:
        """Whether the partition strategy refuses changes (never, on a single node)."""
        return False

    def is_partitioned(self) -> bool:
        return False

    def nodes(self, include_local: bool = False) -> list[str]:
        """Sorted names of the live nodes that host this hub (this one only if
        ``include_local``)."""
        names = self._members | {self.node} if include_local else self._members
        return sorted(names)

    # -- cluster membership --------------------------------------------------------------------

    def _on_node_event(self, event: NodeEvent) -> None:
        if isinstance(event, MemberEvent):
            self._member_changed(event.member)

    def _member_changed(self, member: Member) -> None:
        name = member.node.name
        if name == self.node or self._topology is None:
            return
        hosts_hub = self.hub_id in member.meta.get("hubs", ())
        live = member.state in (State.ALIVE, State.SUSPECT)
        change = "join" if live and hosts_hub else "leave"
        try:
            self._topology.put_nowait((change, name))
        except asyncio.QueueFull:
            logger.error("hub %s: topology queue full; dropped %s of %s", self.hub_id, change, name)

    async def _follow_topology(self) -> None:
        """Apply member changes one at a time, each wrapped in its PRE and POST hooks."""
        assert self._topology is not None
        hooks = self.hooks
        while True:
            change, name = await self._topology.get()
            coordinator = self.coordinator
            if change == "join" and name not in self._members:
                await hooks.dispatch(Hook.PRE_CLUSTER_JOIN, name)  # the ring changes here
                self._members.add(name)
                logger.info("hub %s: node %s joined", self.hub_id, name)
                if coordinator is not None:
                    await coordinator.node_joined(name)
                await hooks.dispatch(Hook.POST_CLUSTER_JOIN, name)
            elif change == "leave" and name in self._members:
                await hooks.dispatch(Hook.PRE_CLUSTER_LEAVE, name)
                self._members.discard(name)
                logger.info("hub %s: node %s left", self.hub_id, name)
                if coordinator is not None:
                    await coordinator.node_left(name)
                await hooks.dispatch(Hook.POST_CLUSTER_LEAVE, name)
            if self._topology.empty():
                self._events.emit(Hook.CLUSTER_SYNCHRONIZED, self.node)

    def _check_running(self) -> None:
        if self._state != "running":
            raise HubClosed(f"hub {self.hub_id!r} is {self._state}")

    # -- starting and stopping children --------------------------------------------------------

    async def start_children(
        self,
        specs: Iterable[ChildSpec],
        *,
        wait: bool = True,
        timeout: float | None = None,
        on_failure: Literal["continue", "rollback"] = "continue",
        metadata: Mapping[str, Any] | None = None,
    ) -> StartResult:
        """Start children. With ``wait`` (the default), return once each has finished ``init``
        (or failed, or ``timeout`` ran out); otherwise return ``status="accepted"`` at once.
        ``on_failure="rollback"`` stops the started ones again if any failed. ``metadata`` is
        attached to every child of the request (see :meth:`tag_query`)."""
        self._check_running()
        specs = _check_specs(specs)
        if on_failure not in ("continue", "rollback"):
            raise InvalidSpec(f"on_failure must be 'continue' or 'rollback', got {on_failure!r}")
        wait_for = _check_timeout(timeout, self._start_timeout)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidSpec(f"metadata must be a mapping, got {type(metadata).__name__}")
        meta = MappingProxyType(dict(metadata)) if metadata else _EMPTY
        hooks = self.hooks
        if hooks.has_handlers(Hook.PRE_CHILDREN_START):
            await hooks.dispatch(Hook.PRE_CHILDREN_START, specs)
        errors: list[tuple[str, HubError]] = []
        if hooks.has_handlers(Hook.CHILD_DATA_ALTER):
            specs, errors = await self._alter_specs(specs)
        todo: list[ChildSpec] = []
        registry = self._registry
        for spec in specs:
            if spec.id in registry:
                where = [n for n, _ in registry.lookup(spec.id)]
                errors.append((spec.id, AlreadyStarted(spec.id, ", ".join(where))))
            else:
                todo.append(spec)
        if not wait:
            self._own(self._finish_start(todo, meta, errors, wait_for, on_failure), "start")
            return StartResult("accepted", errors=list(errors))
        return await self._finish_start(todo, meta, errors, wait_for, on_failure)

    async def start_child(
        self,
        spec: ChildSpec,
        *,
        wait: bool = True,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> StartResult:
        """Start one child (see :meth:`start_children`)."""
        return await self.start_children([spec], wait=wait, timeout=timeout, metadata=metadata)

    async def _alter_specs(
        self, specs: list[ChildSpec]
    ) -> tuple[list[ChildSpec], list[tuple[str, HubError]]]:
        altered: list[ChildSpec] = []
        errors: list[tuple[str, HubError]] = []
        for spec in specs:
            new = await self.hooks.alter(Hook.CHILD_DATA_ALTER, spec)
            if isinstance(new, ChildSpec) and new.id == spec.id:
                altered.append(new)
            else:
                why = f"{Hook.CHILD_DATA_ALTER} handlers returned {new!r} for {spec.id!r}"
                logger.error("%s; the child is not started", why)
                errors.append((spec.id, InvalidSpec(why)))
        return altered, errors

    async def _finish_start(
        self,
        todo: list[ChildSpec],
        meta: Mapping[str, Any],
        errors: list[tuple[str, HubError]],
        timeout: float,
        on_failure: str,
    ) -> StartResult:
        node = self.node
        coordinator = self.coordinator
        if coordinator is None:  # standalone: everything starts here
            local = await self._start_local([(s, meta, None) for s in todo], timeout)
            started: list[tuple[str, list[tuple[str, Pid]]]] = []
            for s in todo:
                outcome = local[s.id]
                if isinstance(outcome, Pid):
                    started.append((s.id, [(node, outcome)]))
                else:
                    errors.append((s.id, outcome))
            return await self._report_start(started, errors, on_failure)
        groups = coordinator.plan_start(todo)
        outcomes: dict[str, list[tuple[str, Pid | HubError]]] = {}

        async def start_on(target: str, specs: list[ChildSpec]) -> None:
            if target == node:
                local = await self._start_local([(s, meta, None) for s in specs], timeout)
                outcomes[target] = [(s.id, local[s.id]) for s in specs]
            else:
                outcomes[target] = await coordinator.start_remote(target, specs, meta, timeout)

        await asyncio.gather(*(start_on(target, specs) for target, specs in groups.items()))
        where: dict[str, list[tuple[str, Pid]]] = {}
        failed: dict[str, HubError] = {}
        for results in outcomes.values():
            for cid, outcome in results:
                if isinstance(outcome, Pid):
                    placed = where.get(cid)
                    if placed is None:
                        where[cid] = [(outcome.node, outcome)]
                    else:  # replicas: keep them in node order
                        placed.append((outcome.node, outcome))
                        placed.sort()
                else:
                    failed.setdefault(cid, outcome)
        started = [(s.id, where[s.id]) for s in todo if s.id in where]
        remote = [(cid, pid) for cid, pids in started for n, pid in pids if n != node]
        await coordinator.until_visible(remote, asyncio.get_running_loop().time() + timeout)
        errors += [(s.id, failed[s.id]) for s in todo if s.id in failed and s.id not in where]
        return await self._report_start(started, errors, on_failure)

    async def _report_start(
        self,
        started: list[tuple[str, list[tuple[str, Pid]]]],
        errors: list[tuple[str, HubError]],
        on_failure: str,
    ) -> StartResult:
        """Roll back if asked, deliver the hooks of the request, and build its result."""
        rolled_back: list[str] = []
        if errors and on_failure == "rollback" and started:
            rolled_back = [cid for cid, _ in started]
            await self._stop_routed(rolled_back, "rollback")
            started = []
        await self._events.flush()
        if self.hooks.has_handlers(Hook.POST_CHILDREN_START):
            report = [
                ChildStarted(cid, "ok", pids[0][1], [n for n, _ in pids]) for cid, pids in started
            ]
            report += [ChildStarted(cid, _result_word(exc), None, []) for cid, exc in errors]
            await self.hooks.dispatch(Hook.POST_CHILDREN_START, report)
        return StartResult("error" if errors else "ok", started, errors, rolled_back)

    async def _start_local(
        self, items: list[tuple[ChildSpec, Mapping[str, Any], Any]], timeout: float
    ) -> dict[str, Pid | HubError]:
        """Start children on this node (every path: requests, failover, migration) and report
        the batch with ``PROCESS_STARTUPS``."""
        results = await self._supervisor.start_batch(items, timeout)
        if self._events.wants(Hook.PROCESS_STARTUPS):
            started = [(s.id, r) for s, _, _ in items if isinstance(r := results[s.id], Pid)]
            if started:
                self._events.emit(Hook.PROCESS_STARTUPS, started)
        return results

    async def stop_children(
        self,
        child_ids: Iterable[str],
        *,
        wait: bool = True,
        reason: Any = "shutdown",
    ) -> StopResult:
        """Stop children by id: each gets ``terminate(reason)`` within its
        ``shutdown_timeout`` and is cancelled after that. Unknown ids are reported as
        :class:`NotFound` errors in the result."""
        if self._state not in ("running", "draining"):
            raise HubClosed(f"hub {self.hub_id!r} is {self._state}")
        if isinstance(child_ids, str):
            raise InvalidSpec("stop_children takes a list of ids (use stop_child for one)")
        ids = list(dict.fromkeys(child_ids))
        if not wait:
            self._own(self._stop_routed(ids, reason), "stop")
            return StopResult("accepted")
        return await self._stop_routed(ids, reason)

    async def stop_child(
        self, child_id: str, *, wait: bool = True, reason: Any = "shutdown"
    ) -> StopResult:
        """Stop one child (see :meth:`stop_children`)."""
        return await self.stop_children([child_id], wait=wait, reason=reason)

    async def _stop_routed(self, ids: list[str], reason: Any) -> StopResult:
        """Stop children wherever the registry says they run."""
        coordinator = self.coordinator
        if coordinator is None:
            return await self._stop_local(ids, reason)
        groups: dict[str, list[str]] = {}
        for cid in ids:
            nodes = {n for n, _ in self._registry.lookup(cid)}
            if self._supervisor.get(cid) is not None:
                nodes.add(self.node)
            for target in nodes or {self.node}:
                groups.setdefault(target, []).append(cid)
        result = StopResult("ok")
        local = groups.pop(self.node, [])
        remote = await asyncio.gather(
            *(coordinator.stop_remote(target, group, reason) for target, group in groups.items())
        )
        failed: dict[str, HubError] = {}
        for (target, group), errors in zip(groups.items(), remote, strict=True):
            bad = dict(errors)
            failed.update(bad)
            for cid in group:
                if cid not in bad:
                    result.stopped.append((cid, [target]))
        if local:
            here = await self._stop_local(local, reason)
            result.stopped += here.stopped
            failed.update(here.errors)
        merged: dict[str, list[str]] = {}
        for cid, stopped_on in result.stopped:
            merged.setdefault(cid, []).extend(stopped_on)
        result.stopped = [(cid, sorted(merged[cid])) for cid in ids if cid in merged]
        result.errors = [(cid, failed[cid]) for cid in ids if cid in failed and cid not in merged]
        result.status = "error" if result.errors else "ok"
        await self._events.flush()
        return result

    async def _stop_local(self, ids: list[str], reason: Any) -> StopResult:
        supervisor = self._supervisor
        present = [cid for cid in ids if supervisor.get(cid) is not None]
        errors: list[tuple[str, HubError]] = [
            (cid, NotFound(cid)) for cid in ids if supervisor.get(cid) is None
        ]
        outcomes = await asyncio.gather(
            *(supervisor.stop(cid, reason) for cid in present), return_exceptions=True
        )
        stopped: list[tuple[str, list[str]]] = []
        for cid, outcome in zip(present, outcomes, strict=True):
            if isinstance(outcome, HubError):
                errors.append((cid, outcome))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                stopped.append((cid, [self.node]))
        await self._events.flush()
        return StopResult("error" if errors else "ok", stopped, errors)

    def _own(self, coro: Any, what: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"hub:{self.hub_id}:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "hub %s: background %s failed",
                self.hub_id,
                task.get_name(),
                exc_info=task.exception(),
            )

    # -- reads (local, no network) -------------------------------------------------------------

    def lookup(self, child_id: str) -> list[tuple[str, Pid]]:
        """``[(node, pid)]`` where ``child_id`` runs; empty if unknown."""
        return self._registry.lookup(child_id)

    def get_pid(self, child_id: str) -> Pid | None:
        """The pid of ``child_id`` (the first by node name when it runs on several)."""
        found = self._registry.lookup(child_id)
        return found[0][1] if found else None

    def get_pids(self, child_id: str) -> list[Pid]:
        return [pid for _, pid in self._registry.lookup(child_id)]

    def process_list(self, scope: Literal["global", "local"] = "global") -> list[Any]:
        """``"global"``: ``[(child_id, [(node, pid)])]``; ``"local"``: ``[(child_id, pid)]``;
        both sorted by child id."""
        if scope == "local":
            local = self._registry.local.entries
            return [(cid, local[cid].pid) for cid in sorted(local)]
        if scope != "global":
            raise InvalidSpec(f"scope must be 'global' or 'local', got {scope!r}")
        return [
            (cid, [(node, e.pid) for node, e in where])
            for cid, where in self._registry.by_child().items()
        ]

    def registry_dump(self) -> dict[str, RegistryRecord]:
        """Every child: its spec, where it runs and its start metadata."""
        return {
            cid: RegistryRecord(
                where[0][1].spec, [(n, e.pid) for n, e in where], where[0][1].metadata
            )
            for cid, where in self._registry.by_child().items()
        }

    def tag_query(self, tag: Any) -> list[tuple[str, list[tuple[str, Pid]]]]:
        """Children whose metadata (start metadata, then spec metadata) has ``tag`` as its
        ``"tag"`` value or among its ``"tags"``."""
        found = []
        for cid, where in self._registry.by_child().items():
            entry = where[0][1]
            if _has_tag(entry.metadata, tag) or _has_tag(entry.spec.metadata, tag):
                found.append((cid, [(n, e.pid) for n, e in where]))
        return found

    def buried(self) -> list[Buried]:
        """Children of this node buried after exhausting their restart intensity (most recent
        last, bounded): their spec, last error and crash count."""
        return self._supervisor.buried()

    # -- messaging -----------------------------------------------------------------------------

    async def cast(self, target: str | Pid, message: Any) -> None:
        """Send ``message`` without waiting for an answer. ``target`` is a child id or a pid
        (that exact instance). Raises :class:`NotFound` or :class:`MailboxFull`. In a cluster
        the message goes to the node that runs the child (the primary under replication)."""
        try:  # a cast waits for nothing: no deadline unless the child is in transit
            await self._deliver_once(target, message, None, 0.0)
        except NotFound as exc:
            if not self._worth_waiting(target, exc):
                raise
            await self._deliver(target, message, None, self._call_timeout)

    async def call(self, target: str | Pid, message: Any, *, timeout: float | None = None) -> Any:
        """Send ``message`` and return the reply. Raises :class:`NotFound`, :class:`Timeout`
        after ``timeout`` seconds (default ``call_timeout``), or :class:`CallFailed` when the
        process crashed handling it. A call sent while the child restarts is answered by the next
        instance (the mailbox survives restarts)."""
        limit = _check_timeout(timeout, self._call_timeout)
        return await self._deliver(target, message, Call, limit)

    async def _deliver(
        self, target: str | Pid, message: Any, call: type[Call] | None, limit: float
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._deliver_once(target, message, call, deadline)
            except TimeoutError:
                raise Timeout(f"call to {target} got no reply within {limit}s") from None
            except (NotDelivered, NotFound) as exc:
                if not self._worth_waiting(target, exc):
                    raise
                if loop.time() + 0.02 >= deadline:
                    raise Timeout(f"{target} was not reachable within {limit}s") from None
                await asyncio.sleep(0.02)

    def _worth_waiting(self, target: str | Pid, exc: HubError) -> bool:
        """A message that was never processed (restart, move) can be sent again, and a child
        that just moved or lost its node reappears shortly; a pid names one instance only."""
        coordinator = self.coordinator
        if coordinator is None or not isinstance(target, str):
            return False
        return isinstance(exc, NotDelivered) or coordinator.moving(target)

    async def _deliver_once(
        self, target: str | Pid, message: Any, call: type[Call] | None, deadline: float
    ) -> Any:
        coordinator = self.coordinator
        node = self.node
        if coordinator is not None:
            if isinstance(target, Pid):
                node = target.node
            elif self._supervisor.get(target) is None:
                node = coordinator.route(target)
        if node == self.node:
            ctx = self._target(target)
            if call is None:
                ctx.deliver(message)
                return None
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            ctx.deliver(Call(message, future))
            return await future
        assert coordinator is not None
        remaining = max(0.001, deadline - asyncio.get_running_loop().time())
        try:
            if call is None:
                await coordinator.send_message(node, target, message)
                return None
            return await coordinator.call(node, target, message, remaining)
        except RemoteError as exc:
            raise error_from_wire(target, exc.kind, f"{exc.peer}: {exc.message}") from None

    def _target(self, target: str | Pid) -> ProcessContext:
        if isinstance(target, Pid):
            child = self._by_local_id.get(target.local_id)
            ctx = child.ctx if child is not None else None
            if ctx is None or ctx.pid != target or child is None or child.state != "running":
                raise NotFound(target)
            return ctx
        if not isinstance(target, str):
            raise InvalidSpec(f"target must be a child id or a Pid, got {type(target).__name__}")
        if self._state not in ("running", "draining"):
            raise HubClosed(f"hub {self.hub_id!r} is {self._state}")
        child = self._supervisor.get(target)
        if child is None or child.ctx is None:
            raise NotFound(target)
        return child.ctx  # starting or restarting: the mailbox is kept for the next instance

    # -- hooks ---------------------------------------------------------------------------------

    async def fire_hook(self, name: str, *, wait: bool = True, **kwargs: Any) -> None:
        """Fire a user hook (see :meth:`HookManager.fire`)."""
        await self.hooks.fire(name, wait=wait, **kwargs)

    # -- supervisor listener (synchronous, called from task callbacks) -------------------------

    def child_started(self, child: Child, restarted: bool) -> None:
        ctx = child.ctx
        assert ctx is not None
        pid = ctx.pid
        self._by_local_id[pid.local_id] = child
        self._registry.put(Entry(child.spec, pid, child.metadata))
        if self.coordinator is not None:
            self.coordinator.local_changed()
        events = self._events
        cid = child.spec.id
        if events.wants(Hook.REGISTRY_PID_INSERTED):
            events.emit(Hook.REGISTRY_PID_INSERTED, PidInserted(cid, [(self.node, pid)]))
        if restarted:
            events.emit(Hook.CHILD_PROCESS_PID_UPDATE, PidUpdate(self.node, cid, pid))
            events.emit(Hook.PROCESS_STARTUPS, [(cid, pid)])

    def child_crashed(self, child: Child, error: BaseException, attempt: int) -> None:
        ctx = child.ctx
        if ctx is not None:
            self._by_local_id.pop(ctx.pid.local_id, None)
        self._events.emit(Hook.CHILD_CRASHED, ChildCrashed(child.spec.id, error, attempt))

    def child_removed(self, child: Child, kind: RemovalKind, reason: Any) -> None:
        cid = child.spec.id
        ctx = child.ctx
        if ctx is not None:
            self._by_local_id.pop(ctx.pid.local_id, None)
        self._registry.delete(cid)
        if self.coordinator is not None:
            self.coordinator.local_changed()
        events = self._events
        events.emit(Hook.REGISTRY_PID_REMOVED, PidRemoved(cid, [self.node]))
        if kind == "stopped":
            events.emit(Hook.CHILD_STOPPED, ChildStopped(cid, reason))
        elif kind == "buried":
            events.emit(Hook.CHILD_BURIED, ChildBuried(cid, reason.error, reason.attempts))


def _default_strategies() -> dict[str, Any]:
    from strategies import defaults  # strategies depends on hub: import at call time

    return defaults()


def _check_specs(specs: Iterable[ChildSpec]) -> list[ChildSpec]:
    if isinstance(specs, ChildSpec):
        raise InvalidSpec("expected a list of ChildSpec (use start_child for one)")
    checked = list(specs)
    seen: set[str] = set()
    for spec in checked:
        if not isinstance(spec, ChildSpec):
            raise InvalidSpec(f"expected ChildSpec, got {type(spec).__name__}: {spec!r}")
        if spec.id in seen:
            raise InvalidSpec(f"child id {spec.id!r} appears twice in one request")
        seen.add(spec.id)
    return checked


def _check_timeout(timeout: float | None, default: float) -> float:
    if timeout is None:
        return default
    if not isinstance(timeout, int | float) or isinstance(timeout, bool) or not timeout > 0:
        raise InvalidSpec(f"timeout must be a positive number of seconds, got {timeout!r}")
    return float(timeout)


def _result_word(exc: HubError) -> str:
    if isinstance(exc, AlreadyStarted):
        return "already_started"
    return f"error: {exc}"


def _has_tag(metadata: Mapping[str, Any], tag: Any) -> bool:
    if not metadata:
        return False
    if metadata.get("tag") == tag:
        return True
    tags = metadata.get("tags")
    return isinstance(tags, list | tuple | set | frozenset) and tag in tags
