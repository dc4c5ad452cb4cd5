"""The model of one node: the coordinator's shell (:mod:`hub.coordinator`) around the real, pure
planner (:mod:`hub.planner`), desired table (:mod:`hub.desired`) and registry
(:mod:`hub.registry`).

Each method mirrors the coordinator method of the same name (``owners``, ``view``,
``running_on``, ``_learn``, ``record_of``, ``plan_now``, ``_execute``, ``_start_planned``,
``_start_failed``, ``_bury``, ``_migrate_batch``, ``start_children``, ``serve_start``,
``_refusal``, ``_start_here``, ``stop_children``, ``_serve_stop``, ``local_removed``,
``publish`` (``publish_now``), ``_apply_changes``, ``_on_state``, ``_send_ended``,
``_follow_topology``/``_leave``, ``_handle``, ``hand_off``/``flush``), with an ``await``
turned into a callback and a ``gather`` into a countdown. The local supervisor is
modelled by :meth:`SimNode.runtime_start` and :meth:`SimNode.runtime_stop` (a start takes a
random virtual time and may fail or time out, a stop of a starting child cancels it).
Deliberate simplifications, all timing-only:

* processing takes no virtual time: the planning loop's ``sleep(0)`` coalesces only the wakes
  of one instant, and the topology queue applies member changes at once (no hook awaits);
* a one-way handler that awaits a snapshot request (``_catch_up`` from a delta or a state frame)
  does not hold back the frames behind it on its link;
* frames are Python objects (no msgpack), snapshots are one part (no chunking), requests are
  not batched (``START_BATCH``), the migration semaphore is not modelled;
* a request to a peer that is not a member fails at once (the links cannot resolve it), and a
  one-way frame to it is not sent (e.g. the snapshot that answers a catch-up request of a
  joiner this node does not list yet: it follows once it does); a request to a dead
  incarnation fails when its link breaks; one to a paused or partitioned peer times out with
  its own timeout;
* anti-entropy runs at its interval even while a topology change is not synchronized (the shell
  switches to ``SYNC_INTERVAL`` then), and ``CLUSTER_SYNCHRONIZED`` is not modelled;
* tombstones never expire (runs are far shorter than the TTL); hooks and events are not
  modelled, except what the invariants need.

A candidate fix the shell does not have yet is written inline, behind ``"<name>" in
self.cfg.fixes`` (``SimConfig.fixes``) and marked ``# candidate fix``; without them this is the
shell as it is (there is none now).
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable, Container, Iterable, Mapping
from dataclasses import dataclass, field
from functools import partial
from itertools import compress, count
from operator import ne
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal

from hub.coordinator import (
    LEAVE_TIMEOUT,
    LOAD_HOLD,
    MAX_HOPS,
    MIGRATION_BATCH,
    MOVE_WINDOW,
    STABLE_DIFF,
    SYNC_INTERVAL,
)
from hub.desired import BURIED, LIVE, STOPPED, DesiredTable, Record
from hub.errors import AlreadyStarted, HubError, NodeUnreachable, NotFound, StartFailed, Timeout
from hub.pid import Pid
from hub.planner import (
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
)
from hub.registry import Change, Delta, Entry, Registry, Snapshot
from hub.spec import ChildSpec

from .network import Frame

if TYPE_CHECKING:
    from .cluster import Cluster

__all__ = ["Copy", "SimNode"]

Outcome = Pid | HubError
StartKind = Literal["planned", "start", "migrate", "hot"]
Reply = Callable[[HubError | None, Any], None]
_EMPTY: Mapping[str, Any] = MappingProxyType({})


@dataclass(slots=True, eq=False)
class _Batch:
    """One ``supervisor.start_batch`` call: settles when every child's init ended."""

    done: Callable[[dict[str, Outcome]], None]
    results: dict[str, Outcome] = field(default_factory=dict)
    pending: int = 0
    settled: bool = False


@dataclass(slots=True, eq=False)
class Copy:
    """A child held by the local supervisor."""

    spec: ChildSpec
    metadata: Mapping[str, Any]
    epoch: int
    pid: Pid
    why: StartKind
    state: str = "starting"  # "starting" | "running"
    batch: _Batch | None = None
    stop_at: float | None = None  # a stop in flight ends then
    waiters: list[Callable[[], None]] = field(default_factory=list)
    held: bool = False  # a hot move's new copy: ready, waiting for the old copy's state
    go: bool = False  # its state came before its init ended: it runs once that ends

    @property
    def cid(self) -> str:
        return self.spec.id


@dataclass(slots=True)
class _Pending:
    peer: str
    boot: str
    kind: str
    done: Reply
    deadline: float


class _BuriedReason:
    """What the local supervisor reports for a child that exhausted its restart intensity."""

    def __init__(self, attempts: int, error: str) -> None:
        self.attempts = attempts
        self.error = error


