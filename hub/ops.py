"""Read-only operations routes: ``GET /health/alive``, ``GET /health/ready`` and
``GET /metrics``, on a node endpoint and on an application a hub is attached to.

They need no cluster cookie and reveal no secret: health answers say only what is not ready
(node state, join state, hub ids, peer names); metrics carry counts by hub id and state, never
child ids, specs, cookies or addresses. Whoever can reach the port can read them: put the port
behind your network policy, or switch them off (``Node(observability=False)`` /
``Hub(observability=False)``).

The readiness rule is pure (:func:`readiness`), fed by :class:`Observed`, a read-only view of a
node and the hubs on it.
"""

from __future__ import annotations

import json
import logging
import weakref
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from aiohttp import web

from .cluster.node import add_route_provider
from .errors import (
    AlreadyStarted,
    CallFailed,
    HookError,
    HubClosed,
    HubError,
    InvalidSpec,
    MailboxFull,
    NodeUnreachable,
    NotFound,
    QuorumLost,
    StartFailed,
    Timeout,
    Unauthorized,
)
from .events import Hook
from .hooks import HookHandler, HookManager

if TYPE_CHECKING:
    from .cluster.node import Node
    from .metrics import NodeMetrics

__all__ = [
    "ALIVE_PATH",
    "HTTP_STATUS",
    "METRICS_PATH",
    "READY_PATH",
    "READ_ONLY_PATHS",
    "HubCounters",
    "HubHealth",
    "ObservedHub",
    "Readiness",
    "add_read_only_routes",
    "http_status",
    "readiness",
]

logger = logging.getLogger(__name__)

ALIVE_PATH = "/health/alive"
READY_PATH = "/health/ready"
METRICS_PATH = "/metrics"
READ_ONLY_PATHS = (METRICS_PATH, ALIVE_PATH, READY_PATH)


#: Suggested HTTP status per hub error, most specific first (``docs/embedding.md`` explains
#: each choice). :func:`http_status` walks it in order, so a subclass listed before its base wins.
HTTP_STATUS: tuple[tuple[type[HubError], int], ...] = (
    (InvalidSpec, 400),  # the request was wrong: do not retry it as is
    (NotFound, 404),
    (AlreadyStarted, 409),
    (MailboxFull, 429),  # back off and retry
    (Unauthorized, 403),
    (NodeUnreachable, 503),  # a Timeout too: the owner's node is unreachable right now
    (Timeout, 504),
    (QuorumLost, 503),
    (HubClosed, 503),  # this instance is stopping or draining: retry on another
    (CallFailed, 502),  # the process crashed handling the message
    (StartFailed, 500),
    (HookError, 500),
    (HubError, 500),
)


def http_status(exc: BaseException) -> int:
    """The suggested HTTP status for an exception a hub raised (500 for anything else)."""
    for kind, status in HTTP_STATUS:
        if isinstance(exc, kind):
            return status
    return 500


