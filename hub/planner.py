"""The redistribution planner. PURE: no I/O, no clock reads, no randomness.

From this node's view of the hub's members, the desired state (:mod:`hub.desired`), where the
registry says children run, what runs here, the operations in flight and the current time, the
planner returns typed actions for the shell (:mod:`hub.coordinator`) to execute. The shell feeds
the results back as new inputs and plans again. The same inputs give the same actions, and a
plan whose actions were applied plans nothing new (idempotence), so planning can run after every
event and on a timer without harm.

Rules, per child that should run (a ``LIVE`` record), with ``owners`` its placement over the
live, non-draining members (primary first, ``replication_factor`` of them) and ``copies`` the
live nodes that run it:

* a local copy on an owner stays;
* a local copy on a non-owner moves to an owner that lacks a copy; if every owner has one it
  is surplus and stops (``CHILD_CONFLICT``: the winner is the primary owner). Several
  non-owner copies share the missing owners in node-name order, the rest stop;
* an owner without a copy starts one when no copy runs anywhere live (failover, after a
  death, a failed move, a lost start) or, under replication, when a replica is missing and no
  non-owner copy is left to move in; it waits while a peer's registry is not yet synced (the
  child may run there), while the child is in transit between two nodes (whoever the move's
  target), and during the restart backoff after a failed start; past the child's restart
  intensity it buries the child instead (a replica that cannot start buries nothing);
* a local copy whose record is stopped, buried, or newer than the copy (the child was
  stopped and started again elsewhere) stops;
* without replication, a child that runs elsewhere and not here needs nothing from this node,
  whoever owns it (an owner waits for a stray copy to move in): its placement is not even
  computed, which keeps planning cheap on a node that holds the registry of many children.

A draining node is live (it answers messages and its copies count) but owns nothing, so its
children move away and nothing is placed on it. While the hub is locked (quorum lost) the
planner stops every local copy and starts and moves nothing (the records stay: the children
restart once quorum is regained, where they belong then). Until the membership has settled
(``View.settle_at``) it neither moves nor stops surplus copies nor adds replicas: only
failover starts are urgent.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple, Protocol

from .desired import LIVE, Record
from .policies import Mode

__all__ = [
    "Action",
    "Bury",
    "Conflict",
    "Failures",
    "LocalChild",
    "Move",
    "Plan",
    "Planner",
    "Start",
    "Stop",
    "View",
    "catching_up",
    "foreign_starts",
    "owned_elsewhere",
    "start_target",
    "strays",
    "synchronized",
]


# -- inputs --------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class View:
    """This node's view of the hub's membership."""

    me: str
    live: frozenset[str]  # the hub's live members, this node included
    draining: frozenset[str] = frozenset()  # live members that own nothing (drain, leave)
    unsynced: frozenset[str] = frozenset()  # live peers whose registry partition is not current
    locked: bool = False  # quorum lost: start and move nothing
    #: membership counts as settled from this time on (the shell sets it a probe interval after
    #: the last topology change): moves, surplus stops and replica starts wait for it, so that
    #: views still converging after a heal or a join do not shuffle children around.
    settle_at: float = 0.0
    #: failover starts wait until then (the shell sets it right after quorum is regained,
    #: while nodes that failed may still be coming back with the children they run)
    starts_after: float = 0.0
    #: live peers that joined lately and are still loading the registry (their anti-entropy
    #: state lacks partitions this node holds): moves to them wait, so that a joiner first
    #: loads, then receives its children, instead of both at once (unless this node drains)
    loading: frozenset[str] = frozenset()


class LocalChild(NamedTuple):
    """A child the local supervisor holds."""

    epoch: int
    state: str  # "starting" | "running" | "restarting" | "stopping"


class Failures(NamedTuple):
    """Failed starts of one child on this node (the shell counts them)."""

    attempts: int  # within the child's ``max_seconds``
    retry_at: float  # not before this time
    error: str


class DesiredView(Protocol):
    def get(self, child_id: str) -> Record | None: ...


class LocalView(Protocol):
    def get(self, child_id: str) -> LocalChild | None: ...


class RunningView(Protocol):
    def running_on(self, child_id: str) -> Sequence[tuple[str, int]]:
        """``(node, epoch)`` of every node whose registry partition lists the child."""
        ...


Placement = Callable[[str], Sequence[str]]


# -- actions -------------------------------------------------------------------------------------


class Start(NamedTuple):
    """Start ``record``'s child here from its spec."""

    child_id: str
    record: Record
    reason: Literal["failover", "replica"]
    mode: Mode = "active"


class Stop(NamedTuple):
    """Stop the local copy."""

    child_id: str
    reason: Literal["stopped", "stale", "conflict", "locked"]


class Move(NamedTuple):
    """Move the local copy to ``target`` (hot: start there first and hand the state over)."""

    child_id: str
    target: str
    hot: bool


