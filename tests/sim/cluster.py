"""The simulated cluster: nodes, network and failure detector in virtual time, the faults and
user requests a schedule is made of, and settling a run before its final checks.

Faults: :meth:`Cluster.kill` (the incarnation stops at once: its children vanish, its links
break, survivors see it dead within the detection period), :meth:`Cluster.restart` (a new boot
under the same name, empty state), :meth:`Cluster.join`, :meth:`Cluster.leave` (graceful:
drain, hand off, flush, go), :meth:`Cluster.drain` (stay, own nothing),
:meth:`Cluster.partition` / :meth:`Cluster.heal`, :meth:`Cluster.pause` (SIGSTOP: nothing
runs on the node, its timers and frames wait), :meth:`Cluster.set_loss`, slow nodes and
children whose start fails on given nodes. User requests: :meth:`Cluster.start`,
:meth:`Cluster.stop`, :meth:`Cluster.end` (a child's own exit or local burial).
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

from hub.coordinator import FLUSH_TIMEOUT, MOVE_WINDOW
from hub.errors import HubError
from hub.pid import Pid
from hub.spec import ChildSpec, RestartPolicy
from hub.supervisor import Backoff
from strategies import ConsistentHashing

from .invariants import Ledger, final_violations
from .membership import Membership
from .network import Network, Scheduler
from .node import SimNode

__all__ = ["Cluster", "SimConfig"]


@dataclass(frozen=True, slots=True)
class SimConfig:
    """Virtual-time settings; the shell's defaults where it has them (seconds)."""

    rf: int = 1
    vnodes: int = 16  # fewer ring points than the default 160: placement spread does not matter
    latency: tuple[float, float] = (0.001, 0.02)
    detect: tuple[float, float] = (0.5, 3.0)  # a death or split is noticed within this
    notice: tuple[float, float] = (0.02, 0.5)  # a join, heal, new boot or drain is noticed
    leave: tuple[float, float] = (0.01, 0.1)  # a graceful leave is noticed
    atomic_join: bool = True  # a joiner learns every member at once (see membership.py)
    start_time: tuple[float, float] = (0.005, 0.2)
    slow_start_time: tuple[float, float] = (1.0, 8.0)  # on slow nodes (past start_timeout: fail)
    stop_time: tuple[float, float] = (0.001, 0.02)
    start_timeout: float = 5.0
    reconcile_interval: float = 5.0
    ae_interval: float = 5.0  # PubSub.anti_entropy_interval
    batch_window: float = 0.005
    flush_timeout: float = FLUSH_TIMEOUT
    settle_time: float = 1.0  # the shell's settle_time: the SWIM probe interval (LAN preset)
    backoff: Backoff = field(default_factory=lambda: Backoff(base=0.05, cap=2.0))
    hot: bool = False  # HotSwap: the target starts a held copy, the source then hands over
    retention: float = 5.0  # HotSwap.retention
    #: candidate fixes the shell does not have, applied to the model only (the default,
    #: none, is the shell as it is)
    fixes: frozenset[str] = frozenset()


def spec(cid: str, *, transient: bool = False, max_seconds: float = 5.0) -> ChildSpec:
    restart: RestartPolicy = "transient" if transient else "permanent"
    return ChildSpec(cid, "tests.procs:idle", restart=restart, max_seconds=max_seconds)


_RINGS: dict[tuple[int, frozenset[str]], ConsistentHashing] = {}
_PLACEMENTS: dict[tuple[int, int, frozenset[str], frozenset[str]], dict[str, list[str]]] = {}


