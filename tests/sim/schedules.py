"""Seeded random schedules: drawing them, running them, shrinking a failing one.

A :class:`Schedule` is plain data (its ``repr`` is a reproduction): the cluster's first nodes,
the children whose start fails on given nodes, and a list of :class:`Step` (an operation, its
arguments, and how long to run after it). A step that no longer makes sense when it runs (kill
a node that is dead, after shrinking removed its restart) is skipped, so any subsequence of a
schedule is a schedule. :func:`shrink` finds the shortest failing prefix, then drops steps one
by one while the run still fails the same way.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .cluster import Cluster, SimConfig

__all__ = ["Outcome", "Schedule", "Step", "random_schedule", "run_schedule", "shrink"]

CALM_OPS = frozenset({"start", "stop", "join", "leave", "drain", "end", "wait"})
SPLIT_OPS = frozenset({"partition", "pause", "loss"})  # views may disagree for long


@dataclass(frozen=True)
class Step:
    op: str
    args: tuple[Any, ...] = ()
    wait: float = 0.0

    def __repr__(self) -> str:
        return f"Step({self.op!r}, {self.args!r}, {self.wait!r})"


@dataclass(frozen=True)
class Schedule:
    seed: int
    rf: int
    nodes: tuple[str, ...]
    steps: tuple[Step, ...]
    bad: tuple[tuple[str, tuple[str, ...]], ...] = ()  # child id -> nodes its start fails on

    @property
    def calm(self) -> bool:
        """Planned moves only: no child may ever run on more than ``rf`` nodes at once."""
        return all(s.op in CALM_OPS for s in self.steps)

    @property
    def counts_starts(self) -> bool:
        """rf=1 without a split or loss: each lost copy must be restarted exactly once."""
        return self.rf == 1 and not any(s.op in SPLIT_OPS for s in self.steps)

    def __repr__(self) -> str:
        steps = "".join(f"\n        {s!r}," for s in self.steps)
        return (
            f"Schedule(seed={self.seed}, rf={self.rf}, nodes={self.nodes!r}, "
            f"bad={self.bad!r}, steps=({steps}\n    ))"
        )


@dataclass
class Outcome:
    schedule: Schedule
    violations: list[str]
    log: list[str] = field(default_factory=list)
    events: int = 0
    virtual: float = 0.0
    moves: int = 0
    conflicts: int = 0


# -- running -------------------------------------------------------------------------------------


def _apply(cluster: Cluster, step: Step) -> None:
    op, args = step.op, step.args
    nodes = cluster.nodes
    alive = {n.name for n in cluster.live_nodes()}
    if op == "start":
        via, cids, transient = args
        if via in alive:
            cluster.start(via, cids, transient=transient)
    elif op == "stop":
        via, cids = args
        if via in alive:
            cluster.stop(via, cids)
    elif op == "kill":
        if args[0] in alive and len(alive) > 1:
            cluster.kill(args[0])
    elif op == "restart":
        if args[0] in nodes and len(alive - {args[0]}) >= 1:
            cluster.restart(args[0])
    elif op == "join":
        if args[0] not in alive:
            cluster.join(args[0])
    elif op in ("leave", "drain"):
        name = args[0]
        staying = [
            n
            for n in cluster.live_nodes()
            if n.name != name and not n.leaving and n.name not in cluster.membership.draining
        ]
        if name in alive and staying:
            getattr(cluster, op)(name)
    elif op == "partition":
        cluster.partition(args[0])
    elif op == "heal":
        cluster.heal()
    elif op == "pause":
        if args[0] in alive:
            cluster.pause(args[0], args[1])
    elif op == "loss":
        cluster.set_loss(args[0])
    elif op == "slow":
        cluster.slow.add(args[0])
    elif op == "end":
        cluster.end(args[0], buried=args[1])
    elif op != "wait":
        raise ValueError(f"unknown step {op!r}")


def run_schedule(
    schedule: Schedule, *, config: SimConfig | None = None, trace: bool = False
) -> Outcome:
    cluster = Cluster(schedule.seed, config or SimConfig(rf=schedule.rf), trace=trace)
    cluster.bad = {cid: frozenset(nodes) for cid, nodes in schedule.bad}
    cluster.ledger.calm = schedule.calm
    cluster.ledger.count_starts = schedule.counts_starts
    cluster.ledger.strict_stops = not any(s.op in SPLIT_OPS for s in schedule.steps)
    for name in schedule.nodes:
        cluster.join(name)
    cluster.run(1.0)
    for step in schedule.steps:
        _apply(cluster, step)
        cluster.run(step.wait)
    violations = cluster.check()
    return Outcome(
        schedule,
        violations,
        cluster.log,
        cluster.sched.events,
        cluster.sched.now,
        cluster.ledger.moves,
        cluster.ledger.conflicts,
    )


# -- drawing -------------------------------------------------------------------------------------

_WEIGHTS: dict[str, dict[str, float]] = {
    "calm": {"start": 3, "stop": 1.5, "join": 2, "leave": 1.5, "drain": 1, "end": 0.7, "wait": 1.5},
    "crash": {
        "start": 3,
        "stop": 1.5,
        "join": 1.5,
        "leave": 1,
        "drain": 0.5,
        "end": 0.7,
        "wait": 1.5,
        "kill": 2,
        "restart": 1.5,
        "loss": 0.8,
        "slow": 0.4,
    },
    "split": {
        "start": 3,
        "stop": 1.5,
        "join": 1,
        "leave": 0.5,
        "drain": 0.5,
        "end": 0.5,
        "wait": 1.5,
        "kill": 0.8,
        "restart": 0.5,
        "partition": 1.5,
        "heal": 1.5,
        "pause": 1,
        "loss": 0.5,
    },
}
MAX_NAMES = 8


def _wait(rng: random.Random) -> float:
    roll = rng.random()
    if roll < 0.3:
        return round(rng.uniform(0.0, 0.05), 4)
    if roll < 0.7:
        return round(rng.uniform(0.05, 1.0), 3)
    return round(rng.uniform(1.0, 4.0), 3)


def random_schedule(seed: int, *, steps: int = 30, rf: int | None = None) -> Schedule:
    """A schedule drawn from ``seed``: 2 to 5 nodes, 3 to 12 children, ``steps`` steps of
    one of three flavours (planned moves only; crashes; splits), mostly rf=1."""
    rng = random.Random(seed)
    if rf is None:
        rf = 2 if rng.random() < 0.25 else 1
    count = rng.randint(max(2, rf + 1), 5)
    names = [f"n{i}" for i in range(count)]
    flavour = rng.choices(["calm", "crash", "split"], weights=[3, 4, 3])[0]
    weights = _WEIGHTS[flavour]
    ops, op_weights = list(weights), list(weights.values())
    alive = list(names)
    draining: set[str] = set()
    gone: set[str] = set()
    next_name = count
    next_child = 0
    started: list[tuple[str, bool]] = []
    split = False
    loss = False
    all_names = [f"n{i}" for i in range(MAX_NAMES)]
    bad: dict[str, tuple[str, ...]] = {}

    def new_children(k: int) -> list[str]:
        nonlocal next_child
        out = []
        for _ in range(k):
            cid = f"c{next_child}"
            next_child += 1
            out.append(cid)
            if rng.random() < 0.08:
                bad[cid] = tuple(sorted(rng.sample(all_names, rng.randint(1, 3))))
        return out

    def placeable() -> list[str]:
        return [n for n in alive if n not in draining]

    initial = new_children(rng.randint(3, 12))
    started.extend((c, False) for c in initial)
    out = [Step("start", (rng.choice(names), tuple(initial), False), round(rng.uniform(0, 3), 3))]
    while len(out) < steps:
        op = rng.choices(ops, weights=op_weights)[0]
        args: tuple[Any, ...] | None = None
        if op == "start" and placeable():
            transient = rng.random() < 0.3
            cids = new_children(rng.randint(1, 3))
            started.extend((c, transient) for c in cids)
            args = (rng.choice(placeable()), tuple(cids), transient)
        elif op == "stop" and started:
            picked = sorted({rng.choice(started)[0] for _ in range(rng.randint(1, 2))})
            args = (rng.choice(alive), tuple(picked))
        elif op == "end" and started:
            cid, transient = rng.choice(started)
            args = (cid, not transient or rng.random() < 0.3)
        elif op in ("kill", "restart", "leave", "drain"):
            victims = [n for n in alive if len(set(placeable()) - {n}) >= 1]
            if op == "drain":
                victims = [n for n in victims if n not in draining]
            if victims:
                victim = rng.choice(victims)
                args = (victim,)
                if op in ("kill", "leave"):
                    alive.remove(victim)
                    draining.discard(victim)
                    gone.add(victim)
                elif op == "restart":
                    draining.discard(victim)
                else:
                    draining.add(victim)
        elif op == "join" and (gone or next_name < MAX_NAMES):
            if gone and (next_name >= MAX_NAMES or rng.random() < 0.4):
                name = rng.choice(sorted(gone))  # a restart under the same name, later
                gone.discard(name)
            else:
                name = f"n{next_name}"
                next_name += 1
            alive.append(name)
            args = (name,)
        elif op == "partition" and not split and len(alive) >= 2:
            shuffled = rng.sample(alive, len(alive))
            cut = rng.randint(1, len(shuffled) - 1)
            args = ((tuple(sorted(shuffled[:cut])), tuple(sorted(shuffled[cut:]))),)
            split = True
        elif op == "heal" and split:
            args = ()
            split = False
        elif op == "pause":
            long = rng.random() < 0.7
            duration = rng.uniform(3.5, 9.0) if long else rng.uniform(0.2, 2.0)
            args = (rng.choice(alive), round(duration, 3))
        elif op == "loss":
            args = (0.0,) if loss else (rng.choice([0.02, 0.1, 0.3]),)
            loss = not loss
        elif op == "slow":
            args = (rng.choice(all_names),)
        elif op == "wait":
            args = ()
        if args is not None:
            out.append(Step(op, args, _wait(rng)))
    return Schedule(seed, rf, tuple(names), tuple(out), tuple(sorted(bad.items())))


# -- shrinking -----------------------------------------------------------------------------------


def kind_of(violation: str) -> str:
    """A violation without its times, names and numbers: what "failing the same way" means."""
    text = violation.split(" ", 1)[1] if violation.startswith("t=") else violation
    return re.sub(r"[\w.]*\d[\w.]*", "#", text)


def shrink(
    failing: Outcome, run: Callable[[Schedule], Outcome] = run_schedule, *, budget: int = 300
) -> Outcome:
    """The shortest failing prefix, then greedily without each step that is not needed."""
    kinds = {kind_of(v) for v in failing.violations}
    best = failing
    tries = [0]

    def fails(schedule: Schedule) -> Outcome | None:
        tries[0] += 1
        outcome = run(schedule)
        if {kind_of(v) for v in outcome.violations} & kinds:
            return outcome
        return None

    steps = failing.schedule.steps
    for n in range(1, len(steps)):
        if tries[0] >= budget:
            break
        found = fails(replace(failing.schedule, steps=steps[:n]))
        if found is not None:
            best = found
            break
    changed = True
    while changed and tries[0] < budget:
        changed = False
        steps = best.schedule.steps
        for i in reversed(range(len(steps))):
            if tries[0] >= budget:
                break
            steps = best.schedule.steps
            if i >= len(steps):
                continue
            found = fails(replace(best.schedule, steps=steps[:i] + steps[i + 1 :]))
            if found is not None:
                best = found
                changed = True
    return best


def report(outcome: Outcome) -> str:
    lines = [
        f"seed {outcome.schedule.seed}: {len(outcome.violations)} violations",
        *(f"  {v}" for v in outcome.violations),
        "reproduce with:",
        f"  run_schedule({outcome.schedule!r})",
        "run log:",
        *(f"  {line}" for line in outcome.log),
    ]
    return "\n".join(lines)
