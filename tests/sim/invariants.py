"""Invariant checks: a :class:`Ledger` written as a run goes (the checks made at every step)
and :func:`final_violations`, the exactness checks once a run has settled.

At every step:

* no start request is served after more than ``MAX_HOPS`` forwards;
* no node starts a child whose record in its own table is a newer tombstone, and (with
  ``strict_stops``: no partition, pause or loss) no node starts a child at an epoch below a
  tombstone whose stop was acknowledged to the user;
* with ``calm`` (a schedule of planned moves only: joins, graceful leaves, drains, user starts
  and stops, no kill, restart, partition, pause or loss) no child ever runs (or starts) on more
  than ``rf`` nodes at once (a planned start although the starting node's registry showed
  ``rf`` copies says so: that is the planner's fault, not a view's).

At the end (:func:`final_violations`): every live node's view agrees with the truth; nothing is
in flight; desired tables are identical, registries (over the live nodes' partitions) are
identical and list exactly what runs; every ``LIVE`` child runs on exactly its owners per the
true ring (``min(rf, live non-draining nodes)`` copies, of the record's epoch; under replication
an owner that gave up its replica after more failed starts than the child's ``max_restarts``
may lack it while another owner runs the child), every other child nowhere, a draining node
runs nothing (unless every live node drains: the planner then leaves children where they are,
by design); a child the user started (acknowledged) and did not stop is still ``LIVE`` (or
buried after failed starts, or ended by itself), a child whose stop was acknowledged is not;
and with ``count_starts`` (rf=1, no partition, pause or loss) no child was started by the
planner or a migration more often than copies of it needed replacing (lost to deaths, leaves
and cancelled starts, or stopped to move) plus its failed start attempts (copies whose start
failed or timed out): with the placement check (one copy at the end), each lost copy was
restarted exactly once.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING

from hub.coordinator import MAX_HOPS
from hub.desired import LIVE, STATUS_NAMES, Record
from hub.errors import AlreadyStarted, HubError
from hub.pid import Pid
from hub.planner import Conflict, Plan

if TYPE_CHECKING:
    from .cluster import Cluster
    from .node import Copy, SimNode

__all__ = ["Ledger", "final_violations", "true_owners"]

MAX_VIOLATIONS = 20


def describe(record: Record | None) -> str:
    if record is None:
        return "no record"
    status = STATUS_NAMES[record.status]
    info = f" ({record.info})" if record.info else ""
    return f"{status}@{record.epoch} by {record.origin}{info}"


class Ledger:
    """What happened during a run, as far as the invariants need it."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.violations: list[str] = []
        self.calm = False
        self.count_starts = False
        self.strict_stops = False  # no split, no loss: an acknowledged stop reaches everyone
        self.stopped_at: dict[str, int] = {}  # child id -> epoch of its acknowledged tombstone
        # child id -> ("live" | "stopped", epoch): what the user was told, at which epoch
        self.expect: dict[str, tuple[str, int]] = {}
        self.starts: Counter[str] = Counter()  # copies the planner or a migration started
        # copies that need a replacement: vanished without a deliberate stop, or stopped to move
        self.lost: Counter[str] = Counter()
        self.failed: Counter[str] = Counter()  # copies whose start failed or timed out
        self.actions = 0
        self.moves = 0
        self.move_failures = 0
        self.conflicts = 0
        self.hops = 0
        self._requests = 0
        #: called when a move's reply arrives at its source (scenarios hook faults on it)
        self.on_moved: Callable[[SimNode, str, list[tuple[str, Pid | HubError]]], None] | None = (
            None
        )
        self._latest: dict[str, int] = {}  # child id -> the latest request about it

    def violation(self, text: str) -> None:
        if len(self.violations) < MAX_VIOLATIONS:
            self.violations.append(f"t={self.cluster.sched.now:.3f} {text}")

    # -- hooks called by the nodes -------------------------------------------------------------

    def planned(self, node: SimNode, plan: Plan, candidates: list[str]) -> None:
        self.actions += len(plan.actions)
        if self.cluster.trace and plan.actions:
            shown = ", ".join(_action(a) for a in plan.actions)
            self.cluster.note(f"{node.name} plans {shown} (unsynced {sorted(node.unsynced)})")

    def conflict(self, node: SimNode, action: Conflict) -> None:
        self.conflicts += 1

    def start_request(self, node: SimNode, hops: int, kind: str) -> None:
        self.hops = max(self.hops, hops)
        if hops > MAX_HOPS:
            self.violation(f"{node.name} served a {kind} request forwarded {hops} times")

    def copy_created(self, node: SimNode, copy: Copy) -> None:
        cid = copy.cid
        known = node.desired.get(cid)
        if known is not None and known.status != LIVE and known.epoch >= copy.epoch:
            self.violation(
                f"{node.name} starts {cid}@{copy.epoch} ({copy.why}) over its {describe(known)}"
            )
        if self.cluster.trace:
            self.cluster.note(f"{node.name} starts {cid}@{copy.epoch} ({copy.why})")
        stopped = self.stopped_at.get(cid)
        if self.strict_stops and stopped is not None and copy.epoch < stopped:
            self.violation(
                f"{node.name} starts {cid}@{copy.epoch} ({copy.why}) after its stop "
                f"(tombstone @{stopped}) was acknowledged"
            )
        if copy.why != "start":
            self.starts[cid] += 1
        if self.calm and copy.why != "hot":  # a held copy runs nothing: see activated()
            self._at_once(node, copy)

    def activated(self, node: SimNode, copy: Copy) -> None:
        """A hot move's held copy runs (its state came, or it gave up waiting)."""
        if self.cluster.trace:
            self.cluster.note(f"{node.name} runs {copy.cid}@{copy.epoch} (it moved in hot)")
        if self.calm:
            self._at_once(node, copy)

    def _at_once(self, node: SimNode, copy: Copy) -> None:
        cid = copy.cid
        where = [
            n.name
            for n in self.cluster.live_nodes()
            if (c := n.children.get(cid)) is not None
            and not (c.why == "hot" and c.state != "running")
        ]
        rf = self.cluster.config.rf
        if len(where) > rf:
            seen = sum(1 for n in where if n != node.name and _sees(node, n, cid))
            how = f", though it sees {seen} copies" if copy.why == "planned" and seen >= rf else ""
            self.violation(
                f"{cid} runs on {where} at once ({node.name} starts it: {copy.why}){how}"
            )

    def copy_removed(self, node: SimNode, copy: Copy, kind: str) -> None:
        if self.cluster.trace:
            self.cluster.note(f"{node.name} removes {copy.cid}@{copy.epoch} ({kind})")
        if copy.state == "starting" and kind == "stopped":
            self.lost[copy.cid] += 1  # a start cancelled by a stop
        elif kind in ("failed", "timeout"):
            self.failed[copy.cid] += 1  # a failed start attempt (whether the shell counts it)

    def moving(self, node: SimNode, target: str, ids: list[str]) -> None:
        for cid in ids:
            self.lost[cid] += 1  # stopped here, to be started there (or by its owner)

    def moved(self, node: SimNode, target: str, results: list[tuple[str, Pid | HubError]]) -> None:
        self.moves += len(results)
        self.move_failures += sum(1 for _, outcome in results if not isinstance(outcome, Pid))
        if self.on_moved is not None:
            self.on_moved(node, target, results)

    def written(self, node: SimNode, record: Record, why: str) -> None:
        if self.cluster.trace:
            self.cluster.note(f"{node.name} writes {record.spec.id} {describe(record)} ({why})")
        if why == "bury":
            self.issued([record.spec.id])  # buried: whatever the user was told before

    # -- hooks called by the cluster -----------------------------------------------------------

    def vanished(self, node: SimNode) -> None:
        """``node`` died or left: whatever it held is gone."""
        for cid in node.children:
            self.lost[cid] += 1

    def forget_unheld(self) -> None:
        """After a death: what no live node holds any more is legitimately forgotten (the
        table outlives a node only while some node that saw the record lives)."""
        live = self.cluster.live_nodes()
        for cid, (status, epoch) in list(self.expect.items()):
            held = False
            for node in live:
                record = node.desired.get(cid)
                if record is not None and record.epoch >= epoch:
                    held = held or (record.status == LIVE) == (status == "live")
            if not held:
                del self.expect[cid]

    def issued(self, cids: list[str]) -> int:
        """A user's request about ``cids``: until it is answered, anything goes; an answer
        counts only if no later request about the child was made (returns the request's id)."""
        self._requests += 1
        for cid in cids:
            self.expect.pop(cid, None)
            self._latest[cid] = self._requests
        return self._requests

    def user_started(
        self, request: int, started: dict[str, int], errors: list[tuple[str, HubError]]
    ) -> None:
        for cid, epoch in started.items():
            if self._latest.get(cid) == request:
                self.expect[cid] = ("live", epoch)
        for cid, error in errors:
            if not isinstance(error, AlreadyStarted) and self._latest.get(cid) == request:
                self.expect.pop(cid, None)

    def user_stopped(self, request: int, tombstones: dict[str, int]) -> None:
        for cid, epoch in tombstones.items():
            if self._latest.get(cid) == request:
                self.expect[cid] = ("stopped", epoch)
            self.stopped_at[cid] = max(epoch, self.stopped_at.get(cid, 0))

    def ended(self, cid: str) -> None:
        self.issued([cid])

    # -- the end -------------------------------------------------------------------------------

    def final(self, table: dict[str, Record]) -> list[str]:
        out = []
        for cid, (expected, _) in sorted(self.expect.items()):
            record = table.get(cid)
            live = record is not None and record.status == LIVE
            if expected == "live" and not live:
                out.append(f"{cid} was started (acknowledged) and not stopped: {describe(record)}")
            elif expected == "stopped" and live:
                out.append(f"{cid} was stopped (acknowledged) but is {describe(record)}")
        if self.count_starts:
            for cid, n in sorted(self.starts.items()):
                allowed = self.lost[cid] + self.failed[cid]
                if n > allowed:
                    out.append(
                        f"{cid} was started {n} times (planner and migrations) for "
                        f"{self.lost[cid]} lost or moved copies and {self.failed[cid]} failed "
                        "attempts"
                    )
        return out