class Conflict(NamedTuple):
    """A surplus copy was found: ``loser``'s copy stops in favour of ``winner``'s."""

    child_id: str
    winner: str
    loser: str


class Bury(NamedTuple):
    """Give up on ``record``'s child: it failed to start ``attempts`` times."""

    child_id: str
    record: Record
    attempts: int
    error: str


Action = Start | Stop | Move | Conflict | Bury


@dataclass(slots=True)
class Plan:
    actions: list[Action] = field(default_factory=list)
    #: live children that run on no live node and that this plan did not start: the shell
    #: plans them again on the next change (their owner may be a node not yet detected dead).
    orphans: list[str] = field(default_factory=list)
    #: the earliest time a decision deferred by this plan is due (a backoff, a deadline).
    wake_at: float | None = None
    #: the children whose decision was deferred, with when it is due: the shell plans each
    #: again at that time.
    deferred: list[tuple[float, str]] = field(default_factory=list)

    def _defer(self, child_id: str, at: float) -> None:
        self.deferred.append((at, child_id))
        if self.wake_at is None or at < self.wake_at:
            self.wake_at = at


# -- the planner ---------------------------------------------------------------------------------


@dataclass(slots=True)
class Planner:
    """Settings of the planning rules (from the hub's strategies)."""

    replication_factor: int = 1
    hot_moves: bool = False
    replica_mode: Mode = "active"

    def plan(
        self,
        view: View,
        owners_of: Placement,
        desired: DesiredView,
        running: RunningView,
        local: LocalView | Mapping[str, LocalChild],
        candidates: Iterable[str],
        *,
        busy: Mapping[str, float] | None = None,
        in_transit: Mapping[str, float] | None = None,
        arrived: Mapping[str, float] | None = None,
        failures: Mapping[str, Failures] | None = None,
        now: float = 0.0,
    ) -> Plan:
        """Actions for the ``candidates`` (child ids; the shell passes those whose inputs
        changed, or all of them). ``busy``: children with an operation of this node in flight
        (until a deadline: past it they are planned again); ``in_transit``: children that left
        a node to move to another (until a deadline, or until they show up again), which no
        owner starts meanwhile; ``arrived``: local copies that just moved in (until a
        deadline), which do not lose a conflict meanwhile (the view that says another copy
        runs may be stale); ``failures``: failed starts here."""
        plan = Plan()
        busy = busy or {}
        in_transit = in_transit or {}
        arrived = arrived or {}
        failures = failures or {}
        me = view.me
        live = view.live
        for cid in dict.fromkeys(candidates):
            until = busy.get(cid)
            if until is not None and until > now:
                continue  # planned again when the operation ends (or its deadline passes)
            record = desired.get(cid)
            mine = local.get(cid)
            if mine is not None and mine.state == "stopping":
                continue
            if view.locked:  # quorum lost: this side runs nothing until it is regained
                if mine is not None:
                    plan.actions.append(Stop(cid, "locked"))
                continue
            if record is None:
                continue  # never known here: nothing to decide (the shell records local starts)
            if record.status != LIVE:
                if mine is not None:
                    plan.actions.append(Stop(cid, "stopped"))
                continue
            if mine is not None and mine.epoch < record.epoch:
                plan.actions.append(Stop(cid, "stale"))
                continue
            if mine is not None:
                owners = list(owners_of(cid))
                if not owners or me in owners:
                    continue  # it stays: on an owner, or nowhere to place it (all drain)
                if now < view.settle_at:
                    plan._defer(cid, view.settle_at)
                    continue
                copies = sorted([me, *_elsewhere(running, cid, me, live)])
                self._relocate(plan, cid, me, owners, copies, view, arrived.get(cid), now)
                continue
            copies = _elsewhere(running, cid, me, live)
            if copies and self.replication_factor == 1:
                continue  # its one copy runs elsewhere: nothing to do here, whoever owns it
            owners = list(owners_of(cid))
            if not owners:
                continue  # nowhere to place it (every live node drains): leave it where it is
            if me not in owners:
                if not copies:
                    plan.orphans.append(cid)
                continue
            self._maybe_start(
                plan, cid, record, me, owners, copies, view, in_transit, failures, now
            )
        return plan

    def _relocate(
        self,
        plan: Plan,
        cid: str,
        me: str,
        owners: list[str],
        copies: list[str],
        view: View,
        arrived: float | None,
        now: float,
    ) -> None:
        """The local copy is not on an owner: move it to a missing owner, or stop it."""
        missing = [o for o in owners if o not in copies]
        strays = [n for n in copies if n not in owners]  # me among them
        rank = strays.index(me)
        if rank < len(missing):
            target = missing[rank]
            if target in view.unsynced:
                return  # it may run there already: decide once its registry is known
            if target in view.loading and me not in view.draining:
                return  # it moves once the target has loaded the registry (a node that
                # drains or leaves does not wait: its children must go)
            plan.actions.append(Move(cid, target, self.hot_moves))
            return
        if arrived is not None and arrived > now:
            plan._defer(cid, arrived)  # it just moved here: the other copy may be gone already
            return
        holders = [o for o in owners if o in copies]
        winner = holders[0] if holders else strays[0]
        plan.actions.append(Conflict(cid, winner, me))
        plan.actions.append(Stop(cid, "conflict"))

    def _maybe_start(
        self,
        plan: Plan,
        cid: str,
        record: Record,
        me: str,
        owners: list[str],
        copies: list[str],
        view: View,
        in_transit: Mapping[str, float],
        failures: Mapping[str, Failures],
        now: float,
    ) -> None:
        """This node owns the child and runs no copy of it."""
        if copies:
            strays = [n for n in copies if n not in owners]
            on_owners = len(copies) - len(strays)
            if strays or on_owners >= len(owners):
                return  # a stray copy moves in, or every owner has one
            if now < view.settle_at:
                plan._defer(cid, view.settle_at)
                return
            reason: Literal["failover", "replica"] = "replica"
        else:
            reason = "failover"
            if now < view.starts_after:
                plan.orphans.append(cid)
                plan._defer(cid, view.starts_after)
                return
        if view.unsynced:
            if not copies:
                plan.orphans.append(cid)
            return  # a peer whose registry is not known yet may run it
        until = in_transit.get(cid)
        if until is not None and until > now:
            plan._defer(cid, until)
            return
        failed = failures.get(cid)
        if failed is not None:
            if failed.attempts > record.spec.max_restarts:
                if not copies:  # a replica that cannot start here does not bury the child
                    plan.actions.append(Bury(cid, record, failed.attempts, failed.error))
                return
            if failed.retry_at > now:
                plan._defer(cid, failed.retry_at)
                if not copies:
                    plan.orphans.append(cid)
                return
        mode: Mode = "active" if owners[0] == me else self.replica_mode
        plan.actions.append(Start(cid, record, reason, mode))


