"""The cluster shell of one hub: it executes the planner's decisions over the peer links.

The coordinator decides nothing about placement itself. It keeps the planner's inputs current
and executes its actions (:mod:`hub.planner`):

* **Membership** of the hub (from the node's SWIM events): members by name and boot, which
  ones drain (node metadata ``draining``), which peers' registry partitions are synced. Each
  change is wrapped in its hooks (``PRE_CLUSTER_JOIN`` updates the ring first, at priority 100).
* **Desired state** (:mod:`hub.desired`), replicated on every node: a start request writes a
  live record, a stop a tombstone, a burial a buried record. Records travel with the registry
  entries of the children that run, in their own list for the others, and by bucket digest
  anti-entropy, so what should run survives the loss of any node.
* **Registry sync** (PubSub): local writes are coalesced for ``batch_window`` and sent to every
  peer as versioned deltas (at most ``max_batch`` ops a frame); a gap is answered with a
  snapshot (``max_batch`` entries a frame); every ``anti_entropy_interval`` each node sends its
  registry versions and desired digests, and peers repair what differs.
* **Planning**: after every change the planner runs on the children whose inputs changed, in
  slices with a turn of the event loop between them, and a rolling sweep plans every child
  again over a few ``reconcile_interval`` periods (:data:`SWEEP` children a period); its
  starts, stops, moves, conflicts and burials are executed here, their results fed back.
* **Routing**: starts go to the owners (forwarded at most :data:`MAX_HOPS` times), stops to the
  nodes that run the child, messages to the copy the registry names.
* **Leaving** (``hub.stop()``, ``drain()``): the node announces that it drains, so no node places
  anything on it, hands its children to their owners, and (on stop) makes sure its final
  registry state reached the peers before it leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import heapq
import logging
import math
import sys
import time
from collections import ChainMap
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from typing import Any

from .cluster.links import LinkError, RemoteError
from .cluster.membership import Member, MemberEvent
from .cluster.messages import NodeId, State
from .cluster.node import Node, NodeEvent
from .desired import BURIED, LIVE, STOPPED, DesiredTable, Record
from .errors import (
    AlreadyStarted,
    HubError,
    InvalidSpec,
    MailboxFull,
    NodeUnreachable,
    NotDelivered,
    NotFound,
    QuorumLost,
    StartFailed,
    Timeout,
)
from .events import (
    ChildBuried,
    ChildConflict,
    ChildCrashed,
    ChildrenMigrated,
    HandoverDelivered,
    HandoverSkipped,
    Hook,
    MigrationFailed,
    ModeChanged,
    PidInserted,
    PidRemoved,
    PidUpdate,
    PriorityState,
    Redistribution,
)
from .local import LocalRuntime
from .messaging import Messenger
from .pacing import Pace, RollingSweep, in_slices, paced
from .pid import Pid
from .planner import (
    Bury,
    Conflict,
    Failures,
    LocalChild,
    Move,
    Plan,
    Planner,
    Start,
    Stop,
    View,
    catching_up,
    foreign_starts,
    owned_elsewhere,
    start_target,
    strays,
    synchronized,
)
from .policies import Mode, Strategies, is_spec_aware
from .process import NO_STATE, Arrival, Call
from .registry import Change, Delta, Entry, Registry, Snapshot
from .spec import ChildSpec
from .supervisor import Backoff, Leftover, RemovalKind
from .tuning import gc_advice
from .wire import (
    delta_to_wire,
    dumps,
    entry_from_wire,
    entry_to_wire,
    error_from_wire,
    error_to_wire,
    loads,
    members_from_wire,
    pid_from_wire,
    record_from_wire,
    state_from_wire,
    state_to_wire,
)

__all__ = ["MAX_HOPS", "Coordinator"]

logger = logging.getLogger(__name__)

MAX_HOPS = 2  # a start request is forwarded at most this often, then starts where it is
MIGRATION_BATCH = 500
#: migration batches a node has in flight to one target: a joiner that 3 nodes sent every
#: batch at once started none of them within the request's timeout
BATCHES_PER_TARGET = 2
START_BATCH = 2_000  # records in one start request (bounded frames)
MOVE_WINDOW = 5.0  # seconds a node waits for a child announced to be moving to it
LEAVE_TIMEOUT = 30.0  # at most this long to hand children off before leaving
FLUSH_TIMEOUT = 2.0  # at most this long for peers to acknowledge the final registry state
STABLE_DIFF = 3.0  # seconds a desired bucket must differ the same way before it is pushed
STALE_SNAPSHOT = 5.0  # seconds a partly received snapshot may wait for its other parts
#: seconds our copy of a peer's partition may stay behind the version the peer announced before
#: we ask for a snapshot (its deltas may still be on the way; a gap is asked for at once)
BEHIND_GRACE = 2.0
MAX_EARLY_DELTAS = 1_000  # delta frames of a peer kept while its snapshot arrives
#: seconds at most that moves to a node that joined wait for it to load the registry
LOAD_HOLD = 30.0
SYNC_INTERVAL = 0.1  # anti-entropy period while a topology change is not yet synchronized
MAX_SNAPSHOT_PARTS = 10_000
FAILED_MEMORY = 3600.0  # seconds a failed member still counts as known (for quorum)
HOLD_FOR = 30.0  # seconds messages for a child that left wait for it to show up somewhere
FORWARD_FOR = 10.0  # seconds a node forwards messages for a child that moved away
INBOX_FRAME_BYTES = 4 * 1024 * 1024  # moved mailbox data in one frame
INBOX_TTL = 60.0  # seconds a moved mailbox waits for its child's start here
PLAN_SLICE = 2_000  # children planned between two turns of the event loop
SWEEP = 10_000  # children the rolling reconciliation plans every reconcile_interval


class _Incoming:
    """A hot move's new copy on this node, waiting for the old copy's state."""

    __slots__ = ("arrival", "source", "timer")

    def __init__(self, arrival: Arrival, source: str, timer: asyncio.TimerHandle) -> None:
        self.arrival = arrival
        self.source = source
        self.timer = timer


class Coordinator:
    """The distributed half of a :class:`~hub.Hub` (created by the hub when it has an endpoint).

    It talks to the hub only through the :class:`~hub.local.LocalRuntime` it is given."""

    def __init__(
        self,
        hub_id: str,
        runtime: LocalRuntime,
        endpoint: Node,
        strategies: Strategies,
        *,
        reconcile_interval: float,
        start_timeout: float,
        backoff: Backoff | None = None,
    ) -> None:
        self.hub_id = hub_id
        self.runtime = runtime
        self.endpoint = endpoint
        self.distribution = strategies.distribution
        self.redundancy = strategies.redundancy
        self.migration = strategies.migration
        self.sync = strategies.synchronization
        self.partition = strategies.partition
        self.reconcile_interval = reconcile_interval
        self.start_timeout = start_timeout
        self.backoff = backoff or Backoff(base=0.05, cap=2.0)
        self.rf = int(self.redundancy.replication_factor)
        self._guided = is_spec_aware(self.distribution)  # checked once: a Protocol check is slow
        self.chunk = max(1, int(self.sync.max_batch))  # registry ops or entries per frame
        self.planner = Planner(
            replication_factor=self.rf,
            hot_moves=self.migration.kind == "hot",
            replica_mode=self.redundancy.mode("replica", ["primary", "replica"]),
        )
        self.desired = DesiredTable()
        self.members: dict[str, str] = {}  # live hub members (not this node): name -> boot id
        self.draining: set[str] = set()
        self.unsynced: set[str] = set()
        self.leaving = False
        self.closing = False
        self._topology: asyncio.Queue[tuple[str, str, str]] = asyncio.Queue(maxsize=10_000)
        self._unsubscribe: Any = None
        # planning state
        self._dirty: set[str] = set()
        #: local copies to check after a view change: planned if :func:`~hub.planner.strays`
        self._check_local: set[str] = set()
        self._orphans: set[str] = set()
        self._busy: dict[str, float] = {}
        #: busy children the planner passed over: planned when their operation ends
        self._waited: set[str] = set()
        self._in_transit: dict[str, float] = {}
        self._arrived: dict[str, float] = {}
        self._failures: dict[str, Failures] = {}
        self._starting: set[str] = set()  # planned starts in flight
        self._expected: set[str] = set()  # local removals this node asked for
        self._deferred: list[tuple[float, str]] = []  # heap: (due, child id) put off until due
        self._wake = asyncio.Event()
        self._changed_at = -1e9
        #: moves wait this long after a topology change (views converge within a probe period)
        self.settle_time = float(endpoint.config.probe_interval)
        config = endpoint.config
        #: how long a member a peer lists may stay unknown here: a probe period to notice it,
        #: plus the longest suspicion (a member the peer still lists is being declared dead)
        self.rumour_time = config.probe_interval * (
            1 + config.suspicion_mult * config.suspicion_max_timeout_mult
        )
        self._rumoured: dict[str, float] = {}  # name -> until (``_rumours``)
        self._loading: dict[str, float] = {}  # joiners loading the registry -> until
        #: the members each peer listed in its last anti-entropy state (``_rumours``)
        self._peer_members: dict[str, frozenset[tuple[str, str]]] = {}
        self._rumours_over: set[str] = set()  # rumoured once: not again until it joins or leaves
        self._left: dict[str, tuple[float, str]] = {}  # name -> when it left here, its boot
        self._expire_at = 0.0
        self._full = True
        self._gc_advised = False
        self._sweep = RollingSweep(SWEEP)  # the rolling reconciliation
        self._slicing = False  # a plan is under way, slice by slice
        self._moving = asyncio.Semaphore(max(1, self.migration.max_concurrent))
        self._moving_to: dict[str, asyncio.Semaphore] = {}  # per target: BATCHES_PER_TARGET
        # registry sync state
        self._outgoing: dict[str, Record] = {}
        self._dirty_registry = asyncio.Event()
        self._publish_lock = asyncio.Lock()
        self._published = 0
        self._behind: set[str] = set()  # peers that need a snapshot of our partition
        #: snapshots being received, by node: boot, version, parts, entries, begun at
        self._parts: dict[str, tuple[str, int, int, list[tuple[Record, Entry]], float]] = {}
        #: deltas of a peer that came while its snapshot was arriving (applied after it)
        self._early: dict[str, list[Any]] = {}
        self._peer_state: dict[str, Any] = {}
        #: peers whose state showed other partitions than ours: they get ours again soon
        self._answers: dict[str, asyncio.TimerHandle] = {}
        self._differing: dict[str, dict[int, tuple[int, int, float]]] = {}
        self._lagging: dict[str, tuple[int, float]] = {}  # peer -> (announced version, since)
        self._catching: set[str] = set()
        self._snapshotting: set[str] = set()
        self._sync_pending = False
        self._registry_changed = asyncio.Event()
        #: Planner actions executed, by action type (read by the metrics).
        self.planned: dict[str, int] = {}
        # moves and messages
        self.messenger = Messenger(
            hub_id,
            runtime,
            send=self._send,
            request=self._request,
            route=self.route,
            expects=self.expects,
            hold_for=HOLD_FOR,
            forward_for=FORWARD_FOR,
        )
        self._inbox: dict[str, tuple[float, list[Any]]] = {}  # moved mailboxes, by child id
        self._incoming: dict[str, _Incoming] = {}
        self._running: dict[str, asyncio.Future[bool]] = {}  # arrivals waited for
        self.moves_in_flight = 0  # migration batches of this node not finished
        self._pinned: dict[str, str] = {}  # live children placed by hub.migrate: id -> node
        self._move_failures: dict[str, int] = {}  # failed hot moves in a row, by child id
        self._parked: dict[str, float] = {}  # children not moved again before then (see _park)
        self._cold_next: set[str] = set()  # leaving: moved cold after refused hot moves
        # quorum
        self.locked = False
        self._lock_at: float | None = None  # quorum lost since: locked from then on
        self._recheck: asyncio.TimerHandle | None = None
        self._unlocked_at = -1e9
        #: after an unlock, failover starts wait this long for the failed nodes to come back
        self._unlock_hold = max(2.0, 10 * self.settle_time)
        self._failed: dict[str, float] = {}  # members that failed (not left): name -> when

    # -- lifecycle -----------------------------------------------------------------------------

    @property
    def node(self) -> str:
        return self.runtime.node

    @property
    def registry(self) -> Registry:
        return self.runtime.registry

    @property
    def origin(self) -> str:
        """Who writes this node's desired records: name and boot (two boots of one name never
        write different records under one merge key)."""
        return f"{self.runtime.node}#{self.runtime.boot_id}"

    def attach(self) -> None:
        runtime = self.runtime
        runtime.observer = self
        self.distribution.attach(runtime.hooks, self.node)
        self.partition.attach(runtime.hooks, self.node)
        self.endpoint.links.register(self.hub_id, self._on_frame)
        runtime.own(self._follow_topology(), "topology")
        runtime.own(self._publisher(), "registry-publisher")
        runtime.own(self._planning(), "planner")
        runtime.own(self._background(), "anti-entropy")
        self._unsubscribe = self.endpoint.subscribe(self._on_node_event)
        for member in self.endpoint.alive():
            self._member_changed(member)
        self.evaluate_quorum()  # alone so far: a quorum strategy may lock it from the start
        hubs = list(self.endpoint.meta.get("hubs", ()))
        self.endpoint.update_meta(hubs=sorted({*hubs, self.hub_id}))

    def detach(self) -> None:
        if self._recheck is not None:
            self._recheck.cancel()
            self._recheck = None
        for incoming in self._incoming.values():  # copies waiting for a state: none comes now
            incoming.timer.cancel()
        self._incoming.clear()
        for answer in self._answers.values():
            answer.cancel()
        self._answers.clear()
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        self.endpoint.links.unregister(self.hub_id)
        meta = self.endpoint.meta
        self.endpoint.update_meta(
            hubs=[h for h in meta.get("hubs", ()) if h != self.hub_id],
            draining=[h for h in meta.get("draining", ()) if h != self.hub_id],
        )

    def nodes(self, include_local: bool = False) -> list[str]:
        names = set(self.members)
        if include_local:
            names.add(self.node)
        return sorted(names)

    # -- membership ----------------------------------------------------------------------------

    def _on_node_event(self, event: NodeEvent) -> None:
        if isinstance(event, MemberEvent):
            self._member_changed(event.member)

    def _member_changed(self, member: Member) -> None:
        name = member.node.name
        if name == self.node:
            return
        hosts = self.hub_id in member.meta.get("hubs", ())
        live = member.state in (State.ALIVE, State.SUSPECT)
        drains = self.hub_id in member.meta.get("draining", ())
        change = "join" if live and hosts else "fail" if member.state == State.DEAD else "leave"
        try:
            self._topology.put_nowait((change, name, member.node.boot_id))
            if change == "join" and drains != (name in self.draining):
                self._topology.put_nowait(("drain" if drains else "undrain", name, ""))
        except asyncio.QueueFull:
            logger.error("hub %s: topology queue full; dropped %s of %s", self.hub_id, change, name)

    async def _follow_topology(self) -> None:
        """Apply member changes one at a time, each wrapped in its hooks."""
        hooks = self.runtime.hooks
        while True:
            change, name, boot = await self._topology.get()
            known = self.members.get(name)
            if change == "join" and known is not None and known != boot:
                await self._leave(name, "restarted")  # a new boot: the old one is gone
                known = None
            if change == "join" and known is None:
                await hooks.dispatch(Hook.PRE_CLUSTER_JOIN, name)  # the ring changes here
                self.members[name] = boot
                self._failed.pop(name, None)
                self.unsynced.add(name)
                self._rumoured.pop(name, None)
                self._rumours_over.discard(name)
                self._peer_state.pop(name, None)
                self._loading[name] = asyncio.get_running_loop().time() + LOAD_HOLD
                logger.info("hub %s: node %s joined (boot %s)", self.hub_id, name, boot[:8])
                await hooks.dispatch(Hook.PRE_NODES_REDISTRIBUTION, Redistribution("nodeup", name))
                self._topology_changed(())
                self._behind.add(name)  # it gets our partition, and we ask for its own
                self._dirty_registry.set()
                self.runtime.own(self._catch_up(name), f"catch-up:{name}")
                self.runtime.own(self._send_ended(name), f"tombstones:{name}")
                await hooks.dispatch(Hook.POST_NODES_REDISTRIBUTION, Redistribution("nodeup", name))
                await hooks.dispatch(Hook.POST_CLUSTER_JOIN, name)
            elif change in ("leave", "fail") and known is not None:
                await self._leave(name, "failed" if change == "fail" else "left")
            elif change in ("drain", "undrain") and name in self.members:
                if change == "drain":
                    self.draining.add(name)
                else:
                    self.draining.discard(name)
                logger.info("hub %s: node %s %s", self.hub_id, name, change + "s")
                self._topology_changed(())

    async def _leave(self, name: str, why: str) -> None:
        hooks = self.runtime.hooks
        await hooks.dispatch(Hook.PRE_CLUSTER_LEAVE, name)
        boot = self.members.pop(name)
        now = asyncio.get_running_loop().time()
        self._left[name] = (now, boot)
        self._rumours_over.discard(name)
        for gone in [n for n, (at, _) in self._left.items() if now - at > self.rumour_time]:
            del self._left[gone]
        if why == "failed":  # it still counts for quorum (unlike a node that left)
            self._failed[name] = now
        self.draining.discard(name)
        self.unsynced.discard(name)
        self._behind.discard(name)
        self._peer_state.pop(name, None)
        self._peer_members.pop(name, None)
        self._loading.pop(name, None)
        for peer, listed in self._peer_members.items():  # a failure they have not seen
            self._rumours(peer, listed, now)
        self._end_unlisted_rumours()
        self._differing.pop(name, None)
        self._lagging.pop(name, None)
        self._parts.pop(name, None)
        self._early.pop(name, None)
        self._moving_to.pop(name, None)  # batches waiting for it fail once they run
        for cid in [c for c, i in self._incoming.items() if i.source == name]:
            self._abandon(cid, f"{name} {why}")
        logger.info("hub %s: node %s %s", self.hub_id, name, why)
        await hooks.dispatch(Hook.PRE_NODES_REDISTRIBUTION, Redistribution("nodedown", name))
        part = self.registry.partitions.get(name)
        lost = list(part.entries) if part is not None else []
        dropped = self.registry.drop(name)
        self._topology_changed(lost)  # before any turn of the loop: quorum, settle time, ...
        # paced (a partition can hold 100,000 entries): a dropped one moves nothing in transit,
        # and its children are marked to be planned already
        await in_slices(functools.partial(self._apply_changes, dropped=True), dropped)
        await hooks.dispatch(Hook.POST_NODES_REDISTRIBUTION, Redistribution("nodedown", name))
        await hooks.dispatch(Hook.POST_CLUSTER_LEAVE, name)

    def _replan_local(self, affected: Iterable[str]) -> None:
        """Plan again what a change of the view can affect: the local children that are not
        on an owner now (checked as they are planned, see ``plan_now``), the orphans and
        ``affected``; the busy ones when their operation ends (a child still starting may not
        be a local copy yet)."""
        self._check_local.update(self.runtime.child_ids())
        self._waited.update(self._busy)
        self._dirty.update(self._orphans)
        self._dirty.update(affected)
        self._wake.set()

    def _topology_changed(self, affected: Iterable[str]) -> None:
        self._changed_at = asyncio.get_running_loop().time()
        self._cancel_foreign_starts()
        self._send_state(list(self.members))  # at once (``_rumours``), a joiner included
        self._parked.clear()  # a refused move is tried again on the new membership
        self._move_failures.clear()
        self.evaluate_quorum()
        self._update_modes()
        self._replan_local(affected)
        self._sync_pending = True

    def _cancel_foreign_starts(self) -> None:
        """Cancel the planned starts of children this node owns no longer (the planner's
        :func:`~hub.planner.foreign_starts`), before any peer learns of the change."""
        cancel = self.runtime.cancel_start
        found = foreign_starts(self.node, self._starting, self.owners)
        cancelled = [cid for cid in found if cancel(cid)]
        if cancelled:
            logger.info(
                "hub %s: cancelled %d starts of children owned elsewhere now",
                self.hub_id,
                len(cancelled),
            )

    # -- quorum --------------------------------------------------------------------------------

    def evaluate_quorum(self) -> None:
        """Ask the partition strategy whether this side of the cluster may run children
        (after every membership change, and every anti-entropy round: a strategy may depend
        on time). Unlocking is at once; locking waits until quorum has been lost for
        ``settle_time`` (a probe period): a heal briefly shows nodes dead that are refuting
        it, and a lock stops every child here."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        forget = now - FAILED_MEMORY
        for name in [n for n, at in self._failed.items() if at < forget]:
            del self._failed[name]
        live = [*self.members, self.node]
        locked = bool(self.partition.evaluate(live, [*live, *self._failed]))
        if not locked:
            self._lock_at = None
        elif not self.locked:
            if self._lock_at is None:
                self._lock_at = now + self.settle_time
                self._recheck = loop.call_later(self.settle_time + 0.001, self._recheck_quorum)
            if now < self._lock_at:
                return
        if locked == self.locked:
            return
        self.locked = locked
        self._lock_at = None
        state = PriorityState(locked, self.partition.describe())
        events = self.runtime.events
        if locked:
            logger.warning(
                "hub %s: quorum lost (%d live of %d known nodes): locked; the children here "
                "stop and no start, stop or move is accepted until quorum is back",
                self.hub_id,
                len(live),
                len(live) + len(self._failed),
            )
        else:
            logger.warning("hub %s: quorum regained: unlocked", self.hub_id)
            self._unlocked_at = now
        events.emit(Hook.PRIORITY_STATE_UPDATED, state)
        events.emit(Hook.QUORUM_LOST if locked else Hook.QUORUM_REGAINED, state)
        self._full = True  # every child: stop them all, or start what belongs here again
        self._replan_local(())

    def _recheck_quorum(self) -> None:
        self._recheck = None
        self.evaluate_quorum()

    @property
    def partitioned(self) -> bool:
        """Whether members of this hub failed (unreachable, not left gracefully) and have not
        come back (each is forgotten :data:`FAILED_MEMORY` seconds after it failed)."""
        return bool(self._failed)

    # -- modes -------------------------------------------------------------------------------

    def mode_of(self, child_id: str) -> Mode:
        """The mode of this node's copy of ``child_id``: ``"active"`` on the primary owner,
        the replication model on the other owners, ``"passive"`` elsewhere."""
        if self.rf == 1:
            return "active"
        return self.redundancy.mode(self.node, self.owners(child_id))

    def _update_modes(self) -> None:
        """The view changed: a replica whose primary left is promoted (and a copy that is no
        longer the primary demoted); its process learns it (``on_mode_change``)."""
        if self.rf == 1 or self.locked:
            return
        for cid in self.runtime.child_ids():
            mode = self.mode_of(cid)
            old = self.runtime.set_mode(cid, mode)
            if old is not None and old != mode:
                logger.info("hub %s: %s is %s here now (was %s)", self.hub_id, cid, mode, old)
                self.runtime.events.emit(
                    Hook.CHILD_MODE_CHANGED, ModeChanged(cid, self.node, old, mode)
                )

    # -- placement -----------------------------------------------------------------------------

    def owners(self, child_id: str) -> list[str]:
        """The owners of ``child_id`` over the live members that do not drain (a child moved
        with :meth:`migrate` is owned by its node while that node is live and not draining)."""
        draining = self.draining | {self.node} if self.leaving else self.draining
        if self._pinned:
            pin = self._pinned.get(child_id)
            if (
                pin is not None
                and pin not in draining
                and (pin in self.members or pin == self.node)
            ):
                return [pin]
        if not draining:
            return list(self.distribution.belongs_to(child_id, self.rf))
        found = self.distribution.belongs_to(child_id, self.rf + len(draining))
        return [n for n in found if n not in draining][: self.rf]

    def unsynced_peers(self) -> list[str]:
        """The peers whose partition this node lacks, with the members it only heard of."""
        return sorted({*self.unsynced, *self._rumoured})

    def view(self) -> View:
        live = frozenset([*self.members, self.node])
        draining = frozenset(self.draining | {self.node} if self.leaving else self.draining)
        settle_at = self._changed_at + self.settle_time
        unsynced = frozenset([*self.unsynced, *self._rumoured])
        # just unlocked: the nodes that failed may be coming back with their children
        starts_after = self._unlocked_at + self._unlock_hold if self._failed else 0.0
        return View(
            self.node,
            live,
            draining,
            unsynced,
            self.locked,
            settle_at,
            starts_after,
            frozenset(self._loading),
        )

    def running_on(self, child_id: str) -> list[tuple[str, int]]:
        """``(node, epoch)`` of the current boots of live members that run ``child_id``."""
        out = []
        members = self.members
        for node, part in self.registry.partitions.items():
            entry = part.entries.get(child_id)
            if entry is None:
                continue
            if node == self.node or members.get(node) == part.boot_id:
                out.append((node, entry.epoch))
        return out

    def route(self, child_id: str) -> str:
        """The node to send a message for ``child_id`` to (the primary owner that runs it,
        else any live node that runs it); raises :class:`NotFound`."""
        where = [n for n, _ in self.running_on(child_id)]
        if not where:
            raise NotFound(child_id)
        if len(where) == 1:
            return where[0]
        return next((o for o in self.owners(child_id) if o in where), sorted(where)[0])

    def expects(self, child_id: str) -> bool:
        """Whether ``child_id`` should run (a message to it may wait for it to reappear)."""
        return self.desired.live(child_id) is not None

    # -- desired state -------------------------------------------------------------------------

    def _learn(
        self,
        records: Iterable[Record],
        *,
        publish: bool = False,
        apart: bool = True,
        plan: bool = True,
    ) -> list[Record]:
        """Merge records; returns those that changed the table. ``apart``: learnt apart from
        the copy's registry entry (a records frame, a start's reply, a stop): a new live
        version is in transit (no owner starts it) until its copy shows, or
        ``start_timeout`` passed; its starter may be an owner that drains meanwhile.
        ``plan=False``: the caller has the children planned when its operation ends."""
        changed = []
        now = time.time()
        guided = self._guided
        desired = self.desired
        transit_until = asyncio.get_running_loop().time() + self.start_timeout if apart else 0.0
        for record in records:
            old = desired.get(record.spec.id) if apart else None
            if not desired.merge(record, now):
                continue
            changed.append(record)
            cid = record.spec.id
            if apart and record.status == LIVE and (old is None or old.epoch < record.epoch):
                self._in_transit[cid] = transit_until
            if plan:
                self._dirty.add(cid)
            self._parked.pop(cid, None)  # a new record: decide again at once
            if publish:
                self._outgoing[cid] = record
            if record.pin and record.status == LIVE:
                self._pinned[cid] = record.pin
            else:
                self._pinned.pop(cid, None)
            if record.status != LIVE:
                self._failures.pop(cid, None)
                if cid in self.messenger.relay and not self.messenger.relay.moving(cid):
                    self.messenger.relay.release(cid)  # it stopped: nothing waits for it
            if guided:
                if record.status == LIVE:
                    self.distribution.guide([record.spec])  # type: ignore[attr-defined]
                else:
                    self.distribution.forget([cid])  # type: ignore[attr-defined]
            if record.status == BURIED and record.origin != self.origin:
                attempts, _, error = record.info.partition(":")
                self.runtime.events.emit(
                    Hook.CHILD_BURIED,
                    ChildBuried(cid, StartFailed(cid, error), int(attempts or 0)),
                )
        if changed:
            self._wake.set()
            if publish:
                self._dirty_registry.set()
        return changed

    def write(self, record: Record) -> None:
        """A desired-state change made on this node: keep it and tell every peer."""
        self._learn([record], publish=True)

    def _live_at(self, child_id: str, epoch: int) -> bool:
        """Whether ``child_id`` should still run at ``epoch`` (not stopped, buried or started
        again since): an operation decided earlier acts only then."""
        known = self.desired.live(child_id)
        return known is not None and known.epoch == epoch

    def record_of(self, spec: ChildSpec, metadata: Mapping[str, Any], epoch: int) -> Record:
        """The desired record of a local copy of ``epoch``: the table's, when it is that
        version or newer (a tombstone travels with a stale copy's entry), else one for it."""
        record = self.desired.get(spec.id)
        if record is not None and record.epoch >= epoch:
            return record
        return Record(spec, metadata, max(1, epoch), self.origin, LIVE)

    def new_record(self, spec: ChildSpec, metadata: Mapping[str, Any]) -> Record | HubError:
        """The live record of a new start request, or why it cannot start."""
        old = self.desired.get(spec.id)
        if old is not None and old.status == LIVE:
            where = [n for n, _ in self.running_on(spec.id)]
            return AlreadyStarted(spec.id, ", ".join(where) or "starting")
        epoch = old.epoch + 1 if old is not None else 1
        return Record(spec, metadata, epoch, self.origin, LIVE)

    def buried(self) -> list[tuple[Record, int, str]]:
        """Buried records: ``(record, attempts, error)``."""
        out = []
        for record in self.desired:
            if record.status == BURIED:
                attempts, _, error = record.info.partition(":")
                out.append((record, int(attempts or 0), error))
        return out

    # -- observer of the local runtime ---------------------------------------------------------

    def local_changed(self, child_id: str) -> None:
        self._dirty_registry.set()
        self._registry_changed.set()
        waiting = self._running.get(child_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(True)
        if child_id in self.messenger.relay:
            self.messenger.resolve([child_id])

    def local_removed(self, child_id: str, kind: RemovalKind, reason: Any) -> None:
        self._dirty_registry.set()
        self._registry_changed.set()
        waiting = self._running.get(child_id)
        if waiting is not None and not waiting.done():
            waiting.set_result(False)
        self._parked.pop(child_id, None)
        self._move_failures.pop(child_id, None)
        if self.closing or child_id in self._expected:
            return
        record = self.desired.live(child_id)
        if record is None:
            return
        if kind == "buried":
            info = f"{reason.attempts}:{reason.error!r}"
            self.write(record.successor(self.origin, BURIED, info, time.time()))
        else:  # it ended by itself (a transient or temporary child): it is done
            self.write(record.successor(self.origin, STOPPED, f"{kind}: {reason!r}", time.time()))

    # -- planning ------------------------------------------------------------------------------

    def _local_view(self) -> _LocalView:
        return _LocalView(self.runtime)

    async def _planning(self) -> None:
        loop = asyncio.get_running_loop()
        wake_at: float | None = None
        while True:
            timeout = None if wake_at is None else max(0.0, wake_at - loop.time())
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            self._wake.clear()
            await asyncio.sleep(0)  # let a burst of changes arrive together
            wake_at = await self.plan_now()

    async def plan_now(self) -> float | None:
        """Plan the changed children (all of them after a full reconcile request, and the next
        part of the rolling sweep) and start executing the actions, :data:`PLAN_SLICE`
        children at a time with a turn of the event loop between slices. Returns when to plan
        again at the latest."""
        loop = asyncio.get_running_loop()
        if self._rumoured:
            self._rumours_end(loop.time())
        for name in [n for n, until in self._loading.items() if until <= loop.time()]:
            self._loaded(name, f"still loading after {LOAD_HOLD:.0f} s")
        recheck: list[str] = []
        if self._full:
            self._full = False
            self._sweep.restart()
            candidates = {*self.desired.ids(), *self.runtime.child_ids()}
            self._dirty.clear()
            self._check_local.clear()
        else:
            candidates, self._dirty = self._dirty, set()
            recheck = [cid for cid in self._check_local if cid not in candidates]
            self._check_local.clear()
        now = loop.time()
        deferred = self._deferred
        while deferred and deferred[0][0] <= now:  # decisions that were put off until now
            candidates.add(heapq.heappop(deferred)[1])
        if now >= self._expire_at:  # deadlines of operations in flight: at most twice a second
            self._expire_at = now + 0.5
            for deadlines in (self._busy, self._in_transit, self._arrived, self._parked):
                for cid in [c for c, t in deadlines.items() if t <= now]:
                    del deadlines[cid]
                    self._dirty.add(cid)
            self._waited.intersection_update(self._busy)
        ids = list(candidates)
        wake_at: float | None = None
        self._slicing = len(ids) + len(recheck) > PLAN_SLICE  # not synchronized meanwhile
        try:
            for n, part in enumerate(self._slices(ids, recheck)):
                if n:
                    await asyncio.sleep(0)  # membership probes and frames get their turn
                    now = loop.time()
                due = self._plan_slice(part, now) if part else None
                if due is not None:
                    wake_at = due if wake_at is None else min(wake_at, due)
        finally:
            self._slicing = False
        for due in (
            self._deferred[0][0] if self._deferred else None,
            *self._rumoured.values(),
            *self._loading.values(),
        ):
            if due is not None and (wake_at is None or due < wake_at):
                wake_at = due
        return wake_at

    def _slices(self, ids: list[str], recheck: list[str]) -> Iterator[list[str]]:
        """``ids`` by :data:`PLAN_SLICE`, then the :func:`~hub.planner.strays` among
        ``recheck`` (the local copies after a view change), looked up slice by slice (an
        empty one still gives the event loop its turn)."""
        for i in range(0, len(ids), PLAN_SLICE):
            yield ids[i : i + PLAN_SLICE]
        for i in range(0, len(recheck), PLAN_SLICE):
            yield strays(self.node, recheck[i : i + PLAN_SLICE], self.owners)

    def _loaded(self, name: str, why: str) -> None:
        """Moves to ``name`` (a joiner) wait no longer: the local copies it owns are planned."""
        del self._loading[name]
        logger.info("hub %s: children move to %s now (%s)", self.hub_id, name, why)
        self._replan_local(())

    def _rumours_end(self, now: float) -> None:
        """Rumours of ``rumour_time`` ago are over: the children they held back are planned."""
        over = [name for name, until in self._rumoured.items() if until <= now]
        for name in over:
            del self._rumoured[name]
            self._rumours_over.add(name)
        if over:
            self._dirty.update(self._orphans)

    def _plan_slice(self, part: list[str], now: float) -> float | None:
        """Plan ``part`` and start executing its actions; returns the planner's wake time."""
        busy = self._busy
        if busy:
            self._waited.update(cid for cid in part if cid in busy)
        plan = self.planner.plan(
            self.view(),
            self.owners,
            self.desired,
            self,
            self._local_view(),
            part,
            busy=ChainMap(self._parked, self._busy) if self._parked else self._busy,
            in_transit=self._in_transit,
            arrived=self._arrived,
            failures=self._failures,
            now=now,
        )
        self._orphans.difference_update(part)
        self._orphans.update(plan.orphans)
        for item in plan.deferred:
            heapq.heappush(self._deferred, item)
        self._execute(plan, now)
        return plan.wake_at

    def _sweep_next(self) -> None:
        """Plan the next :data:`SWEEP` children of the rolling reconciliation (a safety net:
        changes mark what they affect; this visits every child within a few
        ``reconcile_interval`` periods at a bounded cost per period)."""
        self._dirty.update(
            self._sweep.next(lambda: [*self.desired.ids(), *self.runtime.child_ids()])
        )
        self._wake.set()

    def _execute(self, plan: Plan, now: float) -> None:
        starts: list[Start] = []
        stops: dict[str, list[str]] = {}
        moves: dict[str, list[str]] = {}
        conflicts: list[Conflict] = []
        planned = self.planned
        for action in plan.actions:
            kind = type(action).__name__
            planned[kind] = planned.get(kind, 0) + 1
            if isinstance(action, Start):
                starts.append(action)
            elif isinstance(action, Stop):
                stops.setdefault(action.reason, []).append(action.child_id)
            elif isinstance(action, Move):
                moves.setdefault(action.target, []).append(action.child_id)
            elif isinstance(action, Conflict):
                conflicts.append(action)
                self.runtime.events.emit(
                    Hook.CHILD_CONFLICT, ChildConflict(action.child_id, action.winner, action.loser)
                )
            elif isinstance(action, Bury):
                self._bury(action)
        if conflicts:  # one line per plan (a node that was declared failed may have thousands)
            logger.warning(
                "hub %s: %d children also run elsewhere; stopping the copies here: %s%s",
                self.hub_id,
                len(conflicts),
                ", ".join(f"{c.child_id} (on {c.winner})" for c in conflicts[:5]),
                ", ..." if len(conflicts) > 5 else "",
            )
        runtime = self.runtime
        if starts:
            for action in starts:
                self._occupy(action.child_id, now + self.start_timeout + 1.0)
            runtime.own(self._start_planned(starts), "failover-start")
        for reason, ids in stops.items():
            for cid in ids:
                self._occupy(cid, now + 60.0)
                self._expected.add(cid)
            runtime.own(self._stop_planned(ids, reason), f"stop:{reason}")
        if moves:
            for ids in moves.values():
                for cid in ids:
                    self._occupy(cid, now + 60.0)
            runtime.own(self._migrate(moves), "migrate")

    def _occupy(self, child_id: str, until: float) -> None:
        """An operation of this node on ``child_id`` is in flight until ``until`` (or its
        ``_done``). It ends the child's parking: a parked retry's past deadline, read before
        ``_busy``, would let the next plan start a second operation on the child."""
        self._busy[child_id] = until
        self._parked.pop(child_id, None)

    def _done(self, ids: Iterable[str], settled: Container[str] = ()) -> None:
        """The operations on ``ids`` ended: they are planned again, except the ``settled``
        ones (started here as planned) that nothing asked to plan meanwhile: the planner keeps
        a local copy that runs for its record's epoch on an owner where it is, and anything
        that could change that marks the child (a record or a registry entry: the planner
        passed it over as busy; a view change or a lock: every busy child), ``_waited``."""
        waited = self._waited
        for cid in ids:
            self._busy.pop(cid, None)
            self._expected.discard(cid)
            if cid not in settled or cid in waited:
                self._dirty.add(cid)
            waited.discard(cid)
        self._wake.set()

    async def _start_planned(self, starts: list[Start]) -> None:
        # a record may have changed since the plan (a tombstone in a frame handled meanwhile):
        # only what should still run starts; the next plan decides the others
        ended = {a.child_id for a in starts if not self._live_at(a.child_id, a.record.epoch)}
        if ended:
            self._done(ended)
            starts = [a for a in starts if a.child_id not in ended]
            if not starts:
                return
        items = [(a.record.spec, a.record.metadata, a.record.epoch) for a in starts]
        modes = {a.child_id: a.mode for a in starts} if self.rf > 1 else None
        ids = [a.child_id for a in starts]
        self._starting.update(ids)
        results: Mapping[str, Pid | HubError] = {}
        try:
            results = await self.runtime.start(items, self.start_timeout, modes=modes)
        finally:
            self._starting.difference_update(ids)
            self._done(ids, {cid for cid, out in results.items() if isinstance(out, Pid)})
        started = failed = 0
        for action in starts:
            outcome = results.get(action.child_id)
            if isinstance(outcome, Pid | AlreadyStarted):
                started += 1
                self._failures.pop(action.child_id, None)
            elif outcome is not None and not isinstance(outcome, NotFound):  # NotFound: stopped
                failed += 1
                self._start_failed(action.record, outcome)
        logger.info(
            "hub %s: started %d children here (%s)%s",
            self.hub_id,
            started,
            ", ".join(sorted({a.reason for a in starts})),
            f"; {failed} failed" if failed else "",
        )

    def _start_failed(self, record: Record, error: HubError) -> None:
        """Count a failed start (consecutive ones: a start that fails slowly counts as much as
        one that fails at once); the planner retries after a backoff, then buries."""
        cid = record.spec.id
        now = asyncio.get_running_loop().time()
        previous = self._failures.get(cid)
        attempts = previous.attempts + 1 if previous is not None else 1
        delay = self.backoff.delay(attempts, 0.5)
        self._failures[cid] = Failures(attempts, now + delay, str(error))
        logger.warning(
            "hub %s: %s failed to start here (attempt %d): %s", self.hub_id, cid, attempts, error
        )
        self.runtime.events.emit(Hook.CHILD_CRASHED, ChildCrashed(cid, error, attempts))
        self._dirty.add(cid)
        self._wake.set()

    def _bury(self, action: Bury) -> None:
        cid = action.child_id
        self._failures.pop(cid, None)
        logger.error(
            "hub %s: %s buried after %d failed starts; last error: %s",
            self.hub_id,
            cid,
            action.attempts,
            action.error,
        )
        info = f"{action.attempts}:{action.error}"
        self.write(action.record.successor(self.origin, BURIED, info, time.time()))
        self.runtime.events.emit(
            Hook.CHILD_BURIED, ChildBuried(cid, StartFailed(cid, action.error), action.attempts)
        )

    async def _stop_planned(self, ids: list[str], reason: str) -> None:
        try:
            await self.runtime.stop(ids, reason)
        finally:
            self._done(ids)

    async def _migrate(self, moves: Mapping[str, list[str]]) -> None:
        """Move children to their targets: the batches for one target one after the other
        (each answered within its own timeout, instead of all of them competing for the
        target's event loop at once, as after a heal), the targets concurrently."""
        hooks = self.runtime.hooks
        if hooks.has_handlers(Hook.PRE_CHILDREN_REDISTRIBUTION):
            plan = [(cid, self.node, target) for target, ids in moves.items() for cid in ids]
            await hooks.dispatch(Hook.PRE_CHILDREN_REDISTRIBUTION, plan)

        async def to(target: str, ids: list[str]) -> None:
            logger.info("hub %s: moving %d children to %s", self.hub_id, len(ids), target)
            for i in range(0, len(ids), MIGRATION_BATCH):
                await self._migrate_batch(target, ids[i : i + MIGRATION_BATCH])

        await asyncio.gather(*(to(target, ids) for target, ids in moves.items()))

    async def _migrate_batch(self, target: str, ids: list[str]) -> None:
        runtime = self.runtime
        retry: dict[str, str] = {}
        self.moves_in_flight += 1
        records: dict[str, Record] = {}
        slot = self._moving_to.get(target)
        if slot is None:
            slot = self._moving_to[target] = asyncio.Semaphore(BATCHES_PER_TARGET)
        try:
            async with slot, self._moving:
                if target not in self.members:
                    return  # it left while the batch waited: the next plan decides again
                for cid in ids:
                    child = runtime.get(cid)
                    if child is None or target not in self.owners(cid):
                        continue  # gone, or owned elsewhere by now: the next plan decides
                    record = self.record_of(child.spec, child.metadata, runtime.epoch(cid))
                    if record.status == LIVE:  # else stopped here by the next plan, not moved
                        records[cid] = record
                if not records:
                    return
                cold = records
                if self.migration.kind == "hot":
                    cold = {c: r for c, r in records.items() if c in self._cold_next}
                    self._cold_next.difference_update(cold)
                    hot = {c: r for c, r in records.items() if c not in cold}
                    if hot:
                        retry = await self._move_hot(target, hot)
                if cold:
                    await self._move_cold(target, cold)
        finally:
            self.moves_in_flight -= 1
            self._done(ids)
            for cid in records:
                if cid in retry:
                    self._park(records[cid], target, retry[cid])
                else:
                    self._move_failures.pop(cid, None)

    def _park(self, record: Record, target: str, error: str) -> None:
        """A hot move the target refused: the copy keeps running here and the move is tried
        again after a backoff; past the child's ``max_restarts`` failed attempts, only after
        the next change of the membership (the owner may change, or come back healthy), or,
        when this node leaves or drains, cold (the target's failed starts then count). A child
        stopped or changed meanwhile is not parked: the next plan acts on its new record."""
        cid = record.spec.id
        if not self._live_at(cid, record.epoch):  # it ended meanwhile: the next plan acts
            self._move_failures.pop(cid, None)
            return
        attempts = self._move_failures.get(cid, 0) + 1
        self._move_failures[cid] = attempts
        now = asyncio.get_running_loop().time()
        if attempts > record.spec.max_restarts and self.leaving:
            logger.warning(  # it must leave: the next attempt moves it cold
                "hub %s: %s moves cold: %s failed to take it hot %d times (last: %s)",
                self.hub_id,
                cid,
                target,
                attempts,
                error,
            )
            self._cold_next.add(cid)
        elif attempts > record.spec.max_restarts:
            logger.error(
                "hub %s: %s stays on %s: %s failed to take it %d times (last: %s); tried again "
                "when the membership changes",
                self.hub_id,
                cid,
                self.node,
                target,
                attempts,
                error,
            )
            self._parked[cid] = float("inf")
            return
        due = now + self.backoff.delay(attempts, 0.5)
        self._parked[cid] = due
        heapq.heappush(self._deferred, (due, cid))

    async def _move_cold(self, target: str, records: dict[str, Record]) -> None:
        """ColdSwap: stop each child here, then start it on its target with its record; the
        casts still queued here go first to the new copy."""
        left = await self._leave_here(target, list(records), handover=False)
        sent = await self._send_inbox(target, left)
        moving = [records[cid] for cid in left]
        results = await self.start_remote(target, moving, self.start_timeout, "migrate")
        self._moved(target, results, sent, {})

    async def _move_hot(self, target: str, records: dict[str, Record]) -> dict[str, str]:
        """HotSwap: the target starts the new copies (``init`` runs, the mailbox is held); once
        they are ready (at most ``retention`` seconds) the old copies stop, their state and the
        casts still queued here go to the new ones, which then run. Returns the children whose
        move the target refused, with why."""
        migration = self.migration
        ready = await self._prepare(target, list(records.values()))
        retry: dict[str, str] = {}
        late = [cid for cid in records if cid not in ready]
        for cid, outcome in ready.items():
            if isinstance(outcome, HubError):
                self._move_failed(cid, target, f"{outcome} (the copy here keeps running)")
                retry[cid] = str(outcome)
        for cid in late:
            self._skipped(cid, target, "retention", f"not ready within {migration.retention}s")
        go = [cid for cid in records if cid not in retry]
        if not go:
            return retry
        left = await self._leave_here(target, go, handover=migration.handover, cold=late)
        sent = await self._send_inbox(target, left)
        states: dict[str, bytes | None] = {}
        kept: dict[str, Any] = {}  # the states taken here (restarted here if the move fails)
        for cid, leftover in left.items():
            states[cid] = None
            if cid in late or not migration.handover:
                continue
            data = self._state_bytes(cid, target, leftover)
            if data is not None:
                states[cid] = data
                kept[cid] = leftover.state
        results = await self._hand_over(target, states)
        self._moved(target, results, sent, kept, records)
        return retry

    async def _leave_here(
        self, target: str, ids: list[str], *, handover: bool, cold: Sequence[str] = ()
    ) -> dict[str, Leftover]:
        """Stop the local copies that move to ``target`` (their removal reaches every peer,
        the target first: it never sees the child here and there at once); casts that reach
        this node from now on are held until the move's outcome is known."""
        runtime = self.runtime
        now = asyncio.get_running_loop().time()
        relay = self.messenger.relay
        self._expected.update(ids)
        for cid in ids:
            relay.hold(cid, [], now, moving=True)
        warm = [cid for cid in ids if cid not in cold]
        parts = await asyncio.gather(
            runtime.move_out(warm, target, handover=handover),
            runtime.move_out(cold, target, handover=False),
        )
        left = {**parts[0], **parts[1]}
        for cid in ids:
            leftover = left.get(cid)
            if leftover is not None:  # its old mailbox first (sent with the move, kept here
                relay.prepend(cid, leftover.messages)  # until the move succeeded)
            else:  # it stopped meanwhile: nothing moves
                relay.release(cid)
        await self.publish_now()
        return left

    async def _prepare(self, target: str, records: list[Record]) -> dict[str, Pid | HubError]:
        """Ask ``target`` to start the new copies of a hot move; wait at most ``retention``
        for them to be ready. Children missing from the result were not ready in time."""
        payload = {
            "records": [r.to_wire() for r in records],
            "timeout": self.start_timeout,
            "hops": 0,
            "draining": self.leaving,
            "hot": True,
        }

        async def ask() -> Any:
            try:
                return await self._request(target, "migrate", payload, self.start_timeout + 1.0)
            except HubError as exc:
                return exc

        task = self.runtime.own(ask(), f"prepare:{target}")
        done, _ = await asyncio.wait((task,), timeout=self.migration.retention)
        if not done:
            return {}
        reply = task.result()
        if isinstance(reply, HubError):
            return {r.spec.id: reply for r in records}
        return dict(self._start_results(reply))

    def _state_bytes(self, cid: str, target: str, leftover: Leftover) -> bytes | None:
        """The encoded handover state, or ``None`` (said in a hook) when it cannot go."""
        if leftover.error:
            self._skipped(cid, target, "handover_state", leftover.error)
            return None
        if leftover.state is NO_STATE:
            return None  # a function process: it has no state to hand over
        try:
            data = dumps(leftover.state)
        except InvalidSpec as exc:
            self._skipped(cid, target, "unencodable", str(exc))
            return None
        limit = self.migration.max_state_bytes
        if len(data) > limit:
            self._skipped(cid, target, "too_big", f"{len(data)} bytes > max_state_bytes={limit}")
            return None
        return data

    async def _hand_over(
        self, target: str, states: Mapping[str, bytes | None]
    ) -> list[tuple[str, Pid | HubError]]:
        """Give the target's waiting copies their state (in frames of bounded size); each
        answer says whether the copy runs."""
        chunks: list[list[list[Any]]] = [[]]
        size = 0
        for cid, data in states.items():
            n = len(data) if data is not None else 0
            if chunks[-1] and size + n > INBOX_FRAME_BYTES:
                chunks.append([])
                size = 0
            chunks[-1].append([cid, data is not None, data])
            size += n

        async def one(chunk: list[list[Any]]) -> list[tuple[str, Pid | HubError]]:
            try:
                reply = await self._request(
                    target, "handover", chunk, timeout=self.start_timeout + 1.0
                )
            except HubError as exc:
                return [(item[0], exc) for item in chunk]
            return self._start_results(reply)

        parts = await asyncio.gather(*(one(c) for c in chunks if c))
        return [outcome for part in parts for outcome in part]

    def _moved(
        self,
        target: str,
        results: Iterable[tuple[str, Pid | HubError]],
        sent: Mapping[str, int],
        kept: Mapping[str, Any],
        records: Mapping[str, Record] | None = None,
    ) -> None:
        """Act on a move's outcome per child: forward the messages held here meanwhile, or
        (it did not move) restart a copy whose state was taken here with it, else leave the
        child to its owner (the held messages wait for it to show up)."""
        messenger = self.messenger
        relay = messenger.relay
        now = asyncio.get_running_loop().time()
        restart: list[tuple[Record, Arrival]] = []
        for cid, outcome in results:
            if isinstance(outcome, Pid):
                if all(node != target for node, _ in self.running_on(cid)):
                    # it runs there; until its entry shows, no owner starts another copy
                    # (this node may own it again: its target drains meanwhile)
                    self._in_transit[cid] = now + MOVE_WINDOW
                skip = sent.get(cid, 0)
                messenger.forward(target, cid, relay.forward(cid, target, now, skip=skip), 0)
                continue
            if isinstance(outcome, AlreadyStarted):  # it runs elsewhere: the registry says where
                relay.give_up(cid)
                messenger.resolve([cid])
                continue
            if cid in kept and records is not None:
                restart.append((records[cid], Arrival.of(relay.release(cid), kept[cid])))
                self._move_failed(cid, target, f"{outcome} (restarted here with its state)")
            else:
                relay.give_up(cid)
                self._move_failed(cid, target, f"{outcome} (its owner restarts it)")
        if restart:
            self.runtime.own(self._restart_here(restart), "restart-after-move")

    async def _restart_here(self, items: list[tuple[Record, Arrival]]) -> None:
        """Restart here, with their state, children whose hot move failed after the state was
        taken (unless they were stopped meanwhile, or started again elsewhere)."""
        items = [(r, a) for r, a in items if self._live_at(r.spec.id, r.epoch)]
        if not items:
            return
        starts = [(r.spec, r.metadata, r.epoch) for r, _ in items]
        arrivals = {r.spec.id: a for r, a in items}
        results = await self.runtime.start(starts, self.start_timeout, arrivals)
        for cid, outcome in results.items():
            if not isinstance(outcome, Pid):
                logger.error("hub %s: %s could not restart here: %s", self.hub_id, cid, outcome)

    def _move_failed(self, cid: str, target: str, why: str) -> None:
        logger.warning("hub %s: %s did not move to %s: %s", self.hub_id, cid, target, why)
        self.runtime.events.emit(
            Hook.MIGRATION_FAILED, MigrationFailed(cid, self.node, target, why)
        )

    def _skipped(self, cid: str, target: str, reason: str, detail: str) -> None:
        logger.warning(
            "hub %s: %s moves to %s without its state (%s: %s)",
            self.hub_id,
            cid,
            target,
            reason,
            detail,
        )
        self.runtime.events.emit(
            Hook.HANDOVER_SKIPPED, HandoverSkipped(cid, self.node, target, reason, detail)
        )

    async def _send_inbox(self, target: str, left: Mapping[str, Leftover]) -> dict[str, int]:
        """Send the moved mailboxes to ``target`` (before the request that starts or completes
        the new copies, on the same ordered link). Returns how many messages went per child."""
        sent: dict[str, int] = {}
        frame: list[list[Any]] = []
        size = 0
        for cid, leftover in left.items():
            messages = leftover.messages
            if not messages:
                continue
            try:
                data = dumps(messages)
            except InvalidSpec:
                messages = [m for m in messages if self._travels(cid, target, m)]
                data = dumps(messages)
            if frame and size + len(data) > INBOX_FRAME_BYTES:
                await self._send(target, "inbox", frame)
                frame, size = [], 0
            frame.append([cid, data])
            size += len(data)
            sent[cid] = len(leftover.messages)
        if frame:
            await self._send(target, "inbox", frame)
        return sent

    def _travels(self, cid: str, target: str, message: Any) -> bool:
        try:
            dumps(message)
        except InvalidSpec as exc:
            self.messenger.lost += 1
            logger.warning(
                "hub %s: a message to %s could not move with it to %s: %s",
                self.hub_id,
                cid,
                target,
                exc,
            )
            return False
        return True

    def _start_results(self, reply: Any) -> list[tuple[str, Pid | HubError]]:
        results: list[tuple[str, Pid | HubError]] = []
        for item in reply:
            cid, status, *rest = item
            results.append(
                (cid, pid_from_wire(rest[0]) if status == "ok" else error_from_wire(cid, *rest))
            )
        return results

    # -- moves into this node ------------------------------------------------------------------

    def _take_inbox(self, cid: str) -> list[Any]:
        held = self._inbox.pop(cid, None)
        return held[1] if held is not None else []

    def _on_inbox(self, items: Any) -> None:
        now = asyncio.get_running_loop().time()
        for cid, data in items:
            messages = loads(data)
            if not isinstance(messages, list):
                raise ValueError("a moved mailbox must be a list")
            held = self._inbox.get(str(cid))
            if held is None:
                self._inbox[str(cid)] = (now, messages)
            else:
                held[1].extend(messages)

    def _expect_arrival(self, record: Record, source: str) -> Arrival:
        """A hot move's new copy: it waits (bounded) for the old copy's state."""
        cid = record.spec.id
        loop = asyncio.get_running_loop()
        arrival = Arrival()
        timer = loop.call_later(self._hold_limit(record), self._abandon, cid, "no state came")
        previous = self._incoming.pop(cid, None)
        if previous is not None:
            previous.timer.cancel()
        self._incoming[cid] = _Incoming(arrival, source, timer)
        return arrival

    def _hold_limit(self, record: Record) -> float:
        """How long a hot move's new copy waits for the old one's state: the source waits
        ``retention`` for it to be ready, then stops the old copy (``shutdown_timeout``), then
        sends the state (answered within ``start_timeout``)."""
        return self.migration.retention + record.spec.shutdown_timeout + self.start_timeout + 2.0

    def _abandon(self, cid: str, why: str) -> None:
        """A new copy waited in vain: if the old one still runs on a live source, this one
        stops (the move did not happen), as it does when the child was stopped or buried
        meanwhile, or when another node owns it now (:func:`~hub.planner.owned_elsewhere`:
        that owner starts it from its record); otherwise it starts from its spec."""
        incoming = self._incoming.pop(cid, None)
        if incoming is None:
            return
        incoming.timer.cancel()
        source = incoming.source
        if not self._live_at(cid, self.runtime.epoch(cid)):
            stops = "ended meanwhile"
        elif any(n == source for n, _ in self.running_on(cid)):
            stops = f"did not move from {source}"
        elif owned_elsewhere(self.node, self.owners(cid)):
            stops = "is owned by another node now"
        else:
            stops = ""
        if stops:
            logger.warning("hub %s: %s %s (%s); the copy here stops", self.hub_id, cid, stops, why)
            self.runtime.own(self._withdraw(cid, source), f"withdraw:{cid}")
            return
        logger.warning(
            "hub %s: %s starts here from its spec: %s (%s)", self.hub_id, cid, why, source
        )
        incoming.arrival.complete(self._take_inbox(cid))
        self._busy.pop(cid, None)
        self._dirty.add(cid)
        self._wake.set()

    async def _withdraw(self, cid: str, source: str) -> None:
        """Stop a new copy whose move did not happen; what was sent to it goes back."""
        try:
            left = await self.runtime.move_out([cid], source, handover=False)
        finally:
            self._done([cid])
        leftover = left.get(cid)
        if leftover is not None and leftover.messages:
            relay = self.messenger.relay
            relay.hold(cid, leftover.messages, asyncio.get_running_loop().time(), moving=False)
            self.messenger.resolve([cid])

    async def _serve_handover(self, source: str, payload: Any) -> list[Any]:
        """The old copies stopped: give the waiting new copies their state and the old
        mailboxes; answer once each runs (or failed)."""
        waits: list[tuple[str, asyncio.Future[bool], int]] = []
        out: list[Any] = []
        loop = asyncio.get_running_loop()
        for cid, has_state, data in payload:
            incoming = self._incoming.get(cid)
            if incoming is None or incoming.source != source:
                out.append([cid, "error", *error_to_wire(NotFound(cid))])
                continue
            del self._incoming[cid]
            incoming.timer.cancel()
            state = NO_STATE
            if has_state:
                try:
                    state = loads(data)
                except ValueError as exc:
                    logger.warning("hub %s: the state of %s is unusable: %s", self.hub_id, cid, exc)
            future = self._running.get(cid)
            if future is None:
                future = self._running[cid] = loop.create_future()
            incoming.arrival.complete(self._take_inbox(cid), state)
            waits.append((cid, future, len(data) if has_state else -1))
        arrived: list[ChildSpec] = []
        for cid, future, size in waits:
            try:
                async with asyncio.timeout(self.start_timeout):
                    running = await asyncio.shield(future)
            except TimeoutError:
                running = False
            finally:
                self._running.pop(cid, None)
                self._done([cid])
            child = self.runtime.get(cid)
            if not running or child is None or child.ctx is None:
                out.append([cid, "error", *error_to_wire(StartFailed(cid, "did not start"))])
                continue
            arrived.append(child.spec)
            self._arrived[cid] = loop.time() + MOVE_WINDOW
            out.append([cid, "ok", child.ctx.pid.to_wire()])
            if size >= 0:
                self.runtime.events.emit(
                    Hook.HANDOVER_DELIVERED, HandoverDelivered(cid, source, self.node, size)
                )
        if arrived:
            self.runtime.events.emit(Hook.CHILDREN_MIGRATED, ChildrenMigrated(self.node, arrived))
            await self.publish_now()  # senders find the new copies without a batch window
        return out

    async def migrate(self, child_id: str, node: str, timeout: float) -> Pid:
        """Move ``child_id`` to ``node`` (with the hub's migration strategy) and keep it
        there while ``node`` is a live member that does not drain; returns its new pid."""
        if self.rf > 1:
            raise InvalidSpec("migrate() moves the one copy of a child; this hub replicates")
        if node != self.node and node not in self.members:
            raise InvalidSpec(f"{node!r} is not a live member of hub {self.hub_id!r}")
        if node in self.draining or (node == self.node and self.leaving):
            raise InvalidSpec(f"{node!r} drains: nothing moves to it")
        record = self.desired.live(child_id)
        if record is None:
            raise NotFound(child_id)
        if record.pin != node:
            self.write(record.pinned(self.origin, node))
            self._replan_local([child_id])
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            part = self.registry.partitions.get(node)
            entry = part.entries.get(child_id) if part is not None else None
            if entry is not None and len(self.running_on(child_id)) == 1:
                return entry.pid
            if self.desired.live(child_id) is None:
                raise NotFound(child_id)
            if loop.time() >= deadline:
                raise Timeout(f"{child_id} did not move to {node} within {timeout}s")
            self._registry_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout_at(min(deadline, loop.time() + 0.5)):
                    await self._registry_changed.wait()

    # -- start and stop requests ---------------------------------------------------------------

    async def start_children(
        self, specs: Sequence[ChildSpec], metadata: Mapping[str, Any], timeout: float
    ) -> tuple[list[tuple[str, list[tuple[str, Pid]]]], list[tuple[str, HubError]]]:
        """Route a start request: one batch per owner; returns ``(started, errors)``. While
        a peer is not synchronized (it may not list this node yet, and place by a ring without
        it), the routing waits for it, for half of ``timeout`` at most."""
        if self.unsynced:
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout / 2):
                    while self.unsynced:
                        self._registry_changed.clear()
                        await self._registry_changed.wait()
            timeout = max(0.0, deadline - loop.time())
        errors: list[tuple[str, HubError]] = []
        groups: dict[str, list[Record]] = {}
        guided = self._guided
        if guided:
            self.distribution.guide(specs)  # type: ignore[attr-defined]
        pace = Pace()
        for spec in specs:
            record = self.new_record(spec, metadata)
            if isinstance(record, HubError):
                errors.append((spec.id, record))
                continue
            for owner in self.owners(spec.id) or [self.node]:
                groups.setdefault(owner, []).append(record)
            if pace.due():
                await pace.pause()
        outcomes: list[tuple[str, Pid | HubError]] = []

        mine = groups.get(self.node, ())
        here = {r.spec.id for r in mine} if mine else set()
        sent: list[str] = []

        async def start_on(target: str, records: list[Record]) -> None:
            if target == self.node:
                outcomes.extend(await self.serve_start(records, timeout, 0, "start"))
                return
            # known here before the owner's registry entry carries them (no second decode),
            # and in transit until the request ends (a start that fails writes its tombstone
            # below): not planned meanwhile, the outcome, the entry or the transit's end has
            # them planned. Not a record this node owns too (replicas): its own start
            # (``serve_start``) learns those, busy, at the right time
            sent_now = (r for r in records if r.spec.id not in here)
            for record in self._learn(sent_now, apart=False, plan=False):
                self._in_transit[record.spec.id] = math.inf
                sent.append(record.spec.id)
            outcomes.extend(await self.start_remote(target, records, timeout, "start"))

        async def batches_on(target: str, records: list[Record]) -> None:
            # one batch at a time per owner: each is answered within its own timeout, instead
            # of all of them competing for the owner's event loop at once
            for i in range(0, len(records), START_BATCH):
                await start_on(target, records[i : i + START_BATCH])

        try:
            await asyncio.gather(*(batches_on(t, rs) for t, rs in groups.items()))
            where, failed = await self._started(groups, outcomes)
        finally:  # the copies that started: in transit until they show, for a while at most
            until = asyncio.get_running_loop().time() + self.start_timeout
            in_transit = self._in_transit
            for cid in sent:
                if in_transit.get(cid) == math.inf:
                    in_transit[cid] = until
        node = self.node
        remote = ((cid, pid) for cid, pids in where.items() for n, pid in pids if n != node)
        await self.until_visible(remote, asyncio.get_running_loop().time() + timeout)
        started = [(s.id, where[s.id]) for s in specs if s.id in where]
        errors += [(s.id, failed[s.id]) for s in specs if s.id in failed and s.id not in where]
        return started, errors

    async def _started(
        self, groups: Mapping[str, list[Record]], outcomes: list[tuple[str, Pid | HubError]]
    ) -> tuple[dict[str, list[tuple[str, Pid]]], dict[str, HubError]]:
        """The outcome of a start request, per child: where it started, or why not (it then
        gets a tombstone here and everywhere, unless it runs already). Paced: a request can
        hold 100,000 children."""
        where: dict[str, list[tuple[str, Pid]]] = {}
        failed: dict[str, HubError] = {}
        pace = Pace()
        for cid, outcome in outcomes:
            if isinstance(outcome, Pid):
                where.setdefault(cid, []).append((outcome.node, outcome))
            else:
                failed.setdefault(cid, outcome)
            if pace.due():
                await pace.pause()
        records = {r.spec.id: r for rs in groups.values() for r in rs}
        for pids in where.values():
            pids.sort()
        # each is in transit until its entry shows here (then it runs elsewhere, or here: a
        # copy planned when its start ended) or ``start_timeout`` passed (then planned): planning
        # it now would only find it in transit (100,000 planned for nothing on the requester)
        await in_slices(functools.partial(self._learn, plan=False), [records[cid] for cid in where])
        for cid, error in failed.items():
            if cid not in where and not isinstance(error, AlreadyStarted):
                # no owner started it (or the outcome is unknown: no answer): make it "not
                # started", everywhere
                self.write(
                    records[cid].successor(
                        self.origin, STOPPED, f"start failed: {error}", time.time()
                    )
                )
            if pace.due():
                await pace.pause()
        return where, failed

    async def serve_start(
        self,
        records: list[Record],
        timeout: float,
        hops: int,
        kind: str,
        *,
        hot: bool = False,
        source: str = "",
    ) -> list[tuple[str, Pid | HubError]]:
        """Start records here (``kind="migrate"``: a move, accepted whoever owns it), or
        forward those this node does not own (at most :data:`MAX_HOPS` times). A locked node
        starts nothing (:class:`QuorumLost`)."""
        if self.locked:
            lost = QuorumLost(f"hub {self.hub_id!r} is locked on {self.node} (quorum lost)")
            return [(r.spec.id, lost) for r in records]
        if self._guided:
            self.distribution.guide([r.spec for r in records])  # type: ignore[attr-defined]
        forward: dict[str, list[Record]] = {}
        mine: list[Record] = []
        for record in records:
            cid = record.spec.id
            target = (
                self.node
                if kind == "migrate"
                else start_target(self.node, self.owners(cid), hops, MAX_HOPS)
            )
            if target == self.node:
                mine.append(record)
            else:
                forward.setdefault(target, []).append(record)
        if forward:
            self.runtime.events.emit(
                Hook.FORWARDED_MIGRATION,
                [(node, [r.spec.id for r in group]) for node, group in forward.items()],
            )
        parts = await asyncio.gather(
            self._start_here(mine, timeout, kind, hot=hot, source=source),
            *(self.start_remote(n, group, timeout, kind, hops + 1) for n, group in forward.items()),
        )
        return [outcome for part in parts for outcome in part]

    def _refusal(self, record: Record, kind: str) -> Pid | HubError | None:
        """Why ``record`` is not started here now (checked right before the start, after any
        wait): it already runs here, the desired state has moved past it, or (a move) this node
        does not own it and an owner already runs it: the sender's view was partial (a heal
        still converging), and the child is safe where it is."""
        cid = record.spec.id
        if record.status != LIVE:  # a move of a copy whose tombstone its source had learnt
            return NotFound(cid)
        if kind == "migrate":
            owners = self.owners(cid)
            if self.node not in owners:
                holders = [n for n, _ in self.running_on(cid) if n in owners]
                if holders:
                    return AlreadyStarted(cid, holders[0])
        child = self.runtime.get(cid)
        if child is not None:
            if self.runtime.epoch(cid) == record.epoch and child.ctx is not None:
                return child.ctx.pid  # already here: the request is a repeat
            return AlreadyStarted(cid, self.node)
        known = self.desired.get(cid)
        if known is not None and known.key() > record.key():
            if known.status != LIVE:
                return NotFound(cid)  # stopped meanwhile
            where = ", ".join(n for n, _ in self.running_on(cid)) or "elsewhere"
            return AlreadyStarted(cid, where)
        return None

    async def _start_here(
        self, records: list[Record], timeout: float, kind: str, *, hot: bool, source: str
    ) -> list[tuple[str, Pid | HubError]]:
        out: list[tuple[str, Pid | HubError]] = []
        mine = []
        for record in records:
            refused = self._refusal(record, kind)
            if refused is None:
                mine.append(record)
            else:
                out.append((record.spec.id, refused))
                self._inbox.pop(record.spec.id, None)  # its sender keeps the messages
        if not mine:
            return out
        # the records travel with the registry entries once the children run: a peer that
        # knew a record of a child still starting here could, as its owner, start another.
        # Busy here until their start ended, which has them planned
        self._learn(mine, apart=False, plan=False)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout + 1.0
        arrivals: dict[str, Arrival] = {}
        for record in mine:
            cid = record.spec.id
            self._busy[cid] = deadline
            if kind == "migrate":  # it moves in: the old mailbox (and state) come first
                if hot:
                    arrivals[cid] = self._expect_arrival(record, source)
                else:
                    arrivals[cid] = Arrival.of(self._take_inbox(cid))
        modes = {r.spec.id: self.mode_of(r.spec.id) for r in mine} if self.rf > 1 else None
        try:
            results = await self.runtime.start(
                [(r.spec, r.metadata, r.epoch) for r in mine], timeout, arrivals, modes
            )
        finally:
            self._done(r.spec.id for r in mine)
        moved = []
        for record in mine:
            cid = record.spec.id
            outcome = results[cid]
            out.append((cid, outcome))
            if hot:  # ready, not running yet: busy until its state came (or it gave up)
                incoming = self._incoming.get(cid)
                if isinstance(outcome, Pid) and incoming is not None:
                    self._busy[cid] = loop.time() + self._hold_limit(record) + 1.0
                elif incoming is not None:
                    del self._incoming[cid]
                    incoming.timer.cancel()
                continue
            if isinstance(outcome, Pid):
                self._failures.pop(cid, None)
                moved.append(record.spec)
                if kind == "migrate":  # a stale view here must not make it lose a conflict
                    self._arrived[cid] = loop.time() + MOVE_WINDOW
            elif kind == "migrate":
                self._start_failed(record, outcome)  # the planner retries, then buries
            elif self.rf == 1 and not isinstance(outcome, AlreadyStarted):
                # the only copy could not start: the request failed, for every node (under
                # replication the requester decides, since another owner may have started it)
                why = f"start failed: {outcome}"
                self.write(record.successor(self.origin, STOPPED, why, time.time()))
        if kind == "migrate" and moved:
            self.runtime.events.emit(Hook.CHILDREN_MIGRATED, ChildrenMigrated(self.node, moved))
        return out

    async def start_remote(
        self, node: str, records: list[Record], timeout: float, kind: str = "start", hops: int = 0
    ) -> list[tuple[str, Pid | HubError]]:
        """Ask ``node`` to start ``records``."""
        payload = {
            "records": [r.to_wire() for r in records],
            "timeout": timeout,
            "hops": hops,
            "draining": self.leaving,  # the target learns at once that we own nothing now
        }
        try:
            reply = await self._request(node, kind, payload, timeout=timeout + 1.0)
        except HubError as exc:
            failure = exc if isinstance(exc, Timeout) else HubError(f"{node}: {exc}")
            return [(r.spec.id, failure) for r in records]
        return self._start_results(reply)

    async def stop_children(
        self, ids: list[str], reason: Any
    ) -> tuple[list[tuple[str, list[str]]], dict[str, HubError]]:
        """Stop children for good: write their tombstones, then hand them to every peer (each
        stops the copy it has, if any) and wait for the answers. A copy that is in flight (a
        move) cannot start after this returns: its target has the tombstone."""
        tombstones: dict[str, Record] = {}
        known: list[str] = []
        now = time.time()
        for cid in ids:
            record = self.desired.live(cid)
            if record is not None:
                tombstones[cid] = record.successor(self.origin, STOPPED, str(reason), now)
            if record is not None or self.runtime.get(cid) is not None or self.running_on(cid):
                known.append(cid)
        self._learn(tombstones.values(), publish=True)
        failed: dict[str, HubError] = {}
        stopped: dict[str, list[str]] = {}
        wire = [r.to_wire() for r in tombstones.values()]

        async def stop_on(target: str) -> None:
            try:
                reply = await self._request(
                    target, "stop", [known, str(reason), wire], timeout=30.0
                )
            except HubError as exc:
                for cid in known:
                    if any(n == target for n, _ in self.running_on(cid)):
                        failed[cid] = HubError(f"{target}: {exc}")
                return
            for cid, err in reply:
                if err is None:
                    stopped.setdefault(cid, []).append(target)
                elif err[0] != "NotFound":
                    failed[cid] = error_from_wire(cid, *err)

        async def stop_here() -> None:
            local = [cid for cid in known if self.runtime.get(cid) is not None]
            self._expected.update(local)
            try:
                result = await self.runtime.stop(local, reason)
            finally:
                self._expected.difference_update(local)
            failed.update(result.errors)
            for cid, _ in result.stopped:
                stopped.setdefault(cid, []).append(self.node)

        if known:
            await asyncio.gather(stop_here(), *(stop_on(peer) for peer in list(self.members)))
        for cid in tombstones:
            if cid not in stopped and cid not in failed:
                stopped[cid] = []  # it ran nowhere: its stop is recorded
        return [(cid, sorted(stopped[cid])) for cid in ids if cid in stopped], failed

    async def _serve_stop(self, payload: Any) -> list[Any]:
        """Learn the tombstones, stop the local copies; ``[[cid, None | error]]`` for the
        children that were here or failed to stop."""
        ids, reason, wire = payload
        self._learn(record_from_wire(r, self.desired.get) for r in wire)
        local = [cid for cid in ids if self.runtime.get(cid) is not None]
        self._expected.update(local)
        try:
            result = await self.runtime.stop(local, reason)
        finally:
            self._expected.difference_update(local)
        out: list[Any] = [[cid, None] for cid, _ in result.stopped]
        return out + [[cid, error_to_wire(exc)] for cid, exc in result.errors]

    # -- leaving -------------------------------------------------------------------------------

    async def hand_off(self, *, final: bool) -> None:
        """Take this node out of placement on every node and move its children to their
        owners (bounded by :data:`LEAVE_TIMEOUT`). With ``final`` (a graceful stop), wait until
        the peers acknowledged the final registry state."""
        self.leaving = True
        drains = list(self.endpoint.meta.get("draining", ()))
        self.endpoint.update_meta(draining=sorted({*drains, self.hub_id}))
        if self.members:
            self._topology_changed(())
            loop = asyncio.get_running_loop()
            deadline = loop.time() + LEAVE_TIMEOUT
            while (self.runtime.child_ids() or self.moves_in_flight) and loop.time() < deadline:
                self._registry_changed.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await self._registry_changed.wait()
                if not self._busy:
                    self._wake.set()
            left = self.runtime.child_ids()
            if left:
                logger.warning("hub %s: %d children not handed off in time", self.hub_id, len(left))
        if final:
            await self.flush()

    async def flush(self) -> None:
        """Send the final registry state and pending records to every peer and wait (bounded)
        for their acknowledgements. The messages this node forwards go first: once a peer
        acknowledged, it has them, so a sender whose fence through this node fails (it is
        gone) cannot overtake them."""
        self.closing = True
        await asyncio.gather(*(self.messenger.flushed(peer) for peer in list(self.members)))
        local = self.registry.local
        snapshot = [
            local.node,
            local.boot_id,
            local.version,
            [self._entry_wire(e) for e in local.entries.values()],
        ]
        records = [r.to_wire() for r in self._outgoing.values()]
        self._outgoing.clear()
        peers = list(self.members)

        async def one(peer: str) -> None:
            try:
                await self._request(peer, "final", [records, snapshot], timeout=FLUSH_TIMEOUT)
            except HubError as exc:
                logger.warning(
                    "hub %s: final state not acknowledged by %s: %s", self.hub_id, peer, exc
                )

        await asyncio.gather(*(one(p) for p in peers))

    # -- registry sync -------------------------------------------------------------------------

    def _entry_wire(self, entry: Entry) -> list[Any]:
        return entry_to_wire(entry, self.record_of(entry.spec, entry.metadata, entry.epoch))

    async def _publisher(self) -> None:
        """Coalesce local writes for ``batch_window``, then send them to every peer: records
        and a delta, or a snapshot to a peer that missed something."""
        while True:
            if self._behind:
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._dirty_registry.wait()
            else:
                await self._dirty_registry.wait()
            await asyncio.sleep(self.sync.batch_window)
            await self.publish_now()

    async def publish_now(self) -> None:
        """Send what changed since the last publication to every peer, now (one publication
        at a time, so that frames keep their order on every link)."""
        async with self._publish_lock:
            self._dirty_registry.clear()
            await self._publish()

    async def _publish(self) -> None:
        local = self.registry.local
        delta = local.changes_since(self._published)
        self._published = local.version  # what changes while this publication is built is next
        carried = {  # records that travel with their registry entry need no frame of their own
            cid: entry.epoch
            for cid, entry in (delta.ops if delta is not None else ())
            if not isinstance(entry, str)
        }
        records = [r.to_wire() for cid, r in self._outgoing.items() if carried.get(cid) != r.epoch]
        self._outgoing.clear()
        peers = list(self.members)
        if delta is None:
            self._behind.update(peers)
        behind = [p for p in peers if p in self._behind]
        current = [p for p in peers if p not in self._behind]
        frames: list[tuple[str, Any]] = []
        if records:
            for i in range(0, len(records), self.chunk):
                frames.append(("records", records[i : i + self.chunk]))
        if delta is not None and delta.ops:
            ops = await paced(self._op_wire, delta.ops)
            for i in range(0, len(delta.ops), self.chunk):
                part = Delta(
                    local.node,
                    local.boot_id,
                    delta.base + i,
                    delta.base + min(len(delta.ops), i + self.chunk),
                    delta.ops[i : i + self.chunk],
                )
                frames.append(("delta", delta_to_wire(part, ops[i : i + self.chunk])))
        snapshot_frames = await self._snapshot_frames() if behind else []

        if not peers:
            return
        links = self.endpoint.links

        def pack(frame: tuple[str, Any]) -> tuple[str, Any]:
            return frame[0], links.pack(self.hub_id, frame[0], frame[1])

        try:  # each frame packed once for every peer (paced: queueing them then never waits)
            frames = await paced(pack, frames)
            snapshot_frames = await paced(pack, snapshot_frames)
        except HubError as exc:  # not msgpack data: a bug; the peers catch up by snapshot
            logger.error("hub %s: registry frames could not be packed: %s", self.hub_id, exc)
            self._behind.update(peers)
            return

        async def to(peer: str, its: list[tuple[str, Any]], snapshot: bool) -> None:
            for kind, payload in its:
                if not await self._send(peer, kind, payload):
                    self._behind.add(peer)
                    return
            if snapshot:
                self._behind.discard(peer)

        await asyncio.gather(
            *(to(p, frames, False) for p in current),
            *(
                to(p, [f for f in frames if f[0] == "records"] + snapshot_frames, True)
                for p in behind
            ),
        )

    def _op_wire(self, op: tuple[str, Entry | str]) -> list[Any]:
        cid, entry = op
        return [cid, entry if isinstance(entry, str) else self._entry_wire(entry)]

    async def _snapshot_frames(self) -> list[tuple[str, Any]]:
        local = self.registry.local
        version = local.version
        entries = await paced(self._entry_wire, list(local.entries.values()))
        parts = max(1, -(-len(entries) // self.chunk))
        return [
            (
                "snapshot",
                [
                    local.node,
                    local.boot_id,
                    version,
                    i,
                    parts,
                    entries[i * self.chunk : (i + 1) * self.chunk],
                ],
            )
            for i in range(parts)
        ]

    async def _send_snapshot(self, peer: str) -> None:
        """Send our partition to ``peer`` as it is now (it is then no longer behind); at most
        one at a time per peer (the deltas that follow it repair the rest)."""
        if peer in self._snapshotting:
            return
        self._snapshotting.add(peer)
        try:
            await self._send_snapshot_frames(peer)
        finally:
            self._snapshotting.discard(peer)

    async def _send_snapshot_frames(self, peer: str) -> None:
        self._behind.discard(peer)
        for kind, frame in await self._snapshot_frames():
            if not await self._send(peer, kind, frame):
                self._behind.add(peer)
                return

    async def _send(self, peer: str, kind: str, payload: Any) -> bool:
        try:
            await self.endpoint.links.send(peer, self.hub_id, kind, payload, timeout=5.0)
        except HubError as exc:
            logger.debug("hub %s: %s to %s not sent: %s", self.hub_id, kind, peer, exc)
            return False
        return True

    async def _request(self, peer: str, kind: str, payload: Any, timeout: float) -> Any:
        """A request to a peer; a broken or unreachable link is :class:`NodeUnreachable`."""
        try:
            return await self.endpoint.links.request(
                peer, self.hub_id, kind, payload, timeout=timeout
            )
        except LinkError as exc:
            raise NodeUnreachable(peer, str(exc)) from None
        except RemoteError:
            raise
        except NotFound as exc:
            raise NodeUnreachable(peer, str(exc)) from None

    async def registry_change(self, limit: float) -> None:
        """Wait for the next change of this node's registry (a child that moves shows up at
        its new place), at least 2 ms and at most ``limit`` seconds."""
        await asyncio.sleep(0.002)
        self._registry_changed.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(limit):
                await self._registry_changed.wait()

    async def until_visible(self, placed: Iterable[tuple[str, Pid]], deadline: float) -> None:
        """Wait (until ``deadline``, loop time) until this node's registry shows each
        ``(child_id, pid)``: a caller reads its own writes after a remote start. Checked again
        on registry changes, at most every 20 ms (one dict lookup per child still missing)."""
        partitions = self.registry.partitions

        def missing(cid: str, pid: Pid) -> bool:
            part = partitions.get(pid.node)
            entry = part.entries.get(cid) if part is not None else None
            return entry is None or entry.local_id != pid.local_id or entry.boot_id != pid.boot_id

        pending = []
        pace = Pace()
        for cid, pid in placed:
            if missing(cid, pid):
                pending.append((cid, pid))
            if pace.due():
                await pace.pause()
        loop = asyncio.get_running_loop()
        while pending and loop.time() < deadline:
            self._registry_changed.clear()
            try:
                async with asyncio.timeout_at(deadline):
                    await self._registry_changed.wait()
                    await asyncio.sleep(0.02)
            except TimeoutError:
                return
            pending = [(cid, pid) for cid, pid in pending if missing(cid, pid)]

    def _apply_changes(self, changes: Iterable[Change], *, dropped: bool = False) -> None:
        """Tell the hooks and the planner what a registry change did (``dropped``: a departed
        node's partition was forgotten)."""
        self._registry_changed.set()
        events = self.runtime.events
        now = asyncio.get_running_loop().time()
        parked = self._parked
        concerns = self._concerns
        for change in changes:
            if change.kind == "removed" or concerns(change.child_id):
                self._dirty.add(change.child_id)
            if parked:
                parked.pop(change.child_id, None)  # another copy, or one gone: decide again
            if change.kind != "removed":
                assert change.pid is not None
                self._in_transit.pop(change.child_id, None)
                if change.child_id in self.messenger.relay:
                    self.messenger.resolve([change.child_id])
                if change.kind == "replaced":
                    update = PidUpdate(change.node, change.child_id, change.pid)
                    events.emit(Hook.CHILD_PROCESS_PID_UPDATE, update)
                events.emit(
                    Hook.REGISTRY_PID_INSERTED,
                    PidInserted(change.child_id, [(change.node, change.pid)]),
                )
            else:
                # no owner starts it while it may be moving: a move says so, and a removal seen
                # in a snapshot (which carries no reasons) may be one
                if change.reason.startswith("moved:") or (not change.reason and not dropped):
                    self._in_transit[change.child_id] = now + MOVE_WINDOW
                events.emit(Hook.REGISTRY_PID_REMOVED, PidRemoved(change.child_id, [change.node]))
        self._wake.set()

    async def _entries_from_wire(
        self, peer: str, boot: Any, items: Iterable[Any]
    ) -> list[tuple[Record, Entry]] | None:
        """Decode registry entries of ``peer``'s partition of boot ``boot`` (paced), each with
        the record it carries; ``None`` when ``peer`` left or restarted meanwhile (nothing of
        it applies)."""
        member = self.members.get(peer)
        known = self.desired.get
        node, boot_id = sys.intern(str(peer)), sys.intern(str(boot))
        decoded = await paced(lambda item: entry_from_wire(item, known, node, boot_id), items)
        if self.members.get(peer) != member:
            return None
        return decoded

    def _with_records(self, decoded: list[tuple[Record, Entry]]) -> tuple[Entry, ...]:
        """The entries of a delta about to be applied, once their records are learnt: a
        record is learnt with its entry, never before (a node that knew the record of a copy
        its registry does not show yet could start another)."""
        self._plan_concerned(self._learn((r for r, _ in decoded), apart=False, plan=False))
        return tuple(entry for _, entry in decoded)

    def _plan_concerned(self, learnt: Iterable[Record]) -> None:
        concerns = self._concerns
        self._dirty.update(cid for r in learnt if concerns(cid := r.spec.id))

    async def _load(
        self, node: str, boot: str, version: int, decoded: list[tuple[Record, Entry]]
    ) -> bool:
        """Learn the records of a snapshot of ``node``'s partition and load it, paced (a
        partition can hold 100,000 entries); False when ``node`` left or restarted meanwhile
        (nothing is loaded then). The records are learnt before their entries here, so
        ``node`` counts as not synchronized until the end: this node starts nothing while a
        peer is not synchronized (nor moves a copy to it), so it starts no second copy of a
        child whose record it knows and whose entry it does not show yet."""
        member = self.members.get(node)
        was_synced = node not in self.unsynced
        self.unsynced.add(node)
        learnt: list[Record] = []

        def learn(part: Sequence[tuple[Record, Entry]]) -> None:
            learnt.extend(self._learn((r for r, _ in part), apart=False, plan=False))

        try:
            await in_slices(learn, decoded)
            if self.members.get(node) != member:
                return False
            entries = tuple(entry for _, entry in decoded)
            changes = self.registry.load(Snapshot(node, boot, version, entries))
            self._plan_concerned(learnt)
            loaded = self.registry.partitions.get(node)

            def apply(part: Sequence[Change]) -> None:
                if self.registry.partitions.get(node) is loaded:  # not dropped meanwhile
                    self._apply_changes(part)

            await in_slices(apply, changes)
            return self.members.get(node) == member
        finally:
            if was_synced and self.members.get(node) == member:
                self._synced(node)

    def _concerns(self, child_id: str) -> bool:
        """Whether a peer's new entry (or record) of ``child_id`` can ask anything of this
        node. Without replication, a child that runs elsewhere and not here needs nothing from
        it (the planner's rule), unless it was an orphan here: not planning those keeps a
        node that holds the registry of many children cheap."""
        return self.rf > 1 or child_id in self._orphans or self.runtime.get(child_id) is not None

    async def _apply_delta(self, peer: str, payload: Any) -> bool:
        """Apply a peer's delta; False when there is a gap (a snapshot is needed)."""
        node, boot, base, version, ops = payload
        if node != peer:
            return True  # only a partition's writer sends its deltas
        written = await self._entries_from_wire(
            peer, boot, [op for _, op in ops if not isinstance(op, str)]
        )
        if written is None:
            return True  # it left (or restarted) while the delta was decoded: nothing to apply
        entries = iter(entry for _, entry in written)
        decoded: list[tuple[str, Entry | str]] = [
            (cid, op if isinstance(op, str) else next(entries)) for cid, op in ops
        ]
        delta = Delta(node, boot, int(base), int(version), tuple(decoded))
        fits = self.registry.fits(delta)
        if fits != "next":
            return fits == "stale"
        self._with_records(written)
        changes = self.registry.apply(delta)
        if changes:
            self._apply_changes(changes)
        return True

    async def _apply_snapshot_part(self, payload: Any) -> None:
        node, boot, version, part, parts, items = payload
        if node == self.node or not 0 <= part < parts <= MAX_SNAPSHOT_PARTS:
            return
        if part == 0 and node not in self._parts and self.registry.holds(node, boot, version):
            # nothing newer than what is held (a join both pushes and pulls partitions): not
            # decoded; its later parts find no snapshot under way and are skipped
            if self.members.get(node) == boot:
                self._synced(node)
            return
        elif part and not self._continues(node, boot, version, parts):
            return  # a part of a snapshot whose start we missed: the next one repairs it
        decoded = await self._entries_from_wire(node, boot, items)
        if decoded is None:
            return  # it left (or restarted) while the part was decoded
        if part == 0:
            self._parts[node] = (boot, version, parts, decoded, asyncio.get_running_loop().time())
        else:
            if not self._continues(node, boot, version, parts):
                return  # another snapshot of it started while this part was decoded
            self._parts[node][3].extend(decoded)
        held = self._parts[node]
        if part == parts - 1:
            del self._parts[node]
            if not await self._load(node, boot, int(version), held[3]):
                return  # it left (or restarted) while the snapshot was loaded
            early = self._early.pop(node, [])
            if not all([await self._apply_delta(node, delta) for delta in early]):
                self.runtime.own(self._catch_up(node), f"catch-up:{node}")  # still a gap
            elif self.members.get(node) == boot:
                self._synced(node)

    def _continues(self, node: str, boot: Any, version: Any, parts: int) -> bool:
        """Whether the snapshot of ``node`` under way is the one these parts belong to."""
        held = self._parts.get(node)
        return held is not None and held[:3] == (boot, version, parts)

    async def _send_ended(self, peer: str) -> None:
        """Give a joiner every record of a child that should not run (tombstones, burials) at
        once: a registry entry of a stale copy must not make it restart a stopped child."""
        ended = [r.to_wire() for r in self.desired if r.status != LIVE]
        for i in range(0, len(ended), self.chunk):
            await self._send(peer, "records", ended[i : i + self.chunk])

    def _synced(self, peer: str) -> None:
        """We hold ``peer``'s current partition: decisions that waited for it can be made."""
        if peer in self.unsynced:
            self.unsynced.discard(peer)
            self._registry_changed.set()  # a start request may wait for it
            self._replan_local(())
            if not self.unsynced:  # loaded: a peer that holds moves to this node learns it
                self._send_state(list(self.members))
            self._check_loaded()

    def _check_loaded(self) -> None:
        """Joiners whose last anti-entropy state shows the partitions this node holds (by
        node and boot) have loaded the registry: children move to them now."""
        own = self._versions()
        for name in list(self._loading):
            state = self._peer_state.get(name)
            if state is not None and not catching_up(state[0], own):
                self._loaded(name, "it holds the registry")

    def _ask_snapshot(self, peer: str) -> None:
        """Catch up on ``peer``'s partition in a task of its own: a frame handler that waited
        for the answer would hold back every frame behind it on that link."""
        if peer not in self._catching:
            self.runtime.own(self._catch_up(peer), f"catch-up:{peer}")

    async def _catch_up(self, peer: str) -> None:
        """Ask ``peer`` for a snapshot of its partition (it sends it as one-way parts)."""
        if peer in self._catching:
            return
        self._catching.add(peer)
        try:
            await self._request(peer, "send_snapshot", None, timeout=10.0)
        except HubError as exc:
            logger.info("hub %s: no snapshot from %s yet: %s", self.hub_id, peer, exc)
        finally:
            self._catching.discard(peer)

    # -- anti-entropy and synchronization ------------------------------------------------------

    def _state(self) -> tuple[Any, int]:
        """This node's registry versions (over the live members) and desired digest."""
        return (self._versions(), self.desired.digest())

    def _versions(self) -> tuple[tuple[str, str, int], ...]:
        live = {*self.members, self.node}
        return tuple(
            sorted(
                (n, p.boot_id, p.version) for n, p in self.registry.partitions.items() if n in live
            )
        )

    def _send_state(self, peers: Iterable[str]) -> None:
        """This node's anti-entropy state (built once) to each of ``peers``."""
        local = self.registry.local
        payload = [
            local.boot_id,
            local.version,
            self.desired.digests(),
            state_to_wire(self._state()),
            sorted(map(list, self.members.items())),  # ``_rumours``: [name, boot]
        ]
        for peer in peers:
            self.runtime.own(self._send(peer, "state", payload), f"state:{peer}")

    def _rumours(self, peer: str, members: Iterable[tuple[str, str]], now: float) -> None:
        """Members (``(name, boot)``) a peer lists that this node does not know count as
        unsynced (no start here) until this node knows them, or no live peer lists them any
        more (``_end_unlisted_rumours``), for ``rumour_time`` at most, once per name until it
        joins or leaves:

        - a joiner that a peer lists already (a new boot of a node that just left, too) may
          run, or be about to run, children this node cannot see yet;
        - a node that failed here lately and that a peer still lists may only be slow: its
          peers hear from it, it refutes the suspicion and is back within the detection
          period, still running its children. Its children are restarted here once every
          live peer stopped listing it (a real failure: they detect it too, a moment later).

        A boot that left gracefully lately is no rumour: the peer has not noticed yet."""
        for name, boot in members:
            if name == self.node or name in self.members:
                continue
            if name in self._rumoured or name in self._rumours_over:
                continue  # rumoured once already: it may never show here
            left = self._left.get(name)
            lately = left is not None and now - left[0] <= self.rumour_time and left[1] == boot
            if lately and name not in self._failed:
                continue
            if lately:
                logger.info(
                    "hub %s: %s still lists %s, which failed here: its children wait for the "
                    "peers to agree (%.1f s at most)",
                    self.hub_id,
                    peer,
                    name,
                    self.rumour_time,
                )
            else:
                logger.info("hub %s: %s lists %s, not known here yet", self.hub_id, peer, name)
            self._rumoured[name] = now + self.rumour_time

    def _end_unlisted_rumours(self) -> None:
        """Rumours of members no live peer lists any more are over: the children they held
        back are planned."""
        listed = {name for members in self._peer_members.values() for name, _ in members}
        over = [name for name in self._rumoured if name not in listed]
        for name in over:
            del self._rumoured[name]
            self._rumours_over.add(name)
            logger.info("hub %s: no live peer lists %s any more", self.hub_id, name)
        if over:
            self._dirty.update(self._orphans)
            self._wake.set()

    async def _on_state(self, peer: NodeId, payload: Any) -> None:
        """A peer's registry version and desired digests: catch up on its partition if ours
        is behind, and push the desired buckets that have differed the same way for
        :data:`STABLE_DIFF` (a difference that changes is records still in flight)."""
        boot, version, digests, state, *rest = payload
        name = peer.name
        loop = asyncio.get_running_loop()
        now = loop.time()
        if rest and self.members.get(name) == boot:
            listed = members_from_wire(rest[0])
            self._peer_members[name] = listed
            self._rumours(name, listed, now)
            self._end_unlisted_rumours()
        part = self.registry.partitions.get(name)
        held_version = part.version if part is not None and part.boot_id == boot else None
        current = self.registry.holds(name, boot, version)
        if current and self.members.get(name) == boot:
            self._synced(name)
        held = self._parts.get(name)
        if held is not None and now - held[4] > STALE_SNAPSHOT:
            del self._parts[name]  # its last parts never came: ask again
            self._early.pop(name, None)
            held = None
        if current:
            self._lagging.pop(name, None)
        elif name in self.members and held is None:
            if held_version is None:
                self._ask_snapshot(name)
            else:  # behind on the same boot: its deltas may still be on the way
                target, since = self._lagging.setdefault(name, (version, now))
                if held_version >= target:
                    self._lagging[name] = (version, now)  # it caught up meanwhile: wait again
                elif now - since >= BEHIND_GRACE:
                    del self._lagging[name]
                    self._ask_snapshot(name)
        mine = self.desired.digests()
        before = self._differing.get(name, {})
        differing: dict[int, tuple[int, int, float]] = {}
        for i in self.desired.differing(digests):
            seen = before.get(i)
            same = seen is not None and seen[:2] == (digests[i], mine[i])
            differing[i] = seen if same and seen is not None else (digests[i], mine[i], now)
        repeated = [i for i, (_, _, since) in differing.items() if now - since >= STABLE_DIFF]
        for i in repeated:
            differing[i] = (*differing[i][:2], now)  # pushed: wait as long again
        self._differing[name] = differing
        peer_state = state_from_wire(state)
        if repeated and not catching_up(peer_state[0], self._versions()):
            records = await paced(Record.to_wire, self.desired.bucket_records(repeated))
            for i in range(0, len(records), self.chunk):
                await self._send(name, "records", records[i : i + self.chunk])
        self._peer_state[name] = peer_state
        if self.members.get(name) == boot:
            if name in self._loading:
                self._check_loaded()
            if name not in self._answers and catching_up(peer_state[0], self._versions()):
                # one of us lacks a partition the other holds: tell it what we hold once more
                # after SYNC_INTERVAL (a joiner that synchronized sends its state only every
                # anti-entropy period, and a peer whose moves wait for it to load needs it)
                self._answers[name] = loop.call_later(SYNC_INTERVAL, self._answer_state, name)
        self._check_synchronized()

    def _answer_state(self, name: str) -> None:
        del self._answers[name]
        if name in self.members and not self.closing:
            self._send_state([name])

    def _check_synchronized(self) -> None:
        if (
            not self._sync_pending
            or self.unsynced
            or self._busy
            or self._dirty
            or self._check_local
            or self._slicing
        ):
            return
        if synchronized(self._state(), self._peer_state, self.members, self.node):
            self._sync_pending = False
            logger.info(
                "hub %s: cluster synchronized (%d children)", self.hub_id, len(self.registry)
            )
            self.runtime.events.emit(Hook.CLUSTER_SYNCHRONIZED, self.node)

    async def _background(self) -> None:
        """Anti-entropy rounds (faster while a topology change is not synchronized), tombstone
        collection, and the next part of the rolling sweep every ``reconcile_interval``."""
        loop = asyncio.get_running_loop()
        announce_at = loop.time()
        reconcile_at = loop.time() + self.reconcile_interval
        while True:
            interval = SYNC_INTERVAL if self._sync_pending else self.sync.anti_entropy_interval
            await asyncio.sleep(max(0.0, min(announce_at, reconcile_at) - loop.time(), 0.01))
            now = loop.time()
            if now >= announce_at:
                announce_at = now + interval
                self._send_state(list(self.members))
                self._check_synchronized()
                self._advise_gc()
                for cid in self.desired.collect(time.time()):
                    self._dirty.add(cid)
                self.messenger.tick()
                self.evaluate_quorum()  # a strategy may depend on time (DynamicQuorum)
                for cid in [c for c, (t, _) in self._inbox.items() if t + INBOX_TTL <= now]:
                    dropped = len(self._inbox.pop(cid)[1])
                    self.messenger.lost += dropped
                    logger.warning(
                        "hub %s: %d moved messages for %s were dropped: it never started here",
                        self.hub_id,
                        dropped,
                        cid,
                    )
            if now >= reconcile_at:
                reconcile_at = now + self.reconcile_interval
                self._sweep_next()

    def _advise_gc(self) -> None:
        """Warn once if the registry grew large with the collector's default thresholds."""
        if self._gc_advised:
            return
        advice = gc_advice(sum(len(p.entries) for p in self.registry.partitions.values()))
        if advice is not None:
            self._gc_advised = True
            logger.warning("hub %s: %s", self.hub_id, advice)

    # -- frames from peers ---------------------------------------------------------------------

    async def _on_frame(self, peer: NodeId, kind: str, payload: Any) -> Any:
        try:
            return await self._handle(peer, kind, payload)
        except (ValueError, TypeError, KeyError, IndexError) as exc:
            raise InvalidSpec(f"malformed {kind!r} from {peer.name}: {exc}") from None

    async def _handle(self, peer: NodeId, kind: str, payload: Any) -> Any:
        known = self.members.get(peer.name)
        stranger = known is None or (peer.boot_id != "" and known != peer.boot_id)
        if kind in ("delta", "records", "snapshot") and stranger:
            # not a member yet (or an old boot): what it runs is fetched once it joins, so no
            # record is learnt here without the partition that says where the child runs
            return None
        if kind == "delta":
            if not await self._apply_delta(peer.name, payload):
                if peer.name in self._parts:  # a snapshot is arriving: apply it after that
                    early = self._early.setdefault(peer.name, [])
                    if len(early) < MAX_EARLY_DELTAS:
                        early.append(payload)
                else:
                    self._ask_snapshot(peer.name)
            return None
        if kind == "records":
            self._learn(record_from_wire(r, self.desired.get) for r in payload)
            return None
        if kind == "snapshot":
            await self._apply_snapshot_part(payload)
            return None
        if kind == "send_snapshot":
            await self._send_snapshot(peer.name)
            return None
        if kind == "get_snapshot":  # the CLI's read of this node's partition
            local = self.registry.local
            listing = [
                [e.spec.to_wire(), e.pid.to_wire(), dict(e.metadata)]
                for e in local.entries.values()
            ]
            return [local.node, local.boot_id, local.version, listing]
        if kind == "state":
            await self._on_state(peer, payload)
            return None
        if kind == "final":
            records, (node, boot, version, items) = payload
            self._learn(record_from_wire(r, self.desired.get) for r in records)
            decoded = await self._entries_from_wire(peer.name, boot, items)
            if decoded is not None:  # else it is gone already: its partition went with it
                await self._load(node, boot, int(version), decoded)
            return None
        if kind in ("start", "migrate"):
            drains = payload.get("draining") is True and peer.name in self.members
            if drains and peer.name not in self.draining:
                self.draining.add(peer.name)
                self._topology_changed(())
            records = [record_from_wire(r, self.desired.get) for r in payload["records"]]
            timeout = float(payload.get("timeout", self.start_timeout))
            hops = int(payload.get("hops", 0))
            hot = kind == "migrate" and payload.get("hot") is True
            results = await self.serve_start(
                records, timeout, hops, kind, hot=hot, source=peer.name
            )
            return [
                [cid, "ok", r.to_wire()]
                if isinstance(r, Pid)
                else [cid, "error", *error_to_wire(r)]
                for cid, r in results
            ]
        if kind == "stop":
            return await self._serve_stop(payload)
        if kind == "cast":
            target, message, *rest = payload
            self._on_cast(target, message, int(rest[0]) if rest else 0)
            return None
        if kind == "casts":  # forwarded by a node the children left
            for target, message, hops in payload:
                self._on_cast(target, message, int(hops))
            return None
        if kind == "inbox":
            self._on_inbox(payload)
            return None
        if kind == "handover":
            return await self._serve_handover(peer.name, payload)
        if kind == "fence":
            cid, hops = payload
            await self.messenger.on_fence(str(cid), int(hops))
            return None
        if kind == "call":
            target, message, timeout, *rest = payload
            try:
                ctx = self._local_ctx(target)
            except NotDelivered:  # it just moved: the node it went to answers, if known
                where = await self.moved_to(str(target), float(timeout)) if not rest else None
                if where is None:
                    raise
                return await self._request(
                    where, "call", [target, message, timeout, 1], timeout=float(timeout)
                )
            future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            ctx.deliver(Call(message, future))
            try:
                async with asyncio.timeout(float(timeout)):
                    return await future
            except TimeoutError:
                raise Timeout(f"call to {target} got no reply within {timeout}s") from None
        raise InvalidSpec(f"unknown frame kind {kind!r}")

    async def moved_to(self, child_id: str, limit: float) -> str | None:
        """Where ``child_id`` just moved from this node (waiting, at most ``limit``, for a
        move in flight to finish), or ``None``."""
        relay = self.messenger.relay
        if child_id not in relay:
            return None
        await relay.settled(child_id, limit)
        where = relay.target(child_id)
        return where if where != self.node else None

    def _on_cast(self, target: Any, message: Any, hops: int) -> None:
        local = pid_from_wire(target) if isinstance(target, list) else str(target)
        try:
            self.messenger.on_cast(local, message, hops)
        except NotFound:
            logger.debug("hub %s: a cast to %s was dropped: no such instance", self.hub_id, local)
        except MailboxFull as exc:  # a one-way frame: its sender cannot be told
            self.messenger.lost += 1
            logger.warning("hub %s: a cast from a peer was dropped: %s", self.hub_id, exc)

    def _local_ctx(self, target: Any) -> Any:
        """The local instance a remote message is for; a child that should run but is not
        here answers :class:`NotDelivered` so that the sender retries where it went."""
        local = pid_from_wire(target) if isinstance(target, list) else str(target)
        try:
            return self.runtime.target(local)
        except NotFound:
            if isinstance(local, str) and self.expects(local):
                raise NotDelivered(local, f"not on {self.node} (moving)") from None
            raise

    # -- messages ------------------------------------------------------------------------------

    async def send_message(self, node: str, target: str | Pid, message: Any) -> None:
        """A remote cast: one-way and in order on the link (no round trip per message)."""
        wire = target.to_wire() if isinstance(target, Pid) else target
        try:
            await self.endpoint.links.send(node, self.hub_id, "cast", [wire, message])
        except (LinkError, NotFound) as exc:
            raise NodeUnreachable(node, str(exc)) from None

    async def call(self, node: str, target: str | Pid, message: Any, timeout: float) -> Any:
        wire = target.to_wire() if isinstance(target, Pid) else target
        return await self._request(node, "call", [wire, message, timeout], timeout=timeout)


class _LocalView:
    """The local children as the planner reads them (built per child on demand)."""

    __slots__ = ("_runtime",)

    def __init__(self, runtime: LocalRuntime) -> None:
        self._runtime = runtime

    def get(self, child_id: str) -> LocalChild | None:
        child = self._runtime.get(child_id)
        if child is None:
            return None
        return LocalChild(self._runtime.epoch(child_id), child.state)
