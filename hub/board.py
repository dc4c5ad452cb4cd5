"""What a node can tell an operator: its hubs, their ring shares, children, hook events.

A :class:`Board` exists per started :class:`~hub.cluster.node.Node` (made by :func:`mount`).
Every hub on the node registers with it when it starts (:func:`hub_started`): the board keeps a
bounded buffer of the hub's recent hook events (from an internal hook handler that appends to a
deque and nothing else, so it never slows a dispatch) and answers the node's **control
channel**, the hub id :data:`CONTROL` on the node's authenticated peer links:

- ``info``: :func:`node_info`, a summary of this node (version, hubs, ring shares, children per
  node and per local state, buried children, hook statistics, recent events and errors);
- ``drain``: drains this node's hubs (``hub.drain()``) and reports what moved.

The ``processhub`` CLI and the dashboard (:mod:`hub.dashboard`) read other nodes through it.
Nothing it returns contains a secret: children appear by id (with their start reference and
tags), never with their arguments.
"""

from __future__ import annotations

import logging
import platform
import time
import weakref
from collections import deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from .cluster.messages import NodeId, State
from .cluster.node import add_route_provider
from .errors import HubClosed, InvalidSpec
from .events import Hook
from .hooks import HookHandler
from .pid import Pid
from .spec import ChildSpec

if TYPE_CHECKING:
    from aiohttp import web

    from .cluster.node import Node
    from .hub import Hub

__all__ = [
    "CONTROL",
    "EVENT_BUFFER",
    "HOOK_ID",
    "RING_PROBES",
    "Board",
    "board_of",
    "describe",
    "hub_started",
    "hub_stopped",
    "mount",
    "node_info",
    "ring_shares",
]

logger = logging.getLogger(__name__)

#: The hub id of the node-level control channel on the peer links.
CONTROL = "processhub.control"
#: The id of the board's internal hook handler on every hub of the node.
HOOK_ID = "processhub_board"
#: Recent hook events kept per hub.
EVENT_BUFFER = 200
#: Recent WARNING/ERROR log records kept per process.
ERROR_BUFFER = 50
#: Ids sampled to measure ring shares (a share is the fraction of them a node owns).
RING_PROBES = 4096
#: Events the board listens to. Left out: the alter hook (a listener there would have to
#: return the data) and the per-child registry events (counted in the children per node).
WATCHED: tuple[Hook, ...] = tuple(
    h
    for h in Hook
    if h
    not in (
        Hook.CHILD_DATA_ALTER,
        Hook.REGISTRY_PID_INSERTED,
        Hook.REGISTRY_PID_REMOVED,
        Hook.CHILD_PROCESS_PID_UPDATE,
    )
)
#: Events that are about moving children (shown as "recent migrations").
MIGRATION_EVENTS = frozenset(
    h
    for h in Hook
    if h.value
    in (
        "pre_children_redistribution",
        "children_migrated",
        "forwarded_migration",
        "migration_failed",
        "handover_delivered",  # with hot migration
    )
)
#: Events that are about something going wrong (shown among "recent errors").
ERROR_EVENTS = frozenset({Hook.CHILD_CRASHED, Hook.CHILD_BURIED, Hook.MIGRATION_FAILED})
_TEXT_LIMIT = 200
#: A payload list longer than this is described when recorded, not kept (:func:`_bulky`).
_KEPT_ITEMS = 50


@dataclass(frozen=True, slots=True)
class Event:
    """One hook event as the board keeps it (the payload is described lazily)."""

    seq: int
    at: float  # wall clock, seconds since the epoch
    hub: str
    event: str
    data: Any

    def to_json(self) -> dict[str, Any]:
        return {
            "seq": self.seq,
            "at": round(self.at, 3),
            "hub": self.hub,
            "event": self.event,
            "text": describe(self.data),
        }