class ObservedHub(Protocol):
    """What the routes read from a hub (a :class:`~hub.Hub` satisfies it)."""

    hub_id: str

    @property
    def state(self) -> str: ...

    def is_locked(self) -> bool: ...

    def unsynced_peers(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class HubHealth:
    hub_id: str
    state: str  # "new" | "running" | "draining" | "stopping" | "stopped"
    locked: bool
    unsynced: tuple[str, ...]  # peers whose registry partition this node does not have yet


@dataclass(frozen=True, slots=True)
class Readiness:
    ready: bool
    reasons: tuple[str, ...]

    def body(self) -> dict[str, Any]:
        return {"ready": self.ready, "reasons": list(self.reasons)}


def readiness(
    *, node_state: str | None, has_seeds: bool, joined: bool, hubs: Sequence[HubHealth]
) -> Readiness:
    """Ready = the node runs, it joined a cluster if it was given seeds, and every hub on it
    runs (not draining), is not locked and has every peer's registry partition. ``node_state``
    is ``None`` for a standalone hub (no network endpoint)."""
    reasons: list[str] = []
    if node_state is not None:
        if node_state != "running":
            reasons.append(f"node is {node_state}")
        elif has_seeds and not joined:
            reasons.append("node was given seeds and has joined no cluster yet")
    if not hubs:
        reasons.append("no hub runs on this node")
    for h in hubs:
        if h.state != "running":
            reasons.append(f"hub {h.hub_id} is {h.state}")
        if h.locked:
            reasons.append(f"hub {h.hub_id} is locked (partition strategy)")
        if h.unsynced:
            peers = ", ".join(sorted(h.unsynced)[:5])
            more = f" and {len(h.unsynced) - 5} more" if len(h.unsynced) > 5 else ""
            reasons.append(f"hub {h.hub_id}: registry not synchronized with {peers}{more}")
    return Readiness(not reasons, tuple(reasons))


#: A handler that costs one C call and keeps nothing: for events counted by their dispatches.
_DISCARD: Final = deque[Any](maxlen=0).append


class HubCounters:
    """Monotonic counts of a hub's events for the metrics' ``_total`` counters, kept by
    internal hook handlers (ids ``mx_*``). Events counted one per dispatch get a C-level no-op
    handler (``deque(maxlen=0).append``) and are read from the manager's own dispatch counter
    (:meth:`HookManager.stats`); the two batch events (``PROCESS_STARTUPS``,
    ``CHILDREN_MIGRATED``) get an integer increment by batch size. The only other added work
    is building ``PROCESS_STARTUPS`` (one list per start batch) now that someone listens."""

    #: ``(handler id, event)`` of every internal handler this registers.
    HANDLERS = (
        ("mx_starts", Hook.PROCESS_STARTUPS),
        ("mx_restarts", Hook.CHILD_PROCESS_PID_UPDATE),
        ("mx_crashes", Hook.CHILD_CRASHED),
        ("mx_buried", Hook.CHILD_BURIED),
        ("mx_migrated", Hook.CHILDREN_MIGRATED),
        ("mx_migration_failed", Hook.MIGRATION_FAILED),
        ("mx_conflicts", Hook.CHILD_CONFLICT),
    )

    __slots__ = ("_hooks", "migrated_in", "starts")

    def __init__(self) -> None:
        self.starts = 0
        self.migrated_in = 0
        self._hooks: HookManager | None = None

    def attach(self, hooks: HookManager) -> None:
        self._hooks = hooks
        calls: dict[str, Callable[[Any], None]] = {
            "mx_starts": self._started,
            "mx_migrated": self._migrated,
        }
        for hid, event in self.HANDLERS:
            handler = HookHandler(hid, calls.get(hid, _DISCARD), priority=1000)
            hooks.register(event, handler, internal=True)

    def _dispatched(self, event: Hook) -> int:
        return self._hooks.stats(event).dispatched if self._hooks is not None else 0

    @property
    def restarts(self) -> int:
        return self._dispatched(Hook.CHILD_PROCESS_PID_UPDATE)

    @property
    def crashes(self) -> int:
        return self._dispatched(Hook.CHILD_CRASHED)

    @property
    def buried(self) -> int:
        return self._dispatched(Hook.CHILD_BURIED)

    @property
    def migration_failed(self) -> int:
        return self._dispatched(Hook.MIGRATION_FAILED)

    @property
    def conflicts(self) -> int:
        return self._dispatched(Hook.CHILD_CONFLICT)

    def _started(self, data: Any) -> None:
        self.starts += len(data)

    def _migrated(self, data: Any) -> None:
        self.migrated_in += len(data[1])


def hub_health(hub: ObservedHub) -> HubHealth:
    return HubHealth(hub.hub_id, hub.state, hub.is_locked(), tuple(hub.unsynced_peers()))


class Observed:
    """A read-only view of what the routes report: a node (or none, for a standalone hub) and
    the hubs on it (``hubs()`` is read at each request, so hubs may come and go)."""

    def __init__(self, node: Node | None, hubs: Callable[[], Sequence[Any]]) -> None:
        self.node = node
        self.hubs = hubs
        self._metrics: NodeMetrics | None = None
        self._metrics_error: str | None = None

    def alive(self) -> bool:
        if self.node is not None:
            return self.node.running
        return any(h.is_alive() for h in self.hubs())

    def readiness(self) -> Readiness:
        node = self.node
        return readiness(
            node_state=node.state if node is not None else None,
            has_seeds=bool(node.seeds) if node is not None else False,
            joined=node.joined if node is not None else True,
            hubs=[hub_health(h) for h in self.hubs()],
        )

    def metrics(self) -> NodeMetrics | None:
        """The node's metrics registry, built on first use; ``None`` without prometheus_client."""
        if self._metrics is None and self._metrics_error is None:
            try:
                from .metrics import NodeMetrics
            except ImportError as exc:
                self._metrics_error = str(exc)
                return None
            self._metrics = NodeMetrics(self.node, self.hubs)
        return self._metrics

    # -- handlers ------------------------------------------------------------------------------

    async def handle_alive(self, request: web.Request) -> web.Response:
        if self.alive():
            return _json(200, {"alive": True})
        return _json(503, {"alive": False})

    async def handle_ready(self, request: web.Request) -> web.Response:
        state = self.readiness()
        return _json(200 if state.ready else 503, state.body())

    async def handle_metrics(self, request: web.Request) -> web.Response:
        metrics = self.metrics()
        if metrics is None:
            return web.Response(
                status=501,
                text="metrics need prometheus_client: pip install 'processhub[metrics]'\n",
                content_type="text/plain",
            )
        body, content_type = metrics.render(request.headers.get("Accept"))
        response = web.Response(body=body)
        response.headers["Content-Type"] = content_type
        return response


_OBSERVED: weakref.WeakKeyDictionary[Node, Observed] = weakref.WeakKeyDictionary()


def _node_routes(app: web.Application, node: Node) -> None:
    """The read-only routes of a node endpoint (unless ``observability=False``)."""
    if not node.observability:
        return
    observed = _OBSERVED.get(node)
    if observed is None:
        observed = _OBSERVED[node] = Observed(node, lambda: list(node.hubs.values()))
    add_read_only_routes(app, observed)


add_route_provider(_node_routes)


def add_read_only_routes(app: web.Application, observed: Observed) -> None:
    """Mount ``/metrics``, ``/health/alive`` and ``/health/ready`` on ``app``."""
    app.router.add_get(METRICS_PATH, observed.handle_metrics)
    app.router.add_get(ALIVE_PATH, observed.handle_alive)
    app.router.add_get(READY_PATH, observed.handle_ready)


def _json(status: int, body: dict[str, Any]) -> web.Response:
    return web.Response(
        status=status, text=json.dumps(body, sort_keys=True), content_type="application/json"
    )
