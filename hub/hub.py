"""The :class:`Hub`: the object an application holds.

The hub validates each request and hands it once to its router: the local runtime alone
(:mod:`hub.local`) for a standalone hub, or the cluster :class:`~hub.coordinator.Coordinator`
when the hub has a node endpoint. Reads are local and need no network.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from ssl import SSLContext
from types import MappingProxyType, TracebackType
from typing import TYPE_CHECKING, Any, Literal

from . import board
from .cluster.links import RemoteError
from .cluster.node import Node
from .coordinator import Coordinator
from .errors import (
    AlreadyStarted,
    HubClosed,
    HubError,
    InvalidSpec,
    NodeUnreachable,
    NotDelivered,
    NotFound,
    QuorumLost,
    StartFailed,
    Timeout,
)
from .events import ChildStarted, Hook
from .hooks import HookHandler, HookManager
from .local import LocalRuntime
from .ops import HubCounters
from .pacing import paced
from .pid import Pid
from .policies import Strategies
from .process import Call
from .spec import ChildSpec, RegistryRecord, StartResult, StopResult, check_travels
from .supervisor import Backoff, Buried
from .wire import error_from_wire

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["Hub"]

logger = logging.getLogger(__name__)

_EMPTY: Mapping[str, Any] = MappingProxyType({})
HookConfig = Mapping[Hook | str, HookHandler | Sequence[HookHandler]]
RETRY_PAUSE = 0.02  # seconds between two attempts to reach a child that is moving or failing over


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
        advertise: str | None = None,
        observability: bool = True,
        dashboard: bool = True,
    ) -> None:
        if not isinstance(hub_id, str) or not hub_id:
            raise InvalidSpec(f"hub_id must be a non-empty string, got {hub_id!r}")
        if node is not None and (not isinstance(node, str) or not node):
            raise InvalidSpec(f"node must be a non-empty string, got {node!r}")
        for name, value in (
            ("start_timeout", start_timeout),
            ("call_timeout", call_timeout),
            ("reconcile_interval", reconcile_interval),
        ):
            if not isinstance(value, int | float) or isinstance(value, bool) or not value > 0:
                raise InvalidSpec(f"{name} must be a positive number, got {value!r}")
        if type(mailbox_limit) is not int or mailbox_limit < 1:
            raise InvalidSpec(f"mailbox_limit must be a positive int, got {mailbox_limit!r}")
        if isinstance(seeds, str):
            raise InvalidSpec("seeds must be a list of 'host:port' strings")
        if not isinstance(observability, bool):
            raise InvalidSpec(f"observability must be True or False, got {observability!r}")
        if endpoint is not None and advertise is not None:
            raise InvalidSpec("advertise= belongs to the endpoint: pass it to Node(...)")
        self.hub_id = hub_id
        chosen = {
            "distribution": distribution,
            "redundancy": redundancy,
            "migration": migration,
            "synchronization": synchronization,
            "partition": partition,
        }
        defaults = _default_strategies()
        self.strategies = Strategies.checked(
            **{k: v if v is not None else defaults[k] for k, v in chosen.items()}
        )
        _refuse_unsupported(self.strategies)
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
                advertise=advertise,
                observability=observability,
                dashboard=dashboard,
            )
        self.endpoint = endpoint
        #: This node's name: ``node``, else ``"host:port"`` once started (or, for a standalone
        #: hub made with ``host=None``, ``"<hostname>-<pid>"``).
        self.node = node or (endpoint.name if endpoint else f"{socket.gethostname()}-{os.getpid()}")
        self.boot_id = secrets.token_hex(8)
        self.hooks = HookManager(name=f"hub:{hub_id}")
        #: Event counters for the metrics (``None`` with ``observability=False``).
        self.counters: HubCounters | None = None
        if observability:
            self.counters = HubCounters()
            self.counters.attach(self.hooks)
        self._observability = observability
        self._attached = False
        for event, handlers in (hooks or {}).items():
            self.hooks.register(event, handlers)
        self._static_specs = _check_specs(child_specs)
        self._reconcile_interval = float(reconcile_interval)
        self._start_timeout = float(start_timeout)
        self._call_timeout = float(call_timeout)
        self._backoff = restart_backoff
        #: The local runtime (supervisor, local registry partition, events, owned tasks).
        self.runtime = LocalRuntime(
            self,
            self.hooks,
            node=self.node,
            boot_id=self.boot_id,
            mailbox_limit=mailbox_limit,
            backoff=restart_backoff,
            event_queue_limit=event_queue_limit,
        )
        #: The cluster router (``None`` for a standalone hub, and before :meth:`start`).
        self.coordinator: Coordinator | None = None
        self._state: Literal["new", "running", "draining", "stopping", "stopped"] = "new"

    def __repr__(self) -> str:
        return f"<Hub {self.hub_id!r} node={self.node!r} {self._state}>"

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Hub:
        """Start the hub and its static ``child_specs`` (a failing one stops the hub again)."""
        if self._state != "new":
            raise HubClosed(f"hub {self.hub_id!r} was already started")
        endpoint = self.endpoint
        if endpoint is not None:
            if self._owns_endpoint:
                await endpoint.start()
            elif not endpoint.running:
                raise HubClosed("the shared endpoint node must be started before its hubs")
            if self.node != endpoint.name or self.boot_id != endpoint.boot_id:
                self.node = endpoint.name  # the name is known once the node is bound
                self.boot_id = endpoint.boot_id
                self.runtime.bind(self.node, self.boot_id)
        self._state = "running"
        self.runtime.accepting = True
        self.runtime.events.start()
        if endpoint is not None:
            self.coordinator = Coordinator(
                self.hub_id,
                self.runtime,
                endpoint,
                self.strategies,
                reconcile_interval=self._reconcile_interval,
                start_timeout=self._start_timeout,
                backoff=self._backoff,
            )
            self.coordinator.attach()  # the link handler exists before peers learn of the hub
            endpoint.register_hub(self)
            board.hub_started(self)
        logger.info("hub %s started on node %s (boot %s)", self.hub_id, self.node, self.boot_id)
        if self._static_specs:
            result = await self.start_children(self._static_specs, timeout=self._start_timeout)
            if result.errors:
                await self.stop("static children failed")
                raise result.errors[0][1]
        return self

    async def stop(self, reason: str = "shutdown") -> None:
        """Leave gracefully and stop. In a cluster the node first stops taking children, hands
        its children to their owners and waits (bounded) until every peer acknowledged its
        final registry state; then every local child that is left stops (``terminate`` within
        its ``shutdown_timeout``), the remaining hook events are delivered, and every task the
        hub owns is cancelled and awaited. Idempotent."""
        if self._state in ("stopping", "stopped"):
            return
        if self._state == "new":
            self._state = "stopped"
            await self.hooks.aclose()
            return
        self._state = "stopping"
        logger.info("hub %s on %s stopping: %s", self.hub_id, self.node, reason)
        coordinator = self.coordinator
        if coordinator is not None:
            await coordinator.hand_off(final=True)
        await self.hooks.dispatch(Hook.COORDINATOR_SHUTDOWN, reason)
        if coordinator is not None:
            coordinator.detach()
        if self.endpoint is not None:
            self.endpoint.unregister_hub(self)
        board.hub_stopped(self)
        runtime = self.runtime
        await runtime.close_tasks()
        await runtime.supervisor.close(reason)
        runtime.accepting = False
        await runtime.events.aclose()
        await self.hooks.aclose()
        if self.endpoint is not None and self._owns_endpoint:
            await self.endpoint.stop()
        self._state = "stopped"
        logger.info("hub %s on %s stopped", self.hub_id, self.node)

    async def drain(self) -> StopResult:
        """Take this node out of placement and give its children away, and stay so: in a
        cluster every node stops placing children here and each local child moves to its owner
        among the other nodes (``stopped`` lists the children that left; one still here after
        the hand-off bound is reported as a :class:`Timeout` error and moves as soon as it
        can); alone, the children stop (``reason="drain"``). The hub keeps serving reads and
        messages until :meth:`stop`; new starts are refused."""
        self._check_running()
        self._state = "draining"
        ids = self.runtime.child_ids()
        coordinator = self.coordinator
        if coordinator is None or not coordinator.members:
            if coordinator is not None:
                await coordinator.hand_off(final=False)
            return await self.runtime.stop(ids, "drain")
        await coordinator.hand_off(final=False)
        left = [cid for cid in ids if self.runtime.get(cid) is None]
        stuck = [cid for cid in ids if self.runtime.get(cid) is not None]
        errors: list[tuple[str, HubError]] = [
            (cid, Timeout(f"{cid} has not moved off {self.node} yet")) for cid in stuck
        ]
        return StopResult("error" if errors else "ok", [(cid, [self.node]) for cid in left], errors)

    async def migrate(self, child_id: str, node: str, *, timeout: float | None = None) -> Pid:
        """Move ``child_id`` to ``node`` with the hub's migration strategy (HotSwap: its state
        and queued messages go with it; ColdSwap: its messages) and keep it there: the child
        is placed on ``node`` while ``node`` is a live member that does not drain (if it
        leaves or drains, the child goes to its ring owner, and comes back when the node does).
        Returns the child's pid on ``node``. Raises :class:`NotFound` for a child that is not
        running, :class:`InvalidSpec` for a node that is not a live, non-draining member (or
        a hub without a cluster, or under replication) and :class:`Timeout` when the move did
        not finish within ``timeout`` (default: ``start_timeout`` plus ``call_timeout``), and
        :class:`QuorumLost` while the hub is locked."""
        self._check_running()
        self._check_unlocked()
        if not isinstance(child_id, str) or not isinstance(node, str):
            raise InvalidSpec("migrate(child_id, node) takes two strings")
        limit = _check_timeout(timeout, self._start_timeout + self._call_timeout)
        coordinator = self.coordinator
        if coordinator is None:
            raise InvalidSpec("migrate() needs a cluster: this hub has no node endpoint")
        return await coordinator.migrate(child_id, node, limit)

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

    @property
    def state(self) -> str:
        """``"new"``, ``"running"``, ``"draining"``, ``"stopping"`` or ``"stopped"``."""
        return self._state

    def unsynced_peers(self) -> list[str]:
        """Live peers whose registry partition this node does not hold yet (sorted), and
        members a peer lists that this node does not know yet (for a detection period at
        most); empty when this node has everyone's, and for a standalone hub."""
        coordinator = self.coordinator
        return coordinator.unsynced_peers() if coordinator is not None else []

    # -- embedding -----------------------------------------------------------------------------

    def attach(self, app: web.Application) -> None:
        """Serve this hub from ``app``, a user's ``aiohttp.web.Application``, on the app's own
        port, and tie the hub's lifecycle to the app's: the hub starts during the app's
        startup (``cleanup_ctx``) and stops gracefully in its ``on_shutdown`` (while the
        app's open connections still work), so ``web.run_app(app, port=P)`` or an
        ``AppRunner`` runs both. Call it before the app starts.

        With an endpoint of its own (``Hub(host=..., port=P, ...)``), the node's cluster
        routes and the read-only routes (``/metrics``, ``/health/alive``, ``/health/ready``,
        unless ``observability=False``) are added to ``app`` and the node does not open a
        port: ``port`` (or ``advertise="host:port"``) must be the port the app listens on.
        With a shared endpoint (``Hub(endpoint=node)``), serve the node with
        :meth:`Node.attach <hub.cluster.node.Node.attach>` first; this only ties the hub's
        lifecycle to the app. A standalone hub (``host=None``) gets the read-only routes.
        See ``docs/embedding.md``."""
        if self._state != "new" or self._attached:
            raise HubClosed(f"hub {self.hub_id!r}: attach() must be called once, before start")
        from .ops import Observed, add_read_only_routes

        endpoint = self.endpoint
        if endpoint is not None and self._owns_endpoint:
            endpoint.mount(app)
        elif endpoint is None and self._observability:
            add_read_only_routes(app, Observed(None, lambda: [self]))
        self._attached = True
        app.cleanup_ctx.append(self._app_context)
        app.on_shutdown.append(self._app_shutdown)

    async def _app_context(self, app: web.Application) -> AsyncIterator[None]:
        await self.start()
        try:
            yield
        finally:
            await self.stop("application cleanup")

    async def _app_shutdown(self, app: web.Application) -> None:
        await self.stop("application shutdown")

    async def get_or_start(
        self,
        spec: ChildSpec,
        *,
        timeout: float | None = None,
        metadata: Mapping[str, Any] | None = None,
    ) -> list[tuple[str, Pid]]:
        """Where ``spec.id`` runs, starting it first if it runs nowhere: "one process per
        entity id, started on first use". Returns ``[(node, pid)]`` (never empty) once the
        child is visible in this node's registry, or raises (:class:`Timeout` after
        ``timeout``, default ``start_timeout``; the start's own error, e.g. :class:`StartFailed`).

        Race-free across nodes: every node routes the start to the child's ring owner, which
        starts one copy and answers the others :class:`AlreadyStarted`; this then waits until
        the running copy is visible here. (Across a membership change two owners can briefly
        disagree; the planner then stops the extra copy, like any duplicate.) A child that was
        stopped is started again: a stop is final only for the copy it stopped."""
        if not isinstance(spec, ChildSpec):
            raise InvalidSpec(f"expected a ChildSpec, got {type(spec).__name__}: {spec!r}")
        found = self.lookup(spec.id)
        if found:
            return found
        limit = _check_timeout(timeout, self._start_timeout)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        while True:
            result = await self.start_children(
                [spec], timeout=max(0.001, deadline - loop.time()), metadata=metadata
            )
            if result.started:
                return list(result.started[0][1])
            error = result.errors[0][1] if result.errors else None
            if error is not None and not isinstance(error, AlreadyStarted):
                raise error
            # another node started it (or is starting it): wait until it is visible here,
            # and start it again if it vanished meanwhile (stopped, or its node died)
            while loop.time() < deadline:
                found = self.lookup(spec.id)
                if found:
                    return found
                if not self._worth_waiting(spec.id, NotFound(spec.id)):
                    break
                await asyncio.sleep(RETRY_PAUSE)
            if loop.time() >= deadline:
                raise Timeout(f"{spec.id} was not visible here within {limit}s")

    def is_locked(self) -> bool:
        """Whether the partition strategy locked the hub on this node: quorum is lost, the
        local children are stopped, and starts, stops and moves raise :class:`QuorumLost`
        until it is regained (never, for a hub without a cluster)."""
        return self.coordinator is not None and self.coordinator.locked

    def is_partitioned(self) -> bool:
        """Whether members of this hub failed (became unreachable without leaving) and have
        not come back: this node may be cut off from part of the cluster. A failed member is
        forgotten an hour after it failed; one that left gracefully never counts."""
        return self.coordinator is not None and self.coordinator.partitioned

    def nodes(self, include_local: bool = False) -> list[str]:
        """Sorted names of the live nodes that host this hub (this one only if
        ``include_local``)."""
        if self.coordinator is not None:
            return self.coordinator.nodes(include_local)
        return [self.node] if include_local else []

    def _check_running(self) -> None:
        if self._state != "running":
            raise HubClosed(f"hub {self.hub_id!r} is {self._state}")

    def _check_unlocked(self) -> None:
        if self.is_locked():
            raise QuorumLost(
                f"hub {self.hub_id!r} is locked on {self.node}: its partition strategy lost "
                "quorum (see hub.is_locked()); no start, stop or move until it is regained"
            )

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
        attached to every child of the request (see :meth:`tag_query`). Raises
        :class:`QuorumLost` while the hub is locked."""
        self._check_running()
        self._check_unlocked()
        specs = _check_specs(specs)
        if on_failure not in ("continue", "rollback"):
            raise InvalidSpec(f"on_failure must be 'continue' or 'rollback', got {on_failure!r}")
        wait_for = _check_timeout(timeout, self._start_timeout)
        if metadata is not None and not isinstance(metadata, Mapping):
            raise InvalidSpec(f"metadata must be a mapping, got {type(metadata).__name__}")
        if metadata:
            check_travels(dict(metadata), "start metadata")
        meta = MappingProxyType(dict(metadata)) if metadata else _EMPTY
        hooks = self.hooks
        if hooks.has_handlers(Hook.PRE_CHILDREN_START):
            await hooks.dispatch(Hook.PRE_CHILDREN_START, specs)
        errors: list[tuple[str, HubError]] = []
        if hooks.has_handlers(Hook.CHILD_DATA_ALTER):
            specs, errors = await self._alter_specs(specs)
        todo: list[ChildSpec] = []
        registry = self.runtime.registry
        for spec in specs:
            if self.coordinator is None and spec.id in registry:
                where = [n for n, _ in registry.lookup(spec.id)]
                errors.append((spec.id, AlreadyStarted(spec.id, ", ".join(where))))
            else:
                todo.append(spec)
        if not wait:
            self.runtime.own(self._finish_start(todo, meta, errors, wait_for, on_failure), "start")
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
        coordinator = self.coordinator
        if coordinator is not None:
            started, failed = await coordinator.start_children(todo, meta, timeout)
            errors += failed
            return await self._report_start(started, errors, on_failure)
        node = self.node
        local = await self.runtime.start([(s, meta, 1) for s in todo], timeout)
        started = []
        for s in todo:
            outcome = local[s.id]
            if isinstance(outcome, Pid):
                started.append((s.id, [(node, outcome)]))
            else:
                errors.append((s.id, outcome))
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
        await self.runtime.events.flush()
        if self.hooks.has_handlers(Hook.POST_CHILDREN_START):
            report = await paced(_started_ok, started)
            report += [ChildStarted(cid, _result_word(exc), None, []) for cid, exc in errors]
            await self.hooks.dispatch(Hook.POST_CHILDREN_START, report)
        return StartResult("error" if errors else "ok", started, errors, rolled_back)

    async def stop_children(
        self,
        child_ids: Iterable[str],
        *,
        wait: bool = True,
        reason: Any = "shutdown",
    ) -> StopResult:
        """Stop children by id, for good: each gets ``terminate(reason)`` within its
        ``shutdown_timeout`` and is cancelled after that; in a cluster the stop is recorded on
        every node, so no node restarts the child, whatever fails later. Unknown ids are
        reported as :class:`NotFound` errors in the result. Raises :class:`QuorumLost` while
        the hub is locked."""
        if self._state not in ("running", "draining"):
            raise HubClosed(f"hub {self.hub_id!r} is {self._state}")
        self._check_unlocked()
        if isinstance(child_ids, str):
            raise InvalidSpec("stop_children takes a list of ids (use stop_child for one)")
        ids = list(dict.fromkeys(child_ids))
        if not wait:
            self.runtime.own(self._stop_routed(ids, reason), "stop")
            return StopResult("accepted")
        return await self._stop_routed(ids, reason)

    async def stop_child(
        self, child_id: str, *, wait: bool = True, reason: Any = "shutdown"
    ) -> StopResult:
        """Stop one child (see :meth:`stop_children`)."""
        return await self.stop_children([child_id], wait=wait, reason=reason)

    async def _stop_routed(self, ids: list[str], reason: Any) -> StopResult:
        coordinator = self.coordinator
        if coordinator is None:
            return await self.runtime.stop(ids, reason)
        stopped, failed = await coordinator.stop_children(ids, reason)
        done = {cid for cid, _ in stopped}
        errors = [(cid, failed.get(cid) or NotFound(cid)) for cid in ids if cid not in done]
        await self.runtime.events.flush()
        return StopResult("error" if errors else "ok", stopped, errors)

    # -- reads (local, no network) -------------------------------------------------------------

    def lookup(self, child_id: str) -> list[tuple[str, Pid]]:
        """``[(node, pid)]`` where ``child_id`` runs; empty if unknown."""
        return self.runtime.registry.lookup(child_id)

    def get_pid(self, child_id: str) -> Pid | None:
        """The pid of ``child_id`` (the first by node name when it runs on several)."""
        found = self.runtime.registry.lookup(child_id)
        return found[0][1] if found else None

    def get_pids(self, child_id: str) -> list[Pid]:
        return [pid for _, pid in self.runtime.registry.lookup(child_id)]

    def process_list(self, scope: Literal["global", "local"] = "global") -> list[Any]:
        """``"global"``: ``[(child_id, [(node, pid)])]``; ``"local"``: ``[(child_id, pid)]``;
        both sorted by child id."""
        if scope == "local":
            local = self.runtime.registry.local.entries
            return [(cid, local[cid].pid) for cid in sorted(local)]
        if scope != "global":
            raise InvalidSpec(f"scope must be 'global' or 'local', got {scope!r}")
        return [
            (cid, [(node, e.pid) for node, e in where])
            for cid, where in self.runtime.registry.by_child().items()
        ]

    def registry_dump(self) -> dict[str, RegistryRecord]:
        """Every child: its spec, where it runs and its start metadata."""
        return {
            cid: RegistryRecord(
                where[0][1].spec, [(n, e.pid) for n, e in where], where[0][1].metadata
            )
            for cid, where in self.runtime.registry.by_child().items()
        }

    def tag_query(self, tag: Any) -> list[tuple[str, list[tuple[str, Pid]]]]:
        """Children whose metadata (start metadata, then spec metadata) has ``tag`` as its
        ``"tag"`` value or among its ``"tags"``."""
        found = []
        for cid, where in self.runtime.registry.by_child().items():
            entry = where[0][1]
            if _has_tag(entry.metadata, tag) or _has_tag(entry.spec.metadata, tag):
                found.append((cid, [(n, e.pid) for n, e in where]))
        return found

    def buried(self) -> list[Buried]:
        """Children buried after exhausting their restart intensity: their spec, last error
        and crash count. In a cluster every node lists every buried child (until its record
        expires, see ``docs/architecture.md``); this node's own burials carry the exception."""
        local = self.runtime.supervisor.buried()
        coordinator = self.coordinator
        if coordinator is None:
            return local
        seen = {b.child_id for b in local}
        remote = [
            Buried(r.spec.id, r.spec, StartFailed(r.spec.id, error), attempts, r.at)
            for r, attempts, error in coordinator.buried()
            if r.spec.id not in seen
        ]
        return sorted([*local, *remote], key=lambda b: b.at)

    # -- messaging -----------------------------------------------------------------------------

    async def cast(
        self, target: str | Pid, message: Any, *, to: Literal["primary", "all"] = "primary"
    ) -> None:
        """Send ``message`` without waiting for an answer. ``target`` is a child id or a pid
        (that exact instance). Raises :class:`NotFound` or :class:`MailboxFull`. In a cluster
        the message goes to the node that runs the child (the primary under replication); a
        child that is moving or failing over is waited for (up to ``call_timeout``).

        ``to="all"`` sends it to every copy this node's registry lists (each replica, by its
        pid: a copy that is gone meanwhile does not get it, and nothing waits for a copy that
        is starting or moving); :class:`NotFound` when the registry lists none."""
        if to == "all":
            await self._cast_all(target, message)
            return
        if to != "primary":
            raise InvalidSpec(f"to must be 'primary' or 'all', got {to!r}")
        try:  # a cast waits for nothing: no deadline unless the child is in transit
            await self._deliver_once(target, message, None, 0.0)
        except (NotFound, NodeUnreachable) as exc:
            if not self._worth_waiting(target, exc):
                raise
            await self._deliver(target, message, None, self._call_timeout)

    async def _cast_all(self, target: str | Pid, message: Any) -> None:
        if not isinstance(target, str):
            raise InvalidSpec("to='all' takes a child id (a pid names one copy)")
        copies = [pid for _, pid in self.lookup(target)]
        if not copies:
            raise NotFound(target)
        for pid in copies:
            with contextlib.suppress(NotFound, NodeUnreachable):  # that copy is gone
                await self._deliver_once(pid, message, None, 0.0)

    async def call(self, target: str | Pid, message: Any, *, timeout: float | None = None) -> Any:
        """Send ``message`` and return the reply. Raises :class:`NotFound`, :class:`Timeout`
        after ``timeout`` seconds (default ``call_timeout``; :class:`NodeUnreachable`, a
        ``Timeout``, when the child's node could not be reached), or :class:`CallFailed` when
        the process crashed handling it. A call sent while the child restarts, moves or fails
        over is answered by the next instance."""
        limit = _check_timeout(timeout, self._call_timeout)
        return await self._deliver(target, message, Call, limit)

    async def _deliver(
        self, target: str | Pid, message: Any, call: type[Call] | None, limit: float
    ) -> Any:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit
        unreachable: NodeUnreachable | None = None
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    return await self._deliver_once(target, message, call, deadline)
            except (NotDelivered, NotFound, NodeUnreachable) as exc:  # NodeUnreachable: first
                if not self._worth_waiting(target, exc):
                    raise
                if isinstance(exc, NodeUnreachable):
                    unreachable = exc
                if loop.time() + RETRY_PAUSE >= deadline:
                    if unreachable is not None:
                        raise unreachable from None
                    raise Timeout(f"{target} was not reachable within {limit}s") from None
                assert self.coordinator is not None  # _worth_waiting: only in a cluster
                await self.coordinator.registry_change(RETRY_PAUSE)
            except TimeoutError:  # the deadline passed during an attempt
                if unreachable is not None:
                    raise unreachable from None
                raise Timeout(f"call to {target} got no reply within {limit}s") from None

    def _worth_waiting(self, target: str | Pid, exc: HubError) -> bool:
        """A message that was never processed (restart, move) can be sent again, and a child
        that should run (it is moving, or its node failed) reappears shortly; a pid names one
        instance only."""
        coordinator = self.coordinator
        if coordinator is None or not isinstance(target, str):
            return False
        return isinstance(exc, NotDelivered) or coordinator.expects(target)

    async def _deliver_once(
        self, target: str | Pid, message: Any, call: type[Call] | None, deadline: float
    ) -> Any:
        coordinator = self.coordinator
        node = self.node
        if coordinator is not None:
            if isinstance(target, Pid):
                node = target.node
            else:
                if call is None and coordinator.messenger.relayed(target, message):
                    return None  # held (it left, or is arriving), or forwarded where it went
                if self.runtime.get(target) is None:
                    remaining = deadline - asyncio.get_running_loop().time()
                    moved = await coordinator.moved_to(target, remaining) if call else None
                    node = moved or coordinator.route(target)
                elif coordinator.rf > 1:  # a replica here: messages by id go to the primary
                    node = coordinator.route(target)
                if coordinator.messenger.switched(target, node):
                    await coordinator.messenger.fence(target)  # earlier messages go first
        if node == self.node:
            ctx = self.runtime.target(target)
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

    # -- hooks ---------------------------------------------------------------------------------

    async def fire_hook(self, name: str, *, wait: bool = True, **kwargs: Any) -> None:
        """Fire a user hook (see :meth:`HookManager.fire`)."""
        await self.hooks.fire(name, wait=wait, **kwargs)


def _default_strategies() -> dict[str, Any]:
    from strategies import defaults  # strategies depends on hub: import at call time

    return defaults()


def _refuse_unsupported(strategies: Strategies) -> None:
    """Refuse the strategy settings this hub cannot honour yet, rather than ignore them."""
    redundancy = strategies.redundancy
    if strategies.migration.kind == "hot" and redundancy.replication_factor > 1:
        raise InvalidSpec(
            f"migration={strategies.migration!r} with redundancy={redundancy!r}: a hot move "
            "hands one copy's state to one new copy; under replication use ColdSwap() (each "
            "replica starts from its spec)"
        )
    if strategies.synchronization.kind != "pubsub":
        raise InvalidSpec(
            f"synchronization={strategies.synchronization!r}: the hub implements PubSub "
            "registry sync only (kind 'pubsub')"
        )


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


def _started_ok(item: tuple[str, list[tuple[str, Pid]]]) -> ChildStarted:
    cid, pids = item
    return ChildStarted(cid, "ok", pids[0][1], [n for n, _ in pids])


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