class _Errors(logging.Handler):
    """Keeps the process's recent WARNING and ERROR records of the ``hub`` and ``strategies``
    loggers (one handler per process, shared by its boards)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.records: deque[tuple[float, str, str, str]] = deque(maxlen=ERROR_BUFFER)
        self.users = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            text = record.getMessage()
        except Exception:  # a bad format string must not break logging
            text = str(record.msg)
        self.records.append((record.created, record.levelname, record.name, text[:500]))


_ERRORS = _Errors()
_LOGGERS = ("hub", "strategies")


class Board:
    """The per-node registry of hubs and their recent hook events."""

    def __init__(self, node: Node, *, dashboard: bool) -> None:
        self._node = weakref.ref(node)
        self.dashboard = dashboard
        self.hubs: dict[str, Hub] = {}
        self.events: dict[str, deque[Event]] = {}
        self.seq = 0
        self._listeners: list[Any] = []  # callables woken (sync) when an event is recorded
        self._shares: dict[str, tuple[Any, dict[str, float]]] = {}

    @property
    def node(self) -> Node:
        node = self._node()
        if node is None:
            raise RuntimeError("the board's node is gone")
        return node

    # -- hubs --------------------------------------------------------------------------------

    def add(self, hub: Hub) -> None:
        self.hubs[hub.hub_id] = hub
        self.events[hub.hub_id] = deque(maxlen=EVENT_BUFFER)
        hub_id = hub.hub_id
        for event in WATCHED:
            handler = HookHandler(HOOK_ID, self._recorder(hub_id, str(event)))
            hub.hooks.register(event, handler, internal=True)

    def remove(self, hub: Hub) -> None:
        if self.hubs.get(hub.hub_id) is not hub:
            return
        del self.hubs[hub.hub_id]
        self._shares.pop(hub.hub_id, None)
        for event in WATCHED:
            hub.hooks.cancel(event, HOOK_ID, force=True)

    def _recorder(self, hub_id: str, event: str) -> Any:
        def record(data: Any) -> None:
            self.seq += 1
            buffer = self.events.get(hub_id)
            if buffer is not None:
                if _bulky(data):  # keep its text, not 100,000 payload items until it rolls out
                    data = describe(data)
                buffer.append(Event(self.seq, time.time(), hub_id, event, data))
            for wake in self._listeners:
                wake()

        return record

    def listen(self, wake: Any) -> None:
        """Call ``wake()`` (sync, cheap) whenever an event is recorded."""
        self._listeners.append(wake)

    def unlisten(self, wake: Any) -> None:
        if wake in self._listeners:
            self._listeners.remove(wake)

    def recent(self, hub_id: str | None = None, after: int = 0) -> list[Event]:
        """Recorded events with ``seq > after`` (of one hub, or all), oldest first."""
        buffers = [self.events.get(hub_id, deque())] if hub_id else list(self.events.values())
        found = [e for buffer in buffers for e in buffer if e.seq > after]
        found.sort(key=lambda e: e.seq)
        return found

    def shares(self, hub: Hub) -> dict[str, float]:
        """Ring share of each placement node of ``hub`` (cached per view)."""
        coordinator = hub.coordinator
        if coordinator is None:
            return {hub.node: 1.0}
        view = coordinator.view()
        key = (view.live, view.draining)
        cached = self._shares.get(hub.hub_id)
        if cached is not None and cached[0] == key:
            return cached[1]
        shares = ring_shares(coordinator.owners, sorted(view.live))
        self._shares[hub.hub_id] = (key, shares)
        return shares


_BOARDS: weakref.WeakKeyDictionary[Node, Board] = weakref.WeakKeyDictionary()


def board_of(node: Node) -> Board | None:
    """The board of a started node (``None`` before :func:`mount`)."""
    return _BOARDS.get(node)


def mount(app: web.Application, node: Node, *, dashboard: bool = True) -> Board:
    """Give ``node`` its board: the control channel on its peer links and, with ``dashboard``,
    the dashboard routes on ``app`` (see :mod:`hub.dashboard`). Called by ``Node.start``."""
    board = _BOARDS.get(node)
    if board is None:
        board = _BOARDS[node] = Board(node, dashboard=dashboard)
        node.links.register(CONTROL, _control_handler(board))
        if _ERRORS.users == 0:
            for name in _LOGGERS:
                logging.getLogger(name).addHandler(_ERRORS)
        _ERRORS.users += 1

        async def release(_app: web.Application) -> None:
            node.links.unregister(CONTROL)
            _ERRORS.users -= 1
            if _ERRORS.users == 0:
                for name in _LOGGERS:
                    logging.getLogger(name).removeHandler(_ERRORS)

        app.on_cleanup.append(release)
    if dashboard:
        from .dashboard import routes  # the dashboard imports this module

        routes(app, board)
    return board


def _node_routes(app: web.Application, node: Node) -> None:
    mount(app, node, dashboard=node.dashboard and node.observability)


add_route_provider(_node_routes)


def hub_started(hub: Hub) -> None:
    """Register a hub that runs on a node endpoint with the node's board."""
    endpoint = hub.endpoint
    board = _BOARDS.get(endpoint) if endpoint is not None else None
    if board is not None:
        board.add(hub)