def _sees(node: SimNode, holder: str, cid: str) -> bool:
    """Whether ``node``'s registry shows ``holder``'s copy of ``cid`` (a member's current boot)."""
    part = node.registry.partitions.get(holder)
    return part is not None and node.members.get(holder) == part.boot_id and cid in part.entries


def _action(action: object) -> str:
    name = type(action).__name__
    cid = getattr(action, "child_id", "?")
    if isinstance(action, Conflict):
        return f"Conflict({cid}: {action.winner} wins)"
    target = getattr(action, "target", None) or getattr(action, "reason", "")
    return f"{name}({cid} {target})"


def true_owners(cluster: Cluster) -> dict[str, list[str]]:
    """The owners of every known child over the truly live, non-draining nodes."""
    live = sorted(n.name for n in cluster.live_nodes())
    draining = {n for n in live if n in cluster.membership.draining}
    ring = cluster.ring(frozenset(live))
    rf = cluster.config.rf
    ids: set[str] = set()
    for node in cluster.live_nodes():
        ids.update(node.desired.ids())
        ids.update(node.children)
    out = {}
    for cid in sorted(ids):
        found = ring.belongs_to(cid, rf + len(draining)) if live else []
        out[cid] = [n for n in found if n not in draining][:rf]
    return out


def _quiet(cluster: Cluster) -> list[str]:
    out = list(cluster.membership.disagreements())
    now = cluster.sched.now
    for node in cluster.live_nodes():
        if node.handing_off is not None:
            out.append(f"{node.name} is still handing off")
        if any(t > now for t in node.busy.values()):
            out.append(f"{node.name} is busy with {sorted(node.busy)}")
        if node.pending:
            out.append(f"{node.name} waits for {sorted(p.kind for p in node.pending.values())}")
        starting = sorted(c.cid for c in node.children.values() if c.state != "running")
        if starting:
            out.append(f"{node.name} is still starting {starting}")
    return out


