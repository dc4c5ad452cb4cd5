"""The hub's events (:class:`Hook`) and the payload each one carries.

Every payload is a small named tuple: it unpacks like the plain tuple documented in the
contract (``child_id, nodes = data``) and has named fields for readability (``data.child_id``).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any, NamedTuple

from .pid import Pid

__all__ = [
    "ChildBuried",
    "ChildConflict",
    "ChildCrashed",
    "ChildStarted",
    "ChildStopped",
    "ChildrenMigrated",
    "HandoverDelivered",
    "HandoverSkipped",
    "Hook",
    "MigrationFailed",
    "ModeChanged",
    "PidInserted",
    "PidRemoved",
    "PidUpdate",
    "PriorityState",
    "Redistribution",
]


class Hook(StrEnum):
    """Events the hub dispatches. A member equals its string value, so ``"child_crashed"`` and
    ``Hook.CHILD_CRASHED`` name the same event. The payload of each is given below."""

    #: A node is about to be added to the hub's membership. Data: node name (``str``).
    PRE_CLUSTER_JOIN = "pre_cluster_join"
    #: A node was added to the hub's membership and redistribution is done. Data: node name.
    POST_CLUSTER_JOIN = "post_cluster_join"
    #: A node is about to be removed from the hub's membership. Data: node name.
    PRE_CLUSTER_LEAVE = "pre_cluster_leave"
    #: A node was removed and its children were redistributed. Data: node name.
    POST_CLUSTER_LEAVE = "post_cluster_leave"
    #: A child was added to (or moved in) the registry. Data: :class:`PidInserted`.
    REGISTRY_PID_INSERTED = "registry_pid_inserted"
    #: A child was removed from the registry on some nodes. Data: :class:`PidRemoved`.
    REGISTRY_PID_REMOVED = "registry_pid_removed"
    #: Children arrived on this node by migration. Data: :class:`ChildrenMigrated`.
    CHILDREN_MIGRATED = "children_migrated"
    #: A start request was forwarded to the current owner. Data: ``[(node, [child data])]``.
    FORWARDED_MIGRATION = "forwarded_migration"
    #: The partition strategy locked or unlocked the hub. Data: :class:`PriorityState`.
    PRIORITY_STATE_UPDATED = "priority_state_updated"
    #: Redistribution after a topology change is about to run. Data: :class:`Redistribution`.
    PRE_NODES_REDISTRIBUTION = "pre_nodes_redistribution"
    #: Redistribution after a topology change finished. Data: :class:`Redistribution`.
    POST_NODES_REDISTRIBUTION = "post_nodes_redistribution"
    #: A start request was accepted. Data: the list of :class:`~hub.ChildSpec` to start.
    PRE_CHILDREN_START = "pre_children_start"
    #: A start request finished. Data: ``[ChildStarted(child_id, result, pid, nodes)]``.
    POST_CHILDREN_START = "post_children_start"
    #: Children are about to move between nodes. Data: ``[(child_id, from_node, to_node)]``.
    PRE_CHILDREN_REDISTRIBUTION = "pre_children_redistribution"
    #: The hub is shutting down. Data: the reason (``str``).
    COORDINATOR_SHUTDOWN = "coordinator_shutdown"
    #: A batch of local children started. Data: ``[(child_id, pid)]``.
    PROCESS_STARTUPS = "process_startups"
    #: A child got a new pid (restart in place). Data: :class:`PidUpdate`.
    CHILD_PROCESS_PID_UPDATE = "child_process_pid_update"
    #: Alter hook: each handler receives a :class:`~hub.ChildSpec` about to start and returns
    #: the (possibly replaced) spec to start instead.
    CHILD_DATA_ALTER = "child_data_alter"
    #: A child raised (or its start failed). Data: :class:`ChildCrashed`.
    CHILD_CRASHED = "child_crashed"
    #: A child stopped: by request, normal exit or cancellation. Data: :class:`ChildStopped`.
    CHILD_STOPPED = "child_stopped"
    #: A child exhausted its restart intensity and was removed. Data: :class:`ChildBuried`.
    CHILD_BURIED = "child_buried"
    #: This node's registry converged after a topology change. Data: node name.
    CLUSTER_SYNCHRONIZED = "cluster_synchronized"
    #: The partition strategy lost quorum. Data: :class:`PriorityState`.
    QUORUM_LOST = "quorum_lost"
    #: The partition strategy regained quorum. Data: :class:`PriorityState`.
    QUORUM_REGAINED = "quorum_regained"
    #: A duplicate child was found and resolved. Data: :class:`ChildConflict`.
    CHILD_CONFLICT = "child_conflict"
    #: A move of a child failed (the target refused it, failed to start it or did not
    #: answer). Under HotSwap the old copy keeps running (or, when its state was already
    #: taken, restarts on the source with it); otherwise the child's owner restarts it from
    #: its spec. Data: :class:`MigrationFailed`.
    MIGRATION_FAILED = "migration_failed"
    #: The mode of a local copy changed under replication: a replica became the primary
    #: (``"active"``) when the primary's node left or died, or a copy stopped being it.
    #: Dispatched on the copy's node, after ``ctx.mode`` changed; the process's
    #: ``on_mode_change(mode)`` runs in its own task. Data: :class:`ModeChanged`.
    CHILD_MODE_CHANGED = "child_mode_changed"
    #: A hot move's state reached the new copy: its ``receive_handover(state)`` returned.
    #: Dispatched on the target node. Data: :class:`HandoverDelivered`.
    HANDOVER_DELIVERED = "handover_delivered"
    #: A hot move went ahead without the state: the new copy did not become ready within the
    #: strategy's ``retention``, the state was larger than ``max_state_bytes`` or not msgpack
    #: data, or ``handover_state()`` raised. The new copy starts from its spec (a cold move);
    #: messages are still carried over. Dispatched on the source node.
    #: Data: :class:`HandoverSkipped`.
    HANDOVER_SKIPPED = "handover_skipped"


class PidInserted(NamedTuple):
    """Data of :attr:`Hook.REGISTRY_PID_INSERTED`."""

    child_id: str
    nodes: list[tuple[str, Pid]]


class PidRemoved(NamedTuple):
    """Data of :attr:`Hook.REGISTRY_PID_REMOVED`."""

    child_id: str
    nodes: list[str]


class PidUpdate(NamedTuple):
    """Data of :attr:`Hook.CHILD_PROCESS_PID_UPDATE`."""

    node: str
    child_id: str
    pid: Pid


class ChildStarted(NamedTuple):
    """One element of :attr:`Hook.POST_CHILDREN_START` data. ``result`` is ``"ok"``,
    ``"already_started"`` or ``"error: <reason>"``."""

    child_id: str
    result: str
    pid: Pid | None
    nodes: list[str]


class ChildCrashed(NamedTuple):
    """Data of :attr:`Hook.CHILD_CRASHED`. ``attempt`` counts crashes inside the current
    restart-intensity window, starting at 1."""

    child_id: str
    error: BaseException
    attempt: int


class ChildStopped(NamedTuple):
    """Data of :attr:`Hook.CHILD_STOPPED`."""

    child_id: str
    reason: Any


class ChildBuried(NamedTuple):
    """Data of :attr:`Hook.CHILD_BURIED`."""

    child_id: str
    error: BaseException
    attempts: int


class ChildrenMigrated(NamedTuple):
    """Data of :attr:`Hook.CHILDREN_MIGRATED`."""

    node: str
    specs: list[Any]


class Redistribution(NamedTuple):
    """Data of :attr:`Hook.PRE_NODES_REDISTRIBUTION` / :attr:`Hook.POST_NODES_REDISTRIBUTION`."""

    kind: str  # "nodeup" | "nodedown"
    node: str


class PriorityState(NamedTuple):
    """Data of :attr:`Hook.PRIORITY_STATE_UPDATED`, :attr:`Hook.QUORUM_LOST` and
    :attr:`Hook.QUORUM_REGAINED`."""

    locked: bool
    info: dict[str, Any]


class ChildConflict(NamedTuple):
    """Data of :attr:`Hook.CHILD_CONFLICT`: which copy was kept and which was stopped."""

    child_id: str
    winner: str
    loser: str


class ModeChanged(NamedTuple):
    """Data of :attr:`Hook.CHILD_MODE_CHANGED`."""

    child_id: str
    node: str
    old: str
    new: str


class HandoverDelivered(NamedTuple):
    """Data of :attr:`Hook.HANDOVER_DELIVERED`: the size of the encoded state, in bytes."""

    child_id: str
    from_node: str
    to_node: str
    size: int


class HandoverSkipped(NamedTuple):
    """Data of :attr:`Hook.HANDOVER_SKIPPED`. ``reason`` is ``"retention"``, ``"too_big"``,
    ``"unencodable"`` or ``"handover_state"``; ``detail`` says more."""

    child_id: str
    from_node: str
    to_node: str
    reason: str
    detail: str


class MigrationFailed(NamedTuple):
    """Data of :attr:`Hook.MIGRATION_FAILED`."""

    child_id: str
    from_node: str
    to_node: str
    reason: str