class Cluster:
    def __init__(self, seed: int, config: SimConfig | None = None, *, trace: bool = False) -> None:
        self.seed = seed
        self.trace = trace  # log every topology change, plan and copy too (for debugging)
        self.config = config or SimConfig()
        self.rng = random.Random(seed)
        self.sched = Scheduler()
        self.nodes: dict[str, SimNode] = {}  # name -> latest incarnation (maybe dead)
        self.net = Network(self.sched, self.rng, self, self.config.latency)
        cfg = self.config
        self.membership = Membership(
            self.sched,
            self.rng,
            self.net,
            self.nodes,
            detect=cfg.detect,
            notice=cfg.notice,
            leave=cfg.leave,
            atomic_join=cfg.atomic_join,
        )
        self.ledger = Ledger(self)
        self.bad: dict[str, frozenset[str]] = {}  # child id -> nodes where its start fails
        self.slow: set[str] = set()
        self.paused_until: dict[str, float] = {}
        self._boots = 0
        self.log: list[str] = []
        self.replies: list[tuple[str, object]] = []  # user request outcomes, in order

    # -- the network's resolver and the nodes' callbacks ---------------------------------------

    def incarnation(self, name: str) -> SimNode | None:
        return self.nodes.get(name)

    def start_outcome(self, node: SimNode, cid: str) -> tuple[float, bool]:
        lo, hi = self.config.slow_start_time if node.name in self.slow else self.config.start_time
        return lo + (hi - lo) * self.rng.random(), node.name not in self.bad.get(cid, ())

    def announce_draining(self, node: SimNode) -> None:
        self.membership.draining.add(node.name)
        self.membership.changed([node.name], "notice")

    def node_left(self, node: SimNode) -> None:
        """The end of a graceful leave: the process exits after its final flush."""
        if node.alive:
            node.gone = True
            self._vanish(node, "leave")

    def _vanish(self, node: SimNode, how: str) -> None:
        self.ledger.vanished(node)
        node.kill()
        self.membership.draining.discard(node.name)
        for other in self.live_nodes():
            other.link_broken(node.name, node.boot)
        self.membership.changed([node.name], how)
        self.ledger.forget_unheld()

    # -- queries -------------------------------------------------------------------------------

    def ring(self, nodes: frozenset[str]) -> ConsistentHashing:
        """The ring over ``nodes``: a function of the set, shared by every view of it (and by
        every run: nothing changes a ring once built)."""
        key = (self.config.vnodes, nodes)
        ring = _RINGS.get(key)
        if ring is None:
            ring = _RINGS[key] = ConsistentHashing(vnodes=key[0], nodes=sorted(nodes))
        return ring

    def placements(self, nodes: frozenset[str], draining: frozenset[str]) -> dict[str, list[str]]:
        """The owners of child ids over the ring of ``nodes`` without ``draining`` (filled in
        by the nodes; shared like the rings)."""
        return _PLACEMENTS.setdefault((self.config.vnodes, self.config.rf, nodes, draining), {})

    def live_nodes(self) -> list[SimNode]:
        return [n for _, n in sorted(self.nodes.items()) if n.alive]

    def node(self, name: str) -> SimNode:
        return self.nodes[name]

    def copies(self, cid: str) -> list[str]:
        return [n.name for n in self.live_nodes() if cid in self.nodes[n.name].children]

    # -- faults --------------------------------------------------------------------------------

    def note(self, text: str) -> None:
        self.log.append(f"t={self.sched.now:.3f} {text}")

    def join(self, name: str) -> SimNode:
        """A new incarnation under ``name`` (a new node, or a restart after a kill)."""
        old = self.nodes.get(name)
        assert old is None or not old.alive, f"{name} runs already"
        self._boots += 1
        node = SimNode(self, name, f"{name}.{self._boots}")
        self.nodes[name] = node
        self.membership.draining.discard(name)
        self.membership.joined(node)
        self.note(f"join {node.boot}")
        return node

    def kill(self, name: str) -> None:
        node = self.nodes[name]
        if node.alive:
            self.note(f"kill {node.boot} ({len(node.children)} children)")
            self._vanish(node, "detect")

    def restart(self, name: str) -> SimNode:
        self.kill(name)
        return self.join(name)

    def leave(self, name: str) -> None:
        """``Hub.stop()`` (a paused process makes the call when it resumes)."""
        node = self.nodes[name]
        if node.alive and not node.leaving:
            self.note(f"leave {name}")
            node.dispatch(self._hand_off, (node, True))

    def drain(self, name: str) -> None:
        """``Hub.drain()``."""
        node = self.nodes[name]
        if node.alive and not node.leaving:
            self.note(f"drain {name}")
            node.dispatch(self._hand_off, (node, False))

    def _hand_off(self, node: SimNode, final: bool) -> None:
        if not node.leaving:
            node.hand_off(final=final)

    def partition(self, groups: Iterable[Iterable[str]]) -> None:
        """Split the network: nodes in different groups cannot reach each other (a node in no
        group is in the first one)."""
        self.net.groups = {name: i for i, group in enumerate(groups) for name in group}
        self.note(f"partition {self.net.groups}")
        self.membership.changed(sorted(self.nodes), "detect")

    def heal(self) -> None:
        if self.net.groups is not None:
            self.net.groups = None
            self.note("heal")
            self.membership.changed(sorted(self.nodes), "notice")

    def pause(self, name: str, duration: float) -> None:
        node = self.nodes[name]
        if node.alive and not node.paused:
            self.note(f"pause {name} for {duration:.3f}")
            node.pause()
            self.paused_until[name] = self.sched.now + duration
            self.membership.changed([name], "detect")
            self.sched.after(duration, self._resume, node)

    def _resume(self, node: SimNode) -> None:
        self.paused_until.pop(node.name, None)
        if node.alive and node.paused:
            self.note(f"resume {node.name}")
            node.resume()
            self.membership.changed([node.name], "notice")

    def set_loss(self, loss: float) -> None:
        self.net.loss = loss
        self.note(f"loss {loss}")

    # -- user requests -------------------------------------------------------------------------

    def start(
        self, via: str, cids: Iterable[str], *, transient: bool = False, max_seconds: float = 5.0
    ) -> None:
        """A user's ``start_children`` on ``via`` (its outcome is recorded when it returns)."""
        node = self.nodes[via]
        specs = [spec(c, transient=transient, max_seconds=max_seconds) for c in cids]
        if not node.alive or node.paused or node.leaving or not specs:
            return
        self.note(f"start {[s.id for s in specs]} via {via}")
        request = self.ledger.issued([s.id for s in specs])

        def done(started: list[tuple[str, list[tuple[str, Pid]]]] | None, errors: object) -> None:
            self.replies.append(("start", (started, errors)))
            if started is None:
                assert isinstance(errors, HubError)
                return
            assert isinstance(errors, list)
            epochs = {}
            for cid, _ in started:
                record = node.desired.get(cid)
                epochs[cid] = record.epoch if record is not None else 1
            self.ledger.user_started(request, epochs, errors)

        node.start_children(specs, self.config.start_timeout, done)

    def stop(self, via: str, cids: Iterable[str]) -> None:
        node = self.nodes[via]
        ids = list(cids)
        if not node.alive or node.paused or not ids:
            return
        self.note(f"stop {ids} via {via}")
        request = self.ledger.issued(ids)
        tombstoned = {}
        for cid in ids:
            record = node.desired.live(cid)
            if record is not None:
                tombstoned[cid] = record.epoch + 1

        def done(stopped: dict[str, list[str]]) -> None:
            self.replies.append(("stop", stopped))
            self.ledger.user_stopped(request, tombstoned)

        node.stop_children(ids, "user stop", done)

    def end(self, cid: str, *, buried: bool = False) -> bool:
        """A running copy of ``cid`` ends by itself (or is buried by its supervisor)."""
        for node in self.live_nodes():
            if not node.paused and node.end_by_itself(cid, buried):
                self.note(f"{cid} {'buried' if buried else 'exits'} on {node.name}")
                self.ledger.ended(cid)
                return True
        return False

    # -- running -------------------------------------------------------------------------------

    def run(self, duration: float) -> None:
        self.sched.run_until(self.sched.now + duration)

    def run_until_quiet(self, limit: float) -> bool:
        """Run until nothing is in flight and every view agrees (at most ``limit`` seconds)."""
        from .invariants import _quiet

        end = self.sched.now + limit
        while self.sched.now < end:
            self.run(0.25)
            if not _quiet(self):
                return True
        return False

    def end_faults(self) -> None:
        self.heal()
        self.set_loss(0.0)
        if self.paused_until:
            self.sched.run_until(max(self.paused_until.values()))

    def settle(self, limit: float = 200.0) -> list[str]:
        """End every fault and run until the cluster is quiet (nothing in flight, views agree)
        and stays so over a window without any planned action, then check everything. The
        window is a whole reconcile period when the state is already exact (every node plans
        every child once more: nothing may change), else two anti-entropy rounds and a reconcile
        or move window (what repairs a difference), and again until ``limit``."""
        self.end_faults()
        cfg = self.config
        repair = 2 * cfg.ae_interval + max(cfg.reconcile_interval, MOVE_WINDOW) + 1.0
        stable = cfg.reconcile_interval + 1.0
        end = self.sched.now + limit
        while self.sched.now < end:
            if not self.run_until_quiet(end - self.sched.now):
                break
            before = self._fingerprint()
            exact = not final_violations(self)
            self.run(stable if exact else repair)
            if self._fingerprint() == before:
                return final_violations(self)
        return [f"no quiescence within {limit}s", *final_violations(self)]

    def _fingerprint(self) -> tuple[object, ...]:
        nodes = self.live_nodes()
        return (
            self.ledger.actions,
            tuple((n.name, n.registry.local.version, n.desired.digest()) for n in nodes),
            tuple(tuple(n.members.items()) for n in nodes),
        )

    def check(self, limit: float = 200.0) -> list[str]:
        """Settle, then every violation: those seen along the way and the final ones."""
        final = self.settle(limit)
        return [*self.ledger.violations, *final]