class SimNode:
    """One incarnation (name and boot id) of a node running one hub."""

    def __init__(self, cluster: Cluster, name: str, boot: str) -> None:
        cfg = cluster.config
        self.cluster = cluster
        self.sched = cluster.sched
        self.cfg = cfg
        self.name = name
        self.boot = boot
        self.alive = True
        self.paused = False
        self._buffer: list[tuple[Callable[..., None], tuple[Any, ...]]] = []
        # membership, as the coordinator holds it
        self.members: dict[str, str] = {}
        self.draining: set[str] = set()
        self.unsynced: set[str] = set()
        self.leaving = False
        self.closing = False
        self._ring_nodes = frozenset([name])  # the ring's nodes: this one and the members
        self._parts: list[tuple[str, dict[str, Entry]]] | None = None  # running_on's view
        # caches of owners() and view(), valid while ``_version`` (bumped by every change of
        # the members, their boots, draining, unsynced or leaving) holds
        self._version = 0
        self._owners_at = -1
        self._owners_cache: dict[str, list[str]] = {}
        self._view_at = -1
        self._view = View(name, frozenset([name]))
        self.planner = Planner(replication_factor=cfg.rf)
        self.desired = DesiredTable()
        self.registry = Registry(name, boot)
        # the local supervisor
        self.children: dict[str, Copy] = {}
        self.local: dict[str, LocalChild] = {}  # the planner's view of ``children``
        self._local_ids = itertools.count(1)
        self._tags: dict[str, str] = {}
        # planning
        self.dirty: set[str] = set()
        self.recheck: set[str] = set()  # local copies after a view change (``strays``)
        self.orphans: set[str] = set()
        self.busy: dict[str, float] = {}
        self.waited: set[str] = set()  # ``_waited``
        self.in_transit: dict[str, float] = {}
        self.arrived: dict[str, float] = {}
        self.failures: dict[str, Failures] = {}
        self.starting: set[str] = set()  # planned starts in flight
        self.expected: set[str] = set()
        self.deferred: list[tuple[float, str]] = []  # heap: (due, child id) put off until due
        self.rumoured: dict[str, float] = {}  # name -> until (``_rumours``)
        self.loading: dict[str, float] = {}  # joiners loading the registry -> until
        self.peer_versions: dict[str, Any] = {}  # the partitions each peer's last state showed
        self.answering: set[str] = set()  # peers this node sends its state to shortly
        self.peer_members: dict[str, set[tuple[str, str]]] = {}  # what each peer listed last
        self.failed: set[str] = set()  # names that failed here (not left) since they joined
        self.rumours_over: set[str] = set()  # rumoured once: not again until it joins or leaves
        self.left: dict[str, tuple[float, str]] = {}  # name -> when it left, its boot
        self.full = True
        self._plan_queued = False
        self._timer = 0  # the planning loop's wait: a token, and its end
        self._timer_at: float | None = None
        self._expire_at = 0.0
        self._changed_at = -1e9  # the last topology change (View.settle_at)
        # registry sync
        self.outgoing: dict[str, Record] = {}
        self.published = 0
        self.behind: set[str] = set()
        self._publish_queued = False
        self._behind_tick = False
        self.differing: dict[str, dict[int, tuple[int, int, float]]] = {}
        self.catching: set[str] = set()
        # requests in flight
        self._rids = itertools.count(1)
        self.pending: dict[int, _Pending] = {}
        self._timeouts_at: float | None = None  # one timer for the earliest request deadline
        self.move_failures: dict[str, int] = {}  # failed hot moves in a row (``_park``)
        self.parked: dict[str, float] = {}
        self.cold_next: set[str] = set()
        # hot moves into this node: child id -> (source, token of its abandon timer)
        self.incoming: dict[str, tuple[str, int]] = {}
        self._tokens = itertools.count(1)
        # leaving
        self.handing_off: tuple[float, bool] | None = None
        self.gone = False
        self.later(0.0, self._announce)
        self.later(cfg.reconcile_interval, self._reconcile)

    def __repr__(self) -> str:
        return f"<SimNode {self.name}/{self.boot}>"

    @property
    def origin(self) -> str:
        """What this node writes as a record's origin: name and boot."""
        return f"{self.name}#{self.boot}"

    # -- the node's event loop -----------------------------------------------------------------

    def later(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        sched = self.sched
        sched.at(sched.now + delay, self.dispatch, fn, args)

    def dispatch(self, fn: Callable[..., None], args: tuple[Any, ...]) -> None:
        """Run an event of this incarnation: nothing once it is dead, later while paused."""
        if not self.alive:
            return
        if self.paused:
            self._buffer.append((fn, args))
            return
        fn(*args)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        """Everything that came due while paused runs now, in order (timers fire late)."""
        self.paused = False
        buffered, self._buffer = self._buffer, []
        for fn, args in buffered:
            self.dispatch(fn, args)

    def kill(self) -> None:
        self.alive = False
        self._buffer.clear()

    # -- membership (``_follow_topology``, ``_leave``) -----------------------------------------

    def topology(self, name: str, seen: tuple[str, bool] | None, left: bool = False) -> None:
        """The failure detector reports ``name`` as ``(boot, draining)`` or gone (``None``:
        ``left`` gracefully, or failed)."""
        if self.cluster.trace:
            self.cluster.note(f"{self.name} sees {name} as {seen}")
        known = self.members.get(name)
        if seen is None:
            if known is not None:
                self._leave(name, failed=not left)
            return
        boot, drains = seen
        if known is not None and known != boot:
            self._leave(name, failed=False)  # a new boot: the old one is gone
            known = None
        if known is None:
            self._join(name, boot)
        if drains != (name in self.draining):
            if drains:
                self.draining.add(name)
            else:
                self.draining.discard(name)
            self._topology_changed(())

    def _join(self, name: str, boot: str) -> None:
        self.members[name] = boot  # PRE_CLUSTER_JOIN (the ring changes first) and the join
        self.loading[name] = self.sched.now + LOAD_HOLD
        self.later(LOAD_HOLD, self._load_over, name, boot)
        self.unsynced.add(name)
        self._topology_changed(())
        self.behind.add(name)  # it gets our partition, and we ask for its own
        self.dirty_registry()
        self._catch_up(name)
        self._send_ended(name)  # (its state went with ``_topology_changed``)
        self.rumoured.pop(name, None)
        self.rumours_over.discard(name)
        self.failed.discard(name)

    def _leave(self, name: str, failed: bool) -> None:
        boot = self.members.pop(name)  # PRE_CLUSTER_LEAVE (the ring) and the leave
        self.left[name] = (self.sched.now, boot)
        self.rumours_over.discard(name)
        if failed:
            self.failed.add(name)
        self.peer_members.pop(name, None)
        self.loading.pop(name, None)
        self.peer_versions.pop(name, None)
        for listed in list(self.peer_members.values()):  # a failure they have not seen
            self._rumours(listed)
        self._end_unlisted_rumours()
        self.draining.discard(name)
        self._version += 1  # the ring and the owners changed (``owners`` reads them again)
        self.unsynced.discard(name)
        self.behind.discard(name)
        self.differing.pop(name, None)
        for cid, (_, token) in [(c, i) for c, i in self.incoming.items() if i[0] == name]:
            self._abandon(cid, token)  # one abandoned copy may have ended another's wait
        part = self.registry.partitions.get(name)
        lost = list(part.entries) if part is not None else []
        self._parts = None
        self._apply_changes(self.registry.drop(name), dropped=True)
        self._topology_changed(lost)

    def _topology_changed(self, affected: Iterable[str]) -> None:
        self._changed_at = self.sched.now
        self.parked.clear()  # a refused move is tried again on the new membership
        self.move_failures.clear()
        self._version += 1
        self._parts = None
        self._cancel_foreign_starts()
        for peer in self.members:  # tell the members at once (``_rumours``)
            self._send_state(peer)
        self._replan_local(affected)

    def _replan_local(self, affected: Iterable[str] = ()) -> None:
        """``_replan_local``: the local copies to check (``strays``), the orphans, ``affected``."""
        self.recheck.update(self.children)
        self.waited.update(self.busy)
        self.dirty.update(self.orphans)
        self.dirty.update(affected)
        self.wake()

    def _cancel_foreign_starts(self) -> None:
        """``_cancel_foreign_starts``: a planned start of a child this node no longer owns."""
        for cid in foreign_starts(self.name, self.starting, self.owners):
            self.runtime_cancel_start(cid)

    # -- placement (``owners``, ``view``, ``running_on``) --------------------------------------

    def draining_now(self) -> set[str]:
        return self.draining | {self.name} if self.leaving else self.draining

    def owners(self, child_id: str) -> list[str]:
        """As the shell computes them. Cached per (members, draining): the ring
        (``ConsistentHashing``) is a function of its set of nodes, so nodes with the same view
        share it and its placements."""
        if self._owners_at != self._version:
            self._owners_at = self._version
            self._ring_nodes = frozenset([*self.members, self.name])
            draining = frozenset(self.draining_now())
            self._owners_cache = self.cluster.placements(self._ring_nodes, draining)
        found = self._owners_cache.get(child_id)
        if found is None:
            found = self._owners_cache[child_id] = self._owners(child_id)
        return found

    def _owners(self, child_id: str) -> list[str]:
        ring = self.cluster.ring(self._ring_nodes)
        rf = self.cfg.rf
        draining = self.draining_now()
        if not draining:
            return ring.belongs_to(child_id, rf)
        found = ring.belongs_to(child_id, rf + len(draining))
        return [n for n in found if n not in draining][:rf]

    def view(self) -> View:
        if self.rumoured:
            now = self.sched.now
            for name in [n for n, until in self.rumoured.items() if until <= now]:
                del self.rumoured[name]
                self.rumours_over.add(name)
                self._version += 1
        if self._view_at != self._version:
            self._view_at = self._version
            live = frozenset([*self.members, self.name])
            unsynced = frozenset([*self.unsynced, *self.rumoured])
            settle_at = self._changed_at + self.cfg.settle_time
            draining = frozenset(self.draining_now())
            self._view = View(
                self.name,
                live,
                draining,
                unsynced,
                False,
                settle_at,
                loading=frozenset(self.loading),
            )
        return self._view

    def running_on(self, child_id: str) -> list[tuple[str, int]]:
        """The partitions of this node and of the current boots of live members."""
        parts = self._parts
        if parts is None:
            members = self.members
            parts = self._parts = [
                (node, part.entries)
                for node, part in self.registry.partitions.items()
                if node == self.name or members.get(node) == part.boot_id
            ]
        out = []
        for node, entries in parts:
            entry = entries.get(child_id)
            if entry is not None:
                out.append((node, entry.epoch))
        return out

    # -- desired state (``_learn``, ``write``, ``record_of``, ``new_record``) ------------------

    def _learn(
        self,
        records: Iterable[Record],
        *,
        publish: bool = False,
        apart: bool = True,
        plan: bool = True,
    ) -> list[Record]:
        changed = []
        now = self.sched.now
        # ``apart``: learnt apart from the copy's registry entry (not with an entry, or for a
        # start here): a new live version is in transit until its copy shows
        for record in records:
            cid = record.spec.id
            old = self.desired.get(cid) if apart else None
            if not self.desired.merge(record, now):
                continue
            self.parked.pop(cid, None)  # a new record: decide again at once
            if apart and record.status == LIVE and (old is None or old.epoch < record.epoch):
                self.in_transit[cid] = now + self.cfg.start_timeout
            changed.append(record)
            if plan:
                self.dirty.add(cid)
            if publish:
                self.outgoing[cid] = record
            if record.status != LIVE:
                self.failures.pop(cid, None)
        if changed:
            self.wake()
            if publish:
                self.dirty_registry()
        return changed

    def write(self, record: Record, why: str) -> None:
        """A desired-state change made here (``why``: for the invariants' ledger only)."""
        self.cluster.ledger.written(self, record, why)
        self._learn([record], publish=True)

    def _live_at(self, cid: str, epoch: int) -> bool:
        known = self.desired.live(cid)
        return known is not None and known.epoch == epoch

    def record_of(self, spec: ChildSpec, metadata: Mapping[str, Any], epoch: int) -> Record:
        """The table's record when it is the copy's version or newer, else one for the copy."""
        record = self.desired.get(spec.id)
        if record is not None and record.epoch >= epoch:
            return record
        return Record(spec, metadata, max(1, epoch), self.origin, LIVE)

    def new_record(self, spec: ChildSpec, metadata: Mapping[str, Any]) -> Record | HubError:
        old = self.desired.get(spec.id)
        if old is not None and old.status == LIVE:
            where = [n for n, _ in self.running_on(spec.id)]
            return AlreadyStarted(spec.id, ", ".join(where) or "starting")
        epoch = old.epoch + 1 if old is not None else 1
        return Record(spec, metadata, epoch, self.origin, LIVE)

    # -- the local supervisor ------------------------------------------------------------------

    def runtime_start(
        self,
        records: list[Record],
        timeout: float,
        done: Callable[[dict[str, Outcome]], None],
        why: StartKind,
    ) -> None:
        """``LocalRuntime.start`` over ``Supervisor.start_batch``: each child's init takes a
        random time and may fail; past ``timeout`` the late ones stop and time out."""
        batch = _Batch(done)
        for record in records:
            cid = record.spec.id
            if cid in self.children:
                batch.results[cid] = AlreadyStarted(cid, self.name)
                continue
            pid = Pid(self.name, self.boot, next(self._local_ids))
            copy = Copy(record.spec, record.metadata, record.epoch, pid, why, batch=batch)
            self.children[cid] = copy
            self.local[cid] = LocalChild(copy.epoch, copy.state)
            batch.pending += 1
            duration, ok = self.cluster.start_outcome(self, cid)
            self.cluster.ledger.copy_created(self, copy)
            self.later(duration, self._init_ended, copy, ok)
        if batch.pending:
            self.later(timeout, self._batch_timeout, batch, timeout)
        else:
            batch.settled = True
            done(batch.results)

    def _init_ended(self, copy: Copy, ok: bool) -> None:
        batch = copy.batch
        if self.children.get(copy.cid) is not copy or batch is None:
            return  # stopped, or timed out
        copy.batch = None
        if ok and copy.why == "hot":  # ready: it runs once the old copy's state comes
            copy.held = True
            self._settle(batch, copy.cid, copy.pid)
            if copy.go and self.children.get(copy.cid) is copy:
                self._activate(copy)
        elif ok:
            copy.state = "running"
            self.local[copy.cid] = LocalChild(copy.epoch, copy.state)
            self.registry.put(Entry.of(copy.spec, copy.pid, copy.metadata, copy.epoch))
            self.local_changed()
            self._settle(batch, copy.cid, copy.pid)
        else:
            del self.children[copy.cid]  # never registered: no removal to report
            del self.local[copy.cid]
            self.cluster.ledger.copy_removed(self, copy, "failed")
            self._settle(batch, copy.cid, StartFailed(copy.cid, "init raised (seeded)"))

    def _settle(self, batch: _Batch, cid: str, outcome: Outcome) -> None:
        batch.results[cid] = outcome
        batch.pending -= 1
        if batch.pending == 0 and not batch.settled:
            batch.settled = True
            batch.done(batch.results)

    def _batch_timeout(self, batch: _Batch, timeout: float) -> None:
        if batch.settled:
            return
        late = [c for c in self.children.values() if c.batch is batch]
        for copy in late:
            copy.batch = None
            batch.results[copy.cid] = Timeout(f"{copy.cid}: init did not finish within {timeout}s")
            del self.children[copy.cid]  # stopping a starting child cancels it
            del self.local[copy.cid]
            self.cluster.ledger.copy_removed(self, copy, "timeout")
        batch.settled = True
        batch.done(batch.results)  # a child stopped while starting has no result (see below)

    def runtime_stop(
        self,
        ids: Iterable[str],
        reason: str,
        tags: Mapping[str, str] | None,
        done: Callable[[list[str], dict[str, HubError]], None],
    ) -> None:
        """``LocalRuntime.stop``: each child stops after a short random time; a child still
        starting is cancelled at once (its start reports ``NotFound``, as in
        ``Supervisor._on_exit``)."""
        ids = list(ids)
        errors: dict[str, HubError] = {c: NotFound(c) for c in ids if c not in self.children}
        present = [self.children[c] for c in ids if c in self.children]
        if tags:
            self._tags.update((c.cid, tags[c.cid]) for c in present if c.cid in tags)
        stopped: list[str] = []
        left = [len(present)]

        def one_done(copy: Copy) -> None:
            self._tags.pop(copy.cid, None)
            stopped.append(copy.cid)
            left[0] -= 1
            if left[0] == 0:
                done(stopped, errors)

        if not present:
            done(stopped, errors)
            return
        lo, hi = self.cfg.stop_time
        for copy in present:
            if copy.state == "starting":
                self._cancel_starting(copy, reason)
                one_done(copy)
            else:
                copy.waiters.append(partial(one_done, copy))
                if copy.stop_at is None:  # else a stop is in flight: wait for it
                    copy.stop_at = self.sched.now + lo + (hi - lo) * self.cluster.rng.random()
                    self.sched.at(copy.stop_at, self.dispatch, self._stop_ended, (copy, reason))

    def runtime_cancel_start(self, cid: str) -> bool:
        """``LocalRuntime.cancel_start``: a child still starting is stopped at once; its start
        reports ``NotFound``."""
        copy = self.children.get(cid)
        if copy is None or copy.state != "starting" or copy.batch is None:
            return False
        self._cancel_starting(copy, "cancelled")
        return True

    def _cancel_starting(self, copy: Copy, reason: str) -> None:
        batch, copy.batch = copy.batch, None
        self._remove(copy, "stopped", reason)
        if batch is not None:
            self._settle(batch, copy.cid, NotFound(copy.cid))

    def _stop_ended(self, copy: Copy, reason: str) -> None:
        if self.children.get(copy.cid) is copy:
            self._remove(copy, "stopped", reason)
        waiters, copy.waiters = copy.waiters, []
        for waiter in waiters:
            waiter()

    def _remove(self, copy: Copy, kind: str, reason: Any) -> None:
        """``Supervisor._remove`` and ``LocalRuntime.child_removed``."""
        del self.children[copy.cid]
        del self.local[copy.cid]
        self.cluster.ledger.copy_removed(self, copy, kind)
        if copy.state == "running":  # registered
            self.registry.delete(copy.cid, self._tags.get(copy.cid, kind))
            self.local_removed(copy.cid, kind, reason)

    def end_by_itself(self, cid: str, buried: bool) -> bool:
        """The child exits on its own (a transient child's normal exit), or its local
        supervisor buries it after a crash loop."""
        copy = self.children.get(cid)
        if copy is None or copy.state != "running" or copy.stop_at is not None:
            return False
        if buried:
            self._remove(copy, "buried", _BuriedReason(4, "crash loop (seeded)"))
        else:
            self._remove(copy, "stopped", "normal")
        return True

    # -- observer of the local runtime (``local_changed``, ``local_removed``) ------------------

    def local_changed(self) -> None:
        self.dirty_registry()
        self._registry_changed()

    def local_removed(self, cid: str, kind: str, reason: Any) -> None:
        self.parked.pop(cid, None)
        self.move_failures.pop(cid, None)
        self.dirty_registry()
        self._registry_changed()
        if self.closing or cid in self.expected:
            return
        record = self.desired.live(cid)
        if record is None:
            return
        now = self.sched.now
        if kind == "buried":
            info = f"{reason.attempts}:{reason.error!r}"
            self.write(record.successor(self.origin, BURIED, info, now), "ended")
        else:
            self.write(record.successor(self.origin, STOPPED, f"{kind}: {reason!r}", now), "ended")

    # -- planning (``_planning``, ``plan_now``, ``_execute``) ----------------------------------

    def wake(self) -> None:
        if not self._plan_queued:
            self._plan_queued = True
            self.later(0.0, self._plan_event)

    def _plan_event(self) -> None:
        self._plan_queued = False
        wake_at = self.plan_now()
        if wake_at != self._timer_at:  # else the pending timer ends the wait as well
            self._timer += 1
            self._timer_at = wake_at
            if wake_at is not None:
                self.sched.at(wake_at, self.dispatch, self._timer_event, (self._timer,))

    def _timer_event(self, token: int) -> None:
        """The planning loop's wait timed out (no wake came before ``wake_at``)."""
        if token == self._timer:
            self._timer_at = None
            if not self._plan_queued:
                self._plan_event()

    def plan_now(self) -> float | None:
        now = self.sched.now
        if self.full:
            self.full = False
            due = {*self.desired.ids(), *self.children}
            self.dirty.clear()
        else:
            due, self.dirty = self.dirty, set()
            due.update(strays(self.name, sorted(self.recheck - due), self.owners))
        self.recheck.clear()
        deferred = self.deferred
        while deferred and deferred[0][0] <= now:  # decisions that were put off until now
            due.add(heapq.heappop(deferred)[1])
        candidates = sorted(due)  # a set in the shell: sorted for determinism
        if now >= self._expire_at:  # deadlines of operations in flight: twice a second
            self._expire_at = now + 0.5
            for table in (self.busy, self.in_transit, self.arrived, self.parked):
                for cid in [c for c, t in table.items() if t <= now]:
                    del table[cid]
                    self.dirty.add(cid)
            self.waited.intersection_update(self.busy)
        if not candidates:  # the planner would return an empty plan
            return deferred[0][0] if deferred else None
        if self.busy:
            self.waited.update(cid for cid in candidates if cid in self.busy)
        plan = self.planner.plan(
            self.view(),
            self.owners,
            self.desired,
            self,
            self.local,  # ``_LocalView``: the same ``LocalChild`` per child, kept current
            candidates,
            busy={**self.busy, **self.parked} if self.parked else self.busy,
            in_transit=self.in_transit,
            arrived=self.arrived,
            failures=self.failures,
            now=now,
        )
        self.orphans = set(plan.orphans) | (self.orphans - set(candidates))
        for item in plan.deferred:
            heapq.heappush(deferred, item)
        self.cluster.ledger.planned(self, plan, candidates)
        self._execute(plan, now)
        if deferred:
            return deferred[0][0] if plan.wake_at is None else min(deferred[0][0], plan.wake_at)
        return plan.wake_at

    def _execute(self, plan: Plan, now: float) -> None:
        starts: list[Start] = []
        stops: dict[str, list[str]] = {}
        moves: dict[str, list[str]] = {}
        for action in plan.actions:
            if isinstance(action, Start):
                starts.append(action)
            elif isinstance(action, Stop):
                stops.setdefault(action.reason, []).append(action.child_id)
            elif isinstance(action, Move):
                moves.setdefault(action.target, []).append(action.child_id)
            elif isinstance(action, Conflict):
                self.cluster.ledger.conflict(self, action)
            elif isinstance(action, Bury):
                self._bury(action)
        cfg = self.cfg
        if starts:
            for start in starts:
                self._occupy(start.child_id, now + cfg.start_timeout + 1.0)
            self.later(0.0, self._start_planned, starts)
        for reason, ids in stops.items():
            for cid in ids:
                self._occupy(cid, now + 60.0)
                self.expected.add(cid)
            self.later(0.0, self._stop_planned, ids, reason)
        if moves:
            for ids in moves.values():
                for cid in ids:
                    self._occupy(cid, now + 60.0)
            self.later(0.0, self._migrate, moves)

    def _occupy(self, cid: str, until: float) -> None:
        self.busy[cid] = until
        self.parked.pop(cid, None)  # its past deadline would hide ``busy`` from the planner

    def _done(self, ids: Iterable[str], settled: Container[str] = ()) -> None:
        """``_done``: a ``settled`` start is planned again only if it was passed over."""
        for cid in ids:
            self.busy.pop(cid, None)
            self.expected.discard(cid)
            if cid not in settled or cid in self.waited:
                self.dirty.add(cid)
            self.waited.discard(cid)
        self.wake()

    def _start_planned(self, starts: list[Start]) -> None:
        def done(results: dict[str, Outcome]) -> None:
            self.starting.difference_update(a.child_id for a in starts)
            ok = {cid for cid, outcome in results.items() if isinstance(outcome, Pid)}
            self._done((a.child_id for a in starts), ok)
            for action in starts:
                outcome = results.get(action.child_id)
                if isinstance(outcome, Pid | AlreadyStarted):
                    self.failures.pop(action.child_id, None)
                elif outcome is not None and not isinstance(outcome, NotFound):
                    self._start_failed(action.record, outcome)

        ended = {a.child_id for a in starts if not self._live_at(a.child_id, a.record.epoch)}
        if ended:  # changed since the plan (a tombstone meanwhile)
            self._done(ended)
            starts = [a for a in starts if a.child_id not in ended]
        self.starting.update(a.child_id for a in starts)
        self.runtime_start([a.record for a in starts], self.cfg.start_timeout, done, "planned")

    def _start_failed(self, record: Record, error: HubError) -> None:
        """Consecutive failed starts count (reset by a success)."""
        cid = record.spec.id
        now = self.sched.now
        previous = self.failures.get(cid)
        attempts = previous.attempts + 1 if previous is not None else 1
        delay = self.cfg.backoff.delay(attempts, 0.5)
        self.failures[cid] = Failures(attempts, now + delay, str(error))
        self.dirty.add(cid)
        self.wake()

    def _bury(self, action: Bury) -> None:
        cid = action.child_id
        self.failures.pop(cid, None)
        info = f"{action.attempts}:{action.error}"
        self.write(action.record.successor(self.origin, BURIED, info, self.sched.now), "bury")

    def _stop_planned(self, ids: list[str], reason: str) -> None:
        self.runtime_stop(ids, reason, None, lambda _s, _e: self._done(ids))

    def _migrate(self, moves: Mapping[str, list[str]]) -> None:
        for target, ids in moves.items():
            for i in range(0, len(ids), MIGRATION_BATCH):
                self._migrate_batch(target, ids[i : i + MIGRATION_BATCH])

    def _migrate_batch(self, target: str, ids: list[str], cold: bool = False) -> None:
        """ColdSwap: stop here (removal reason ``moved:<target>``), publish the removals (the
        target sees them before the migrate request), then start there."""
        if self.cfg.hot and not cold and self.cold_next.intersection(ids):
            colder = [cid for cid in ids if cid in self.cold_next]
            self.cold_next.difference_update(colder)
            ids = [cid for cid in ids if cid not in self.cold_next and cid not in colder]
            self._migrate_batch(target, colder, cold=True)
            if not ids:
                return
        present = [cid for cid in ids if cid in self.children]
        records = []
        for cid in present:
            copy = self.children[cid]
            record = self.record_of(copy.spec, copy.metadata, copy.epoch)
            if record.status == LIVE:  # else stopped here by the next plan, not moved
                records.append(record)
        if not records:
            self._done(ids)
            return
        if self.cfg.hot and not cold:
            self._migrate_hot(target, ids, records)
            return
        self.expected.update(present)
        tags = {cid: f"moved:{target}" for cid in present}
        self.cluster.ledger.moving(self, target, present)

        def moved(results: list[tuple[str, Outcome]]) -> None:
            self.cluster.ledger.moved(self, target, results)
            self._handed(target, results)
            self._done(ids)

        def stopped(_stopped: list[str], _errors: dict[str, HubError]) -> None:
            self.publish()  # ``publish_now``
            self.start_remote(target, records, self.cfg.start_timeout, "migrate", 0, moved)

        self.runtime_stop(present, "migrate", tags, stopped)

    def _handed(self, target: str, results: Iterable[tuple[str, Outcome]]) -> None:
        """``_moved``: a child that moved is in transit until the target's entry shows."""
        until = self.sched.now + MOVE_WINDOW
        for cid, outcome in results:
            if isinstance(outcome, Pid) and all(n != target for n, _ in self.running_on(cid)):
                self.in_transit[cid] = until

    def _migrate_hot(self, target: str, ids: list[str], records: list[Record]) -> None:
        """HotSwap (``_move_hot``): the target starts held copies and answers when they are
        ready (waited for at most ``retention``: past it, the move goes ahead without the
        state); the old copies stop, their removal is published, then the state goes
        (``handover``). A copy the target refused keeps running here and is retried after a
        backoff; one whose handover failed restarts here with its state."""
        timeout = self.cfg.start_timeout
        by_id = {r.spec.id: r for r in records}
        proceeded = [False]
        retry: set[str] = set()

        def finish() -> None:
            self._done(ids)
            for cid in by_id:
                if cid in retry:
                    self._park(by_id[cid])
                else:
                    self.move_failures.pop(cid, None)
            self.wake()

        def go(results: dict[str, Outcome] | None) -> None:
            if proceeded[0]:
                return
            proceeded[0] = True
            late = results is None
            moving = []
            for cid in by_id:
                outcome = None if results is None else results.get(cid)
                if late or isinstance(outcome, Pid):
                    if cid in self.children:
                        moving.append(cid)
                    continue
                failure = outcome or HubError("no answer")
                self.cluster.ledger.moved(self, target, [(cid, failure)])
                retry.add(cid)
            if not moving:
                finish()
                return
            self.expected.update(moving)
            tags = {cid: f"moved:{target}" for cid in moving}
            self.cluster.ledger.moving(self, target, moving)

            def handed(error: HubError | None, value: Any) -> None:
                outcomes = [(c, error) for c in moving] if error is not None else list(value)
                self.cluster.ledger.moved(self, target, outcomes)
                self._handed(target, outcomes)
                restart = []
                for cid, outcome in outcomes:
                    if isinstance(outcome, Pid) or late:
                        continue
                    if self._live_at(cid, by_id[cid].epoch):
                        restart.append(by_id[cid])  # ``_restart_here``: with its state
                if restart:
                    self.runtime_start(restart, timeout, lambda _r: None, "migrate")
                finish()

            def stopped(_stopped: list[str], _errors: dict[str, HubError]) -> None:
                self.publish()  # ``publish_now``: the removals go before the state
                payload = [(cid, not late) for cid in moving]
                self.request(target, "handover", payload, timeout + 1.0, handed)

            self.runtime_stop(moving, "migrate", tags, stopped)

        def replied(error: HubError | None, value: Any) -> None:
            go({cid: error for cid in by_id} if error is not None else dict(value))

        self.later(self.cfg.retention, go, None)
        payload = (records, timeout, 0, self.leaving, True)
        self.request(target, "migrate", payload, timeout + 1.0, replied)

    def _park(self, record: Record) -> None:
        """``_park``: a refused hot move is tried again after a backoff, and past the child's
        ``max_restarts`` attempts only on the next membership change."""
        cid = record.spec.id
        if not self._live_at(cid, record.epoch):  # it ended meanwhile: the next plan acts
            self.move_failures.pop(cid, None)
            return
        attempts = self.move_failures.get(cid, 0) + 1
        self.move_failures[cid] = attempts
        if attempts > record.spec.max_restarts and self.leaving:
            self.cold_next.add(cid)  # it must leave: the next attempt moves it cold
        elif attempts > record.spec.max_restarts:
            self.parked[cid] = float("inf")
            return
        due = self.sched.now + self.cfg.backoff.delay(attempts, 0.5)
        self.parked[cid] = due
        heapq.heappush(self.deferred, (due, cid))

    def _serve_handover(self, source: str, payload: Any, reply: Reply) -> None:
        out: list[tuple[str, Outcome]] = []
        for cid, _has_state in payload:
            incoming = self.incoming.get(cid)
            copy = self.children.get(cid)
            if incoming is None or incoming[0] != source or copy is None or copy.why != "hot":
                out.append((cid, NotFound(cid)))
                continue
            del self.incoming[cid]
            if copy.held:
                self._activate(copy)
            else:  # still in its init (the source did not wait): it runs once that ends
                copy.go = True
            out.append((cid, copy.pid))
        reply(None, out)

    def _activate(self, copy: Copy) -> None:
        """A held copy runs: it enters the registry (``_serve_handover``, ``_abandon``)."""
        copy.held = False
        copy.state = "running"
        cid = copy.cid
        self.local[cid] = LocalChild(copy.epoch, copy.state)
        self.registry.put(Entry.of(copy.spec, copy.pid, copy.metadata, copy.epoch))
        self.cluster.ledger.activated(self, copy)
        self.local_changed()
        self.arrived[cid] = self.sched.now + MOVE_WINDOW
        self._done([cid])

    def _expect(self, cid: str, source: str) -> None:
        token = next(self._tokens)
        self.incoming[cid] = (source, token)
        self.later(self._hold_limit(), self._abandon, cid, token)

    def _hold_limit(self) -> float:
        return self.cfg.retention + self.cfg.stop_time[1] + self.cfg.start_timeout + 2.0

    def _abandon(self, cid: str, token: int) -> None:
        """``_abandon``: a held copy waited in vain: it stops if the old copy still runs on a
        live source, the child ended meanwhile or another node owns it now, else it runs
        (from its spec)."""
        incoming = self.incoming.get(cid)
        if incoming is None or incoming[1] != token:
            return
        del self.incoming[cid]
        copy = self.children.get(cid)
        if copy is None or copy.why != "hot" or copy.state == "running":
            self._done([cid])
            return
        source = incoming[0]
        ended = not self._live_at(cid, copy.epoch)  # stopped or buried meanwhile
        stayed = any(n == source for n, _ in self.running_on(cid))
        if ended or stayed or owned_elsewhere(self.name, self.owners(cid)):
            self.runtime_stop([cid], "withdraw", None, lambda _s, _e: self._done([cid]))
        elif copy.held:
            self._activate(copy)
        else:  # still in its init: it runs once that ends (``Arrival.complete`` before it)
            copy.go = True

    # -- start and stop requests ---------------------------------------------------------------

    def start_children(
        self,
        specs: list[ChildSpec],
        timeout: float,
        done: Callable[[list[tuple[str, list[tuple[str, Pid]]]] | None, Any], None],
        *,
        wait_until: float | None = None,
    ) -> None:
        """A user's start request here: one batch per owner. ``done(started, errors)``, or
        ``done(None, error)`` when the request raised."""
        if self.unsynced and timeout > 0:
            # route nothing before every peer knows this node (until it synced), for half of
            # ``timeout`` at most (the shell waits on a change of ``unsynced``, this polls)
            wait_until = self.sched.now + timeout / 2 if wait_until is None else wait_until
            if self.sched.now < wait_until:
                step = partial(self.start_children, wait_until=wait_until)
                self.later(0.01, step, specs, timeout - 0.01, done)
                return
        errors: list[tuple[str, HubError]] = []
        groups: dict[str, list[Record]] = {}
        for spec in specs:
            record = self.new_record(spec, _EMPTY)
            if isinstance(record, HubError):
                errors.append((spec.id, record))
                continue
            for owner in self.owners(spec.id) or [self.name]:
                groups.setdefault(owner, []).append(record)
        outcomes: list[tuple[str, Outcome]] = []
        left = [len(groups)]
        raised: list[HubError] = []
        sent: list[str] = []

        def finish() -> None:
            where: dict[str, list[tuple[str, Pid]]] = {}
            failed: dict[str, HubError] = {}
            for cid, outcome in outcomes:
                if isinstance(outcome, Pid):
                    where.setdefault(cid, []).append((outcome.node, outcome))
                else:
                    failed.setdefault(cid, outcome)
            records = {r.spec.id: r for rs in groups.values() for r in rs}
            for cid in where:  # ``_started``: in transit until its entry shows, not planned
                self._learn([records[cid]], plan=False)
            for cid, error in failed.items():
                if cid not in where and not isinstance(error, AlreadyStarted):
                    # no owner started it (or no answer): "not started", everywhere
                    why = f"start failed: {error}"
                    tombstone = records[cid].successor(self.origin, STOPPED, why, self.sched.now)
                    self.write(tombstone, "start-failed")
            self._sent_done(sent)
            started = [(s.id, sorted(where[s.id])) for s in specs if s.id in where]
            errors.extend(
                (s.id, failed[s.id]) for s in specs if s.id in failed and s.id not in where
            )
            done(started, errors)

        def one(error: HubError | None, results: Any) -> None:
            if raised:
                return
            if error is not None:
                raised.append(error)
                self._sent_done(sent)
                done(None, error)
                return
            outcomes.extend(results)
            left[0] -= 1
            if left[0] == 0:
                finish()

        if not groups:
            finish()
            return
        here = {r.spec.id for r in groups.get(self.name, ())}
        for target, records in groups.items():
            if target == self.name:
                self.serve_start(records, timeout, 0, "start", one)
            else:
                self._learn_sent([r for r in records if r.spec.id not in here], sent)
                self.start_remote(target, records, timeout, "start", 0, lambda r: one(None, r))

    def _learn_sent(self, records: list[Record], sent: list[str]) -> None:
        """``start_children``: a record sent to its owner is known here at once, and in transit
        until the request ends (its failure writes the tombstone) and its copy shows."""
        for record in self._learn(records, apart=False, plan=False):
            self.in_transit[record.spec.id] = float("inf")
            sent.append(record.spec.id)

    def _sent_done(self, sent: list[str]) -> None:
        """The request ended: the copies that started are in transit until they show, for
        ``start_timeout`` at most."""
        until = self.sched.now + self.cfg.start_timeout
        for cid in sent:
            if self.in_transit.get(cid) == float("inf"):
                self.in_transit[cid] = until

    def serve_start(
        self,
        records: list[Record],
        timeout: float,
        hops: int,
        kind: str,
        done: Reply,
        *,
        hot: bool = False,
        source: str = "",
    ) -> None:
        """Start records here (``kind="migrate"``: accepted whoever owns it) and forward those
        this node does not own, at most ``MAX_HOPS`` times, concurrently."""
        self.cluster.ledger.start_request(self, hops, kind)
        forward: dict[str, list[Record]] = {}
        mine: list[Record] = []
        for record in records:
            if kind == "migrate":
                target = self.name
            else:
                target = start_target(self.name, self.owners(record.spec.id), hops, MAX_HOPS)
            if target == self.name:
                mine.append(record)
            else:
                forward.setdefault(target, []).append(record)
        groups = list(forward.items())
        parts: list[list[tuple[str, Outcome]]] = [[] for _ in range(len(groups) + 1)]
        left = [len(parts)]
        raised: list[HubError] = []

        def part_done(i: int, error: HubError | None, out: Any) -> None:
            if raised:
                return
            if error is not None:  # ``gather`` raises the first exception at once
                raised.append(error)
                done(error, None)
                return
            parts[i] = out
            left[0] -= 1
            if left[0] == 0:
                done(None, [outcome for part in parts for outcome in part])

        self._start_here(mine, timeout, kind, partial(part_done, 0), hot=hot, source=source)
        for i, (node, group) in enumerate(groups, 1):
            self.start_remote(node, group, timeout, kind, hops + 1, partial(part_done, i, None))

    def _refusal(self, record: Record, kind: str) -> Outcome | None:
        """Why ``record`` is not started here now: it already runs here, the desired state has
        moved past it, or (a move) this node does not own it and an owner runs it."""
        cid = record.spec.id
        if record.status != LIVE:  # a move of a copy whose tombstone its source had learnt
            return NotFound(cid)
        if kind == "migrate":
            owners = self.owners(cid)
            if self.name not in owners:
                holders = [n for n, _ in self.running_on(cid) if n in owners]
                if holders:
                    return AlreadyStarted(cid, holders[0])
        copy = self.children.get(cid)
        if copy is not None:
            if copy.epoch == record.epoch:
                return copy.pid  # already here: the request is a repeat
            return AlreadyStarted(cid, self.name)
        known = self.desired.get(cid)
        if known is not None and known.key() > record.key():
            if known.status != LIVE:
                return NotFound(cid)  # stopped meanwhile
            return AlreadyStarted(cid, ", ".join(n for n, _ in self.running_on(cid)) or "elsewhere")
        return None

    def _start_here(
        self,
        records: list[Record],
        timeout: float,
        kind: str,
        done: Reply,
        *,
        hot: bool = False,
        source: str = "",
    ) -> None:
        out: list[tuple[str, Outcome]] = []
        mine: list[Record] = []
        for record in records:
            refused = self._refusal(record, kind)
            if refused is None:
                mine.append(record)
            else:
                out.append((record.spec.id, refused))
        if not mine:
            done(None, out)
            return
        # not published (they travel with the registry entries), planned once started
        self._learn(mine, apart=False, plan=False)
        deadline = self.sched.now + timeout + 1.0
        for record in mine:
            self.busy[record.spec.id] = deadline

        def started(results: dict[str, Outcome]) -> None:
            self._done(r.spec.id for r in mine)
            for record in mine:
                cid = record.spec.id
                # a child stopped while it started is settled as NotFound (Supervisor)
                outcome = results.get(cid) or NotFound(cid)
                out.append((cid, outcome))
                if hot:  # ready, not running: busy until its state comes (or it gives up)
                    copy = self.children.get(cid)
                    if isinstance(outcome, Pid) and copy is not None and copy.held:
                        self.busy[cid] = self.sched.now + self._hold_limit() + 1.0
                    elif not isinstance(outcome, Pid):
                        self.incoming.pop(cid, None)
                    continue
                if isinstance(outcome, Pid):
                    self.failures.pop(cid, None)
                    if kind == "migrate":  # a stale view here must not make it lose a conflict
                        self.arrived[cid] = self.sched.now + MOVE_WINDOW
                elif kind == "migrate":
                    self._start_failed(record, outcome)  # the planner retries, then buries
                elif self.cfg.rf == 1 and not isinstance(outcome, AlreadyStarted):
                    why = f"start failed: {outcome}"
                    tombstone = record.successor(self.origin, STOPPED, why, self.sched.now)
                    self.write(tombstone, "start-failed")
            done(None, out)

        why: StartKind = "hot" if hot else "migrate" if kind == "migrate" else "start"
        if hot:
            for record in mine:
                self._expect(record.spec.id, source)
        self.runtime_start(mine, timeout, started, why)

    def start_remote(
        self,
        node: str,
        records: list[Record],
        timeout: float,
        kind: str,
        hops: int,
        done: Callable[[list[tuple[str, Outcome]]], None],
    ) -> None:
        def replied(error: HubError | None, value: Any) -> None:
            if error is not None:
                failure = error if isinstance(error, Timeout) else HubError(f"{node}: {error}")
                done([(r.spec.id, failure) for r in records])
                return
            done(list(value))

        payload = (records, timeout, hops, self.leaving)  # ``draining``: we own nothing now
        self.request(node, kind, payload, timeout + 1.0, replied)

    def stop_children(
        self, ids: list[str], reason: str, done: Callable[[dict[str, list[str]]], None]
    ) -> None:
        """A user's stop request here: tombstones, then a stop request to every peer (each
        stops its copy if it has one) and a local stop; done when all answered."""
        tombstones: dict[str, Record] = {}
        known: list[str] = []
        now = self.sched.now
        for cid in ids:
            record = self.desired.live(cid)
            if record is not None:
                tombstones[cid] = record.successor(self.origin, STOPPED, reason, now)
            if record is not None or cid in self.children or self.running_on(cid):
                known.append(cid)
        for tombstone in tombstones.values():
            self.cluster.ledger.written(self, tombstone, "stop")
        self._learn(tombstones.values(), publish=True)
        failed: dict[str, HubError] = {}
        stopped: dict[str, list[str]] = {}
        wire = list(tombstones.values())
        peers = list(self.members)
        left = [len(peers) + 1]

        def finish() -> None:
            for cid in tombstones:
                if cid not in stopped and cid not in failed:
                    stopped[cid] = []  # it ran nowhere: its stop is recorded
            done({cid: sorted(stopped[cid]) for cid in ids if cid in stopped})

        def one() -> None:
            left[0] -= 1
            if left[0] == 0:
                finish()

        if not known:
            finish()
            return
        local = [cid for cid in known if cid in self.children]
        self.expected.update(local)

        def here(done_here: list[str], errors: dict[str, HubError]) -> None:
            self.expected.difference_update(local)
            failed.update(errors)
            for cid in done_here:
                stopped.setdefault(cid, []).append(self.name)
            one()

        self.runtime_stop(local, reason, None, here)
        for peer in peers:

            def replied(error: HubError | None, value: Any, target: str = peer) -> None:
                if error is not None:
                    for cid in known:
                        if any(n == target for n, _ in self.running_on(cid)):
                            failed[cid] = HubError(f"{target}: {error}")
                else:
                    for cid, err in value:
                        if err is None:
                            stopped.setdefault(cid, []).append(target)
                        elif not isinstance(err, NotFound):
                            failed[cid] = err
                one()

            self.request(peer, "stop", (known, reason, wire), 30.0, replied)

    def _serve_stop(self, payload: Any, reply: Reply) -> None:
        """Learn the tombstones, stop the local copies; ``[(cid, None | error)]``."""
        ids, reason, records = payload
        self._learn(records)
        local = [cid for cid in ids if cid in self.children]
        self.expected.update(local)

        def stopped(done_here: list[str], errors: dict[str, HubError]) -> None:
            self.expected.difference_update(local)
            reply(None, [*((cid, None) for cid in done_here), *errors.items()])

        self.runtime_stop(local, reason, None, stopped)

    # -- leaving (``hand_off``, ``flush``; ``Hub.drain``, ``Hub.stop``) ------------------------

    def hand_off(self, *, final: bool) -> None:
        self.leaving = True
        self._version += 1
        self.cluster.announce_draining(self)
        if self.members:
            self._topology_changed(())
            self.handing_off = (self.sched.now + LEAVE_TIMEOUT, final)
            self.later(0.5, self._hand_off_tick)
        else:
            self.handing_off = (self.sched.now, final)
            self._hand_off_check()

    def _hand_off_tick(self) -> None:
        if self.handing_off is None:
            return
        if not self.busy:
            self.wake()
        self._hand_off_check()
        if self.handing_off is not None:
            self.later(0.5, self._hand_off_tick)

    def _registry_changed(self) -> None:
        """``_registry_changed.set()``: the hand-off loop looks again, a loop iteration later
        (after the change's handler has run: a local burial is written before the flush)."""
        if self.handing_off is not None:
            self.later(0.0, self._hand_off_check)

    def _hand_off_check(self) -> None:
        if self.handing_off is None:
            return
        deadline, final = self.handing_off
        if self.children and self.sched.now < deadline:
            return
        self.handing_off = None
        if final:
            self._flush()
        # ``Hub.drain`` with members: a child still here is reported and keeps moving (alone,
        # the children stop; a simulated drain always has members)

    def _flush(self) -> None:
        self.closing = True
        local = self.registry.local
        entries = [self._entry_wire(e) for e in local.entries.values()]
        snapshot = (local.node, local.boot_id, local.version, entries)
        records = list(self.outgoing.values())
        self.outgoing.clear()
        peers = list(self.members)
        left = [len(peers)]

        def one(_error: HubError | None, _value: Any) -> None:
            left[0] -= 1
            if left[0] == 0:
                self.cluster.node_left(self)

        if not peers:
            self.cluster.node_left(self)
            return
        for peer in peers:
            self.request(peer, "final", (records, snapshot), self.cfg.flush_timeout, one)

    # -- registry sync (``_publisher``, ``publish``, snapshots, deltas, anti-entropy) ----------

    def dirty_registry(self) -> None:
        if not self._publish_queued:
            self._publish_queued = True
            self.later(self.cfg.batch_window, self._publish_event)

    def _publish_event(self) -> None:
        self._publish_queued = False
        self.publish()
        if self.behind and not self._behind_tick:
            self._behind_tick = True
            self.later(1.0, self._behind_event)  # the publisher's wait is bounded while behind

    def _behind_event(self) -> None:
        self._behind_tick = False
        if self.behind:
            self.dirty_registry()

    def publish(self) -> None:
        local = self.registry.local
        delta = local.changes_since(self.published)
        carried = {  # records that travel with their registry entry need no frame of their own
            cid: op.epoch
            for cid, op in (delta.ops if delta is not None else ())
            if not isinstance(op, str)
        }
        records = [r for cid, r in self.outgoing.items() if carried.get(cid) != r.epoch]
        self.outgoing.clear()
        peers = list(self.members)
        if delta is None:
            self.behind.update(peers)
        behind = [p for p in peers if p in self.behind]
        current = [p for p in peers if p not in self.behind]
        frames: list[tuple[str, Any]] = []
        if records:
            frames.append(("records", records))
        if delta is not None and delta.ops:
            ops = tuple(
                (
                    cid,
                    op if isinstance(op, str) else self._entry_wire(op),
                )
                for cid, op in delta.ops
            )
            frames.append(("delta", (local.node, local.boot_id, delta.base, delta.version, ops)))
        snapshot = [self._snapshot_frame()] if behind else []
        self.published = local.version
        for peer in current:
            for kind, payload in frames:
                if not self._send(peer, kind, payload):
                    self.behind.add(peer)
                    break
        for peer in behind:
            ok = True
            for kind, payload in [f for f in frames if f[0] == "records"] + snapshot:
                if not self._send(peer, kind, payload):
                    self.behind.add(peer)
                    ok = False
                    break
            if ok:
                self.behind.discard(peer)

    def _snapshot_frame(self) -> tuple[str, Any]:
        local = self.registry.local
        entries = [self._entry_wire(e) for e in local.entries.values()]
        return ("snapshot", (local.node, local.boot_id, local.version, entries))

    def _send_snapshot(self, peer: str) -> None:
        self.behind.discard(peer)
        kind, payload = self._snapshot_frame()
        if not self._send(peer, kind, payload):
            self.behind.add(peer)

    def _entry_wire(self, entry: Entry) -> tuple[Pid, Record, int]:
        """``entry_to_wire``: the pid, the record as this node knows it (maybe a newer
        tombstone), and the copy's own epoch."""
        return (entry.pid, self.record_of(entry.spec, entry.metadata, entry.epoch), entry.epoch)

    def _decode(self, items: Iterable[tuple[Pid, Record, int]]) -> list[tuple[Record, Entry]]:
        """``entry_from_wire`` for each item (``_entries_from_wire``)."""
        decoded = []
        for pid, record, epoch in items:
            held = self.desired.get(record.spec.id)  # ``entry_from_wire`` shares a held record
            if held is not None and held.key() == record.key():
                record = held
            decoded.append((record, Entry.of(record.spec, pid, record.metadata, epoch)))
        return decoded

    def _entries(self, items: Iterable[tuple[Pid, Record, int]]) -> list[Entry]:
        """``_with_records``: the entries of what is applied now, their records learnt."""
        decoded = self._decode(items)
        self._learn_with_entries(record for record, _ in decoded)
        return [entry for _, entry in decoded]

    def _learn_with_entries(self, records: Iterable[Record]) -> None:
        changed = self._learn(records, apart=False, plan=False)
        self.dirty.update(cid for r in changed if self._concerns(cid := r.spec.id))

    def _concerns(self, cid: str) -> bool:
        """``_concerns``: a peer's entry of a child that does not run here (rf=1, no orphan
        here) is not planned."""
        return self.cfg.rf > 1 or cid in self.orphans or cid in self.children

    def _apply_changes(self, changes: Iterable[Change], *, dropped: bool = False) -> None:
        now = self.sched.now
        for change in changes:
            if change.kind == "removed" or self._concerns(change.child_id):
                self.dirty.add(change.child_id)
            self.parked.pop(change.child_id, None)  # another copy, or one gone: decide again
            if change.kind != "removed":
                self.in_transit.pop(change.child_id, None)
            elif change.reason.startswith("moved:") or (not change.reason and not dropped):
                # a move, or a removal seen in a snapshot (no reasons): it may be moving
                self.in_transit[change.child_id] = now + MOVE_WINDOW
        self._registry_changed()
        self.wake()

    def _on_delta(self, peer: str, payload: Any) -> None:
        node, boot, base, version, ops = payload
        written = self._decode(op for _, op in ops if not isinstance(op, str))
        entries = iter(entry for _, entry in written)
        decoded: list[tuple[str, Entry | str]] = [
            (cid, op if isinstance(op, str) else next(entries)) for cid, op in ops
        ]
        delta = Delta(node, boot, base, version, tuple(decoded))
        fits = self.registry.fits(delta)
        if fits == "gap":
            self._catch_up(peer)
            return
        if fits == "stale":
            return
        self._learn_with_entries(record for record, _ in written)  # ``_with_records``
        self._parts = None  # a new boot's partition replaces the old one
        changes = self.registry.apply(delta)
        if changes:
            self._apply_changes(changes)

    def _on_snapshot(self, payload: Any) -> None:
        node, boot, version, items = payload
        if node == self.name:
            return
        entries = self._entries(items)
        self._parts = None
        self._apply_changes(self.registry.load(Snapshot(node, boot, version, tuple(entries))))
        if self.members.get(node) == boot:
            self._synced(node)

    def _send_ended(self, peer: str) -> None:
        """A joiner gets every record of a child that should not run, at once."""
        ended = [r for r in self.desired if r.status != LIVE]
        if ended:
            self._send(peer, "records", ended)

    def _synced(self, peer: str) -> None:
        """We hold ``peer``'s current partition: decisions that waited for it can be made."""
        if peer in self.unsynced:
            self.unsynced.discard(peer)
            self._version += 1
            self._replan_local()
            if not self.unsynced:  # loaded: tell the peers that hold moves to this node
                for member in list(self.members):
                    self._send_state(member)
            self._check_loaded()

    def _check_loaded(self) -> None:
        """``_check_loaded``: joiners whose last state shows the partitions held here."""
        own = self._versions()
        for name in list(self.loading):
            versions = self.peer_versions.get(name)
            if versions is not None and not catching_up(versions, own):
                self._loaded(name)

    def _catch_up(self, peer: str) -> None:
        if peer in self.catching:
            return
        self.catching.add(peer)
        self.request(peer, "send_snapshot", None, 10.0, lambda _e, _v: self.catching.discard(peer))

    def _announce(self) -> None:
        """``_background``: the anti-entropy round (every ``anti_entropy_interval``)."""
        for peer in list(self.members):
            self._send_state(peer)
        self.later(self.cfg.ae_interval, self._announce)

    def _reconcile(self) -> None:
        self.full = True
        self.wake()
        self.later(self.cfg.reconcile_interval, self._reconcile)

    def _rumours(self, members: Iterable[tuple[str, str]]) -> None:
        """Members a peer's state lists that this node does not know count as unsynced until
        it knows them or no live peer lists them (``_end_unlisted_rumours``), for a detection
        period at most, once per name until it joins or leaves; a boot that left gracefully
        within the detection period is no rumour (one that failed is)."""
        now = self.sched.now
        horizon = self.cfg.detect[1]
        for name, boot in members:
            if name == self.name or name in self.members or name in self.rumoured:
                continue
            if name in self.rumours_over:  # rumoured once already: it may never show here
                continue
            left = self.left.get(name)
            lately = left is not None and now - left[0] <= horizon and left[1] == boot
            if lately and name not in self.failed:
                continue  # it left gracefully lately: the peer has not noticed yet
            self.rumoured[name] = now + horizon  # a joiner, or a failure the peer has not seen
            self._version += 1
            self.later(horizon, self._rumour_over)

    def _end_unlisted_rumours(self) -> None:
        """``_end_unlisted_rumours``: no live peer lists it any more."""
        listed = {name for names in self.peer_members.values() for name, _ in names}
        over = [name for name in self.rumoured if name not in listed]
        for name in over:
            del self.rumoured[name]
            self.rumours_over.add(name)
        if over:
            self._version += 1
            self.dirty.update(self.orphans)
            self.wake()

    def _rumour_over(self) -> None:
        self.wake()
        self.dirty.update(self.orphans)

    def _versions(self) -> list[tuple[str, str, int]]:
        live = {*self.members, self.name}
        return [(n, p.boot_id, p.version) for n, p in self.registry.partitions.items() if n in live]

    def _send_state(self, peer: str) -> None:
        local = self.registry.local
        state = (local.boot_id, local.version, self.desired.digests(), self._versions())
        self._send(peer, "state", state)

    def _answer_state(self, name: str) -> None:
        self.answering.discard(name)
        self._send_state(name)

    def _load_over(self, name: str, boot: str) -> None:
        if name in self.loading and self.members.get(name) == boot:
            self._loaded(name)

    def _loaded(self, name: str) -> None:
        """``_loaded``: moves to ``name`` wait no longer."""
        del self.loading[name]
        self._version += 1
        self._replan_local()

    def _on_state(self, name: str, payload: Any) -> None:
        boot, version, digests, versions = payload
        if self.members.get(name) == boot:
            self.peer_versions[name] = versions
            if name in self.loading:
                self._check_loaded()
            if name not in self.answering and catching_up(versions, self._versions()):
                # ``_answer_state``: a peer whose partitions differ gets this node's state
                # again after SYNC_INTERVAL
                self.answering.add(name)
                self.later(SYNC_INTERVAL, self._answer_state, name)
        part = self.registry.partitions.get(name)
        current = part is not None and part.boot_id == boot and part.version >= version
        if current and self.members.get(name) == boot:
            self._synced(name)
        if not current and name in self.members:
            self._catch_up(name)
        mine = self.desired.digests()
        now = self.sched.now
        # ``self.desired.differing(digests)``, computed in C (it is hot here)
        buckets = () if digests == mine else compress(count(), map(ne, mine, digests))
        before = self.differing.get(name, {})
        differing: dict[int, tuple[int, int, float]] = {}
        for i in buckets:
            seen = before.get(i)
            same = seen is not None and seen[:2] == (digests[i], mine[i])
            differing[i] = seen if same and seen is not None else (digests[i], mine[i], now)
        repeated = [i for i, (_, _, since) in differing.items() if now - since >= STABLE_DIFF]
        for i in repeated:
            differing[i] = (*differing[i][:2], now)  # pushed: wait as long again
        self.differing[name] = differing  # pushed: what has differed the same way a while
        if repeated and not catching_up(versions, self._versions()):
            self._send(name, "records", list(self.desired.bucket_records(repeated)))

    # -- links ---------------------------------------------------------------------------------

    def _send(self, peer: str, kind: str, payload: Any) -> bool:
        """A one-way frame to a member (False: it could not be sent)."""
        boot = self.members.get(peer)
        if boot is None:
            return False
        members: tuple[tuple[str, str], ...] = ()
        if kind == "state":  # this node's members and their boots (``_rumours``)
            members = tuple(self.members.items())
        return self.cluster.net.send(self, peer, boot, Frame(kind, 0, payload, members))

    def request(self, peer: str, kind: str, payload: Any, timeout: float, done: Reply) -> None:
        boot = self.members.get(peer)
        if boot is None:
            self.later(0.0, done, NodeUnreachable(peer, "not a member"), None)
            return
        rid = next(self._rids)
        deadline = self.sched.now + timeout
        self.pending[rid] = _Pending(peer, boot, kind, done, deadline)
        if not self.cluster.net.send(self, peer, boot, Frame(kind, rid, payload)):
            self.later(0.0, self._fail, rid, NodeUnreachable(peer, "connection refused"))
            return
        self._time_out_by(deadline)

    def _time_out_by(self, deadline: float) -> None:
        if self._timeouts_at is None or deadline < self._timeouts_at:
            self._timeouts_at = deadline
            self.sched.at(deadline, self.dispatch, self._time_out, (deadline,))

    def _time_out(self, at: float) -> None:
        """Requests whose timeout passed fail (one timer at a time: most are answered)."""
        if at != self._timeouts_at:
            return  # an earlier timer took over
        self._timeouts_at = None
        now = self.sched.now
        for rid, pending in [(r, p) for r, p in self.pending.items() if p.deadline <= now]:
            self._fail(rid, Timeout(f"{pending.peer} did not answer {pending.kind!r}"))
        if self.pending:
            self._time_out_by(min(p.deadline for p in self.pending.values()))

    def _fail(self, rid: int, error: HubError) -> None:
        pending = self.pending.pop(rid, None)
        if pending is not None:
            pending.done(error, None)

    def link_broken(self, peer: str, boot: str) -> None:
        """The link to ``(peer, boot)`` broke (that incarnation died): its requests fail."""
        for rid, pending in list(self.pending.items()):
            if pending.peer == peer and pending.boot == boot:
                self.later(
                    self.cfg.latency[1], self._fail, rid, NodeUnreachable(peer, "link broke")
                )

    def receive(self, src: str, src_boot: str, frame: Frame) -> None:
        kind = frame.kind
        if kind == "reply":
            pending = self.pending.pop(frame.rid, None)
            if pending is not None:
                error, value = frame.payload
                pending.done(error, value)
            return
        if frame.rid:
            self._serve(src, src_boot, frame)
            return
        member = self.members.get(src) == src_boot
        if not member and kind in ("delta", "records", "snapshot"):
            return  # a stranger (not a member yet, or an old boot): its partition comes later
        if frame.members and member:
            self.peer_members[src] = set(frame.members)
            self._rumours(frame.members)
            self._end_unlisted_rumours()
        if kind == "delta":
            self._on_delta(src, frame.payload)
        elif kind == "records":
            self._learn(frame.payload)
        elif kind == "snapshot":
            self._on_snapshot(frame.payload)
        elif kind == "state":
            self._on_state(src, frame.payload)
        else:
            raise AssertionError(f"unknown frame {kind!r}")

    def _serve(self, src: str, src_boot: str, frame: Frame) -> None:
        rid = frame.rid
        net = self.cluster.net

        def reply(error: HubError | None, value: Any) -> None:
            if self.alive and not self.gone:
                net.send(self, src, src_boot, Frame("reply", rid, (error, value)))

        kind = frame.kind
        if kind in ("start", "migrate"):
            records, timeout, hops, drains, *rest = frame.payload
            if drains and src in self.members and src not in self.draining:
                self.draining.add(src)  # the source said it leaves: it owns nothing now
                self._topology_changed(())
            hot = kind == "migrate" and bool(rest and rest[0])
            self.serve_start(list(records), timeout, hops, kind, reply, hot=hot, source=src)
        elif kind == "handover":
            self._serve_handover(src, frame.payload, reply)
        elif kind == "stop":
            self._serve_stop(frame.payload, reply)
        elif kind == "send_snapshot":
            self._send_snapshot(src)
            reply(None, None)
        elif kind == "final":
            records, (node, boot, version, items) = frame.payload
            self._learn(records)
            entries = self._entries(items)
            self._parts = None
            self._apply_changes(self.registry.load(Snapshot(node, boot, version, tuple(entries))))
            reply(None, None)
        else:
            raise AssertionError(f"unknown request {kind!r}")