def hub_stopped(hub: Hub) -> None:
    endpoint = hub.endpoint
    board = _BOARDS.get(endpoint) if endpoint is not None else None
    if board is not None:
        board.remove(hub)


# -- the summary -------------------------------------------------------------------------------


def ring_shares(owner_of: Any, nodes: Iterable[str]) -> dict[str, float]:
    """The fraction of :data:`RING_PROBES` fixed probe ids whose first owner is each node
    (``owner_of(child_id)`` returns the owners in order), rounded to 4 places; nodes that own
    none of them have share 0."""
    counts = dict.fromkeys(nodes, 0)
    for i in range(RING_PROBES):
        owners = owner_of(f"ring-probe-{i}")
        if owners:
            counts[owners[0]] = counts.get(owners[0], 0) + 1
    return {n: round(c / RING_PROBES, 4) for n, c in sorted(counts.items())}


def _tags(spec: ChildSpec, metadata: Mapping[str, Any]) -> list[str]:
    found: list[str] = []
    for meta in (metadata, spec.metadata):
        if not meta:
            continue
        tag = meta.get("tag")
        if isinstance(tag, str | int):
            found.append(str(tag))
        tags = meta.get("tags")
        if isinstance(tags, list | tuple | set | frozenset):
            found += [str(t) for t in tags if isinstance(t, str | int)]
    return sorted(set(found))


def hub_info(board: Board, hub: Hub) -> dict[str, Any]:
    """The summary of one hub on this node (msgpack and JSON data)."""
    coordinator = hub.coordinator
    runtime = hub.runtime
    registry = runtime.registry
    states: dict[str, int] = {}
    for child in runtime.children().values():
        states[child.state] = states.get(child.state, 0) + 1
    draining: list[str] = []
    if coordinator is not None:
        draining = sorted(coordinator.view().draining)
    local_buried = {b.child_id for b in runtime.supervisor.buried()}
    buried = [
        {
            "id": b.child_id,
            "node": hub.node if b.child_id in local_buried else "",
            "attempts": b.attempts,
            "error": describe(b.error),
            "at": round(b.at, 3),
        }
        for b in hub.buried()
    ]
    hooks: dict[str, list[Any]] = {}
    for event in Hook:
        stats = hub.hooks.stats(event)
        if stats.dispatched or stats.failures:
            last = list(stats.last_error) if stats.last_error else None
            hooks[str(event)] = [stats.dispatched, stats.failures, last]
    events = board.recent(hub.hub_id)
    partition = hub.strategies.partition.describe()
    return {
        "state": "running" if hub.is_alive() else "stopped",
        "members": hub.nodes(include_local=True),
        "draining": draining,
        "ring": board.shares(hub),
        "children": {node: len(part.entries) for node, part in sorted(registry.partitions.items())},
        "versions": {node: part.version for node, part in sorted(registry.partitions.items())},
        "states": dict(sorted(states.items())),
        "local": len(runtime.children()),
        "locked": hub.is_locked(),
        "partitioned": hub.is_partitioned(),
        "partition": {k: v for k, v in partition.items() if isinstance(v, str | int | bool)},
        "buried": buried,
        "hooks": hooks,
        "migrations": [e.to_json() for e in events if e.event in MIGRATION_EVENTS][-20:],
        "errors": [e.to_json() for e in events if e.event in ERROR_EVENTS][-20:],
    }


