"""Virtual time and the modelled network.

:class:`Scheduler` is a virtual clock with one event queue (``heapq``); events at the same time
run in the order they were scheduled, so a run is a function of its seed. :class:`Network`
carries :class:`Frame` objects between node incarnations (a name and a boot id) like the hub's
peer links: each link (sender boot to receiver boot) is FIFO, different links reorder freely; a
frame to a boot that is gone fails at once (the connection is refused: the sender learns it), a
frame across a partition or hit by random loss vanishes silently (the sender does not learn it,
as with a frame written into a link that breaks), and a frame still in flight when a partition
starts is lost on arrival.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from .node import SimNode

__all__ = ["Frame", "Network", "Scheduler"]


class Scheduler:
    """A virtual clock and its event queue."""

    __slots__ = ("_queue", "_seq", "events", "now")

    def __init__(self) -> None:
        self.now = 0.0
        self._queue: list[tuple[float, int, Callable[..., None], tuple[Any, ...]]] = []
        self._seq = 0
        self.events = 0  # events run so far (a cost measure)

    def at(self, when: float, fn: Callable[..., None], *args: Any) -> None:
        self._seq += 1
        now = self.now
        heapq.heappush(self._queue, (when if when > now else now, self._seq, fn, args))

    def after(self, delay: float, fn: Callable[..., None], *args: Any) -> None:
        self.at(self.now + delay, fn, *args)

    def run_until(self, until: float) -> None:
        """Run every event due at or before ``until``; the clock ends at ``until``."""
        queue = self._queue
        pop = heapq.heappop
        while queue and queue[0][0] <= until:
            when, _, fn, args = pop(queue)
            self.now = when
            self.events += 1
            fn(*args)
        self.now = max(self.now, until)


class Frame(NamedTuple):
    """One frame on a link: a one-way frame (``rid == 0``), a request (``rid > 0``) or the
    reply to request ``rid`` (``kind == "reply"``, ``payload == (error, value)``)."""

    kind: str
    rid: int
    payload: Any
    members: tuple[tuple[str, str], ...] = ()  # a state's sender's members: (name, boot)


class Resolver(Protocol):
    def incarnation(self, name: str) -> SimNode | None: ...


class Network:
    """Links between node incarnations: latency, per-link FIFO, loss, partitions."""

    def __init__(
        self,
        sched: Scheduler,
        rng: random.Random,
        resolver: Resolver,
        latency: tuple[float, float],
    ) -> None:
        self.sched = sched
        self.rng = rng
        self.resolver = resolver
        self.latency = latency
        self.loss = 0.0
        self.groups: dict[str, int] | None = None  # a partition: node name -> group
        self._last: dict[tuple[str, str], float] = {}
        self.sent = 0
        self.lost = 0

    def reachable(self, a: str, b: str) -> bool:
        groups = self.groups
        return groups is None or groups.get(a, 0) == groups.get(b, 0)

    def send(self, src: SimNode, dst: str, boot: str, frame: Frame) -> bool:
        """Send ``frame`` from ``src`` to incarnation ``(dst, boot)``. False: refused (that
        boot is gone); True: sent, which does not mean it arrives."""
        target = self.resolver.incarnation(dst)
        if target is None or target.boot != boot or not target.alive:
            return False
        self.sent += 1
        rng = self.rng
        groups = self.groups
        if (groups is not None and groups.get(src.name, 0) != groups.get(dst, 0)) or (
            self.loss and rng.random() < self.loss
        ):
            self.lost += 1
            return True
        key = (src.boot, boot)  # boot ids are unique: one link per pair of incarnations
        lo, hi = self.latency
        arrive = self.sched.now + lo + (hi - lo) * rng.random()
        last = self._last.get(key, 0.0)
        if arrive <= last:
            arrive = last + 1e-9  # FIFO per link
        self._last[key] = arrive
        self.sched.at(arrive, self._arrive, src, target, frame)
        return True

    def _arrive(self, src: SimNode, dst: SimNode, frame: Frame) -> None:
        if not self.reachable(src.name, dst.name):
            self.lost += 1  # a partition began while it was on its way
            return
        dst.dispatch(dst.receive, (src.name, src.boot, frame))