def _gave_up(cluster: Cluster, name: str, record: Record) -> bool:
    """Whether ``name`` stopped trying to start ``record``'s child (a replica that cannot
    start there buries nothing)."""
    failed = cluster.nodes[name].failures.get(record.spec.id)
    return failed is not None and failed.attempts > record.spec.max_restarts


def final_violations(cluster: Cluster) -> list[str]:
    """Everything that is not exact once the run settled."""
    out = _quiet(cluster)
    nodes = cluster.live_nodes()
    if not nodes:
        return out
    first = nodes[0]
    table = {r.spec.id: r for r in first.desired}
    for node in nodes[1:]:
        other = {r.spec.id: r for r in node.desired}
        if other != table:
            diff = sorted(c for c in {*table, *other} if table.get(c) != other.get(c))
            cid = diff[0]
            out.append(
                f"desired tables differ on {len(diff)} ids, e.g. {cid}: {first.name} has "
                f"{describe(table.get(cid))}, {node.name} has {describe(other.get(cid))}"
            )
    for holder in nodes:
        for node in nodes:
            local = node.registry.local
            part = holder.registry.partitions.get(node.name)
            if part is None or part.boot_id != node.boot or part.entries != local.entries:
                have = "nothing" if part is None else f"{part.boot_id} v{part.version}"
                out.append(
                    f"{holder.name}'s registry holds {have} for {node.name} "
                    f"({node.boot} v{local.version})"
                )
        running = {
            cid: (c.pid, c.epoch) for cid, c in holder.children.items() if c.state == "running"
        }
        listed = {cid: (e.pid, e.epoch) for cid, e in holder.registry.local.entries.items()}
        if running != listed:
            out.append(f"{holder.name}'s partition lists {listed}, it runs {running}")
        if {cid: (c.epoch, c.state) for cid, c in holder.children.items()} != holder.local:
            out.append(f"model: {holder.name}'s planner view is not what it holds")
    live_count = len([n for n in nodes if n.name not in cluster.membership.draining])
    if not live_count:  # every live node drains: the planner leaves children where they are
        out.extend(cluster.ledger.final(table))
        return out
    owners = true_owners(cluster)
    rf = cluster.config.rf
    for cid, expected in owners.items():
        record = table.get(cid)
        where = sorted(n.name for n in nodes if cid in n.children)
        if record is None or record.status != LIVE:
            if where:
                out.append(f"{cid} runs on {where} but is {describe(record)}")
            continue
        epochs = sorted({n.children[cid].epoch for n in nodes if cid in n.children})
        if len(where) == 1 and cluster.nodes[where[0]].parked.get(cid) == float("inf"):
            # HotSwap: its owner refused it more than max_restarts times: it stays where it runs
            expected = where
        if where:
            expected = [o for o in expected if o in where or not _gave_up(cluster, o, record)]
        gave_up = len(owners[cid]) - len(expected)
        if where != sorted(expected) or len(where) + gave_up != min(rf, live_count):
            out.append(f"{cid} ({describe(record)}) runs on {where}, its owners are {expected}")
        elif where and epochs != [record.epoch]:
            out.append(f"{cid} runs epochs {epochs}, its record is {describe(record)}")
    for node in nodes:
        if node.name in cluster.membership.draining and node.children:
            out.append(f"draining {node.name} runs {sorted(node.children)}")
    out.extend(cluster.ledger.final(table))
    return out