def node_info(board: Board) -> dict[str, Any]:
    """The summary of this node that the control channel's ``info`` answers."""
    from . import __version__

    node = board.node
    return {
        "node": node.name,
        "boot": node.boot_id,
        "address": f"{node.address.host}:{node.address.port}",
        "version": __version__,
        "python": platform.python_version(),
        "dashboard": board.dashboard,
        "hubs": {hub_id: hub_info(board, hub) for hub_id, hub in sorted(board.hubs.items())},
        "log": [
            {"at": round(at, 3), "level": level, "logger": name, "message": text}
            for at, level, name, text in list(_ERRORS.records)[-20:]
        ],
    }


def members(node: Node) -> list[dict[str, Any]]:
    """The node's membership view (every state), as data."""
    out = []
    for m in sorted(node.members(), key=lambda m: m.node.name):
        out.append(
            {
                "name": m.node.name,
                "boot": m.node.boot_id,
                "state": m.state.name,
                "incarnation": m.incarnation,
                "address": f"{m.address.host}:{m.address.port}",
                "hubs": sorted(str(h) for h in m.meta.get("hubs", ()) or ()),
                "draining": sorted(str(h) for h in m.meta.get("draining", ()) or ()),
                "live": m.state in (State.ALIVE, State.SUSPECT),
            }
        )
    return out


# -- the control channel -----------------------------------------------------------------------


def _control_handler(board: Board) -> Any:
    async def handle(peer: NodeId, kind: str, payload: Any) -> Any:
        if kind == "info":
            return node_info(board)
        if kind == "drain":
            wanted = payload.get("hubs") if isinstance(payload, dict) else None
            hubs = sorted(board.hubs) if not wanted else [str(h) for h in wanted]
            unknown = [h for h in hubs if h not in board.hubs]
            if unknown:
                raise InvalidSpec(f"{board.node.name} runs no hub {', '.join(unknown)}")
            logger.warning(
                "draining hubs %s of node %s (asked by %s)",
                ", ".join(hubs) or "(none)",
                board.node.name,
                peer.name,
            )
            out = {}
            for hub_id in hubs:
                hub = board.hubs[hub_id]
                try:
                    result = await hub.drain()
                except HubClosed:
                    if not hub.is_alive():
                        raise
                    out[hub_id] = {"moved": [], "errors": [], "already": True}  # draining
                    continue
                out[hub_id] = {
                    "moved": sorted(cid for cid, _ in result.stopped),
                    "errors": [[cid, str(exc)] for cid, exc in result.errors],
                    "already": False,
                }
            return out
        raise InvalidSpec(f"unknown control request {kind!r}")

    return handle


# -- describing payloads -----------------------------------------------------------------------


def _bulky(data: Any) -> bool:
    """Whether a payload holds a list longer than :data:`_KEPT_ITEMS` (at its top level or
    in a field of a payload named tuple): the board describes it at once instead of keeping
    it (a start of 100,000 children reports one item per child)."""
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return any(isinstance(v, list | tuple) and len(v) > _KEPT_ITEMS for v in data)
    return isinstance(data, list | tuple) and len(data) > _KEPT_ITEMS


def describe(data: Any, limit: int = _TEXT_LIMIT) -> str:
    """A short, secret-free text for a hook payload: specs by id (never their arguments),
    pids and exceptions as text, long lists cut."""
    text = _describe(data, 0)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _describe(data: Any, depth: int) -> str:
    if isinstance(data, ChildSpec):
        return data.id
    if isinstance(data, Pid):
        return str(data)
    if isinstance(data, BaseException):
        message = str(data)
        return f"{type(data).__name__}: {message}" if message else type(data).__name__
    if isinstance(data, str):  # a bulky payload's description too
        return data
    if data is None or isinstance(data, bool | int | float):
        return repr(data)
    if depth >= 3:
        return "…"
    if isinstance(data, tuple) and hasattr(data, "_fields"):  # a payload NamedTuple
        return " ".join(_describe(v, depth + 1) for v in data)
    if isinstance(data, list | tuple):
        items = [_describe(v, depth + 1) for v in data[:5]]
        more = f" (+{len(data) - 5})" if len(data) > 5 else ""
        return "[" + ", ".join(items) + more + "]"
    if isinstance(data, Mapping):
        items = [f"{k}={_describe(v, depth + 1)}" for k, v in list(data.items())[:5]]
        return "{" + ", ".join(items) + "}"
    return type(data).__name__