def _elsewhere(running: RunningView, cid: str, me: str, live: frozenset[str]) -> list[str]:
    """The live nodes other than ``me`` that run ``cid``, by name."""
    return sorted(n for n, epoch in running.running_on(cid) if n != me and n in live and epoch >= 0)


def owned_elsewhere(me: str, owners: Sequence[str]) -> bool:
    """Whether a copy starting here would be one too many: another node owns the child now,
    sees no copy and starts one. (With no owner at all, every live node drains: a local copy
    stays.) It decides :func:`foreign_starts`, and whether a hot move's new copy that waited
    in vain for its state runs here."""
    return bool(owners) and me not in owners


def strays(me: str, local: Iterable[str], owners_of: Placement) -> list[str]:
    """The local copies (``local``: child ids) that a change of the view (members, draining,
    pins, a peer synchronized) can ask something of: those :func:`owned_elsewhere`. A copy on
    one of its owners, or with no owner at all, stays whatever else the view says
    (:meth:`Planner.plan`); the rest of its decision reads its record, its local state and
    the quorum lock, whose changes plan it themselves. So planning only these after a view
    change gives the same actions as planning every local copy, for the cost of a placement
    lookup each (after a kill -9 of one of 3 nodes holding 100,000 children, a survivor
    planned none of its 33,000 again, only the dead node's)."""
    return [cid for cid in local if owned_elsewhere(me, owners_of(cid))]


def foreign_starts(me: str, starting: Iterable[str], owners_of: Placement) -> list[str]:
    """The planned starts in flight here (``starting``) to cancel at a topology change: those
    of children :func:`owned_elsewhere`, so that a start that still succeeded here makes no
    second copy."""
    return sorted(cid for cid in starting if owned_elsewhere(me, owners_of(cid)))


def start_target(me: str, owners: Sequence[str], hops: int, max_hops: int) -> str:
    """Where a start request received here goes: this node if it owns the child (or the
    request was forwarded ``max_hops`` times already: better placed here than bounced), else
    the primary owner."""
    if not owners or me in owners or hops >= max_hops:
        return me
    return owners[0]


def synchronized(own: object, peers: Mapping[str, object], live: Iterable[str], me: str) -> bool:
    """Whether every live peer reported the same registry digest as this node's."""
    return all(n == me or peers.get(n) == own for n in live)


def catching_up(peer: Iterable[Sequence[Any]], own: Iterable[Sequence[Any]]) -> bool:
    """Whether a peer or this node still lacks a partition (node and boot) that the other
    holds, from the ``(node, boot, version)`` lists of both: one of them is loading
    snapshots, and the desired records of those children reach it with their entries, so
    the desired digests differ meanwhile and pushing records would only add to the load."""
    return {(n, b) for n, b, *_ in peer} != {(n, b) for n, b, *_ in own}
