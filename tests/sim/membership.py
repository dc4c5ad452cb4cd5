"""The modelled failure detector (not SWIM itself: :mod:`tests.unit.swimsim` tests that).

The truth about subject ``X`` as observer ``O`` should see it is ``(boot, draining)`` when X's
current incarnation is alive, not paused, still hosts the hub and is reachable from O, else
``None``. Whenever the truth about a subject changes, every observer is scheduled to look again
after a random delay: ``detect`` when the subject became unreachable (a death, a partition, a
pause: the detection period), ``notice`` when it became reachable or changed its metadata (a
join, a heal, a new boot, a drain announcement), ``leave`` for a graceful leave. When the look
comes, the observer adopts whatever the truth is *then* (a partition healed before anyone
noticed it goes unnoticed). A paused observer looks when it resumes.

A new incarnation learns every member at once, before any of them learns about it (SWIM's join
push-pull with a seed, then gossip), unless ``atomic_join`` is off: then it notices each member
after its own delay too, and may hear from a member (a registry snapshot) before it lists it.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from typing import TYPE_CHECKING

from .network import Network, Scheduler

if TYPE_CHECKING:
    from .node import SimNode

__all__ = ["Membership"]

Seen = tuple[str, bool] | None


class Membership:
    def __init__(
        self,
        sched: Scheduler,
        rng: random.Random,
        net: Network,
        nodes: dict[str, SimNode],
        *,
        detect: tuple[float, float],
        notice: tuple[float, float],
        leave: tuple[float, float],
        atomic_join: bool = True,
    ) -> None:
        self.sched = sched
        self.rng = rng
        self.net = net
        self.nodes = nodes  # name -> current incarnation (the cluster's dict)
        self.delays = {"detect": detect, "notice": notice, "leave": leave}
        self.draining: set[str] = set()  # names whose current incarnation announced a drain
        self.atomic_join = atomic_join

    def truth(self, observer: str, subject: str) -> Seen:
        node = self.nodes.get(subject)
        if (
            node is None
            or not node.alive
            or node.paused
            or not self.net.reachable(observer, subject)
        ):
            return None
        return (node.boot, subject in self.draining)

    def believed(self, observer: SimNode, subject: str) -> Seen:
        boot = observer.members.get(subject)
        return None if boot is None else (boot, subject in observer.draining)

    def changed(self, subjects: Iterable[str], how: str, after: float = 0.0) -> None:
        """The truth about ``subjects`` changed: every other live observer looks again later
        (``after`` plus a random delay)."""
        lo, hi = self.delays[how]
        lo, hi = lo + after, hi + after
        rng = self.rng
        names = sorted(self.nodes)
        for subject in subjects:
            for name in names:
                observer = self.nodes[name]
                if name == subject or not observer.alive:
                    continue
                delay = lo + (hi - lo) * rng.random()
                observer.later(delay, self._look, observer, subject, how)

    def joined(self, node: SimNode) -> None:
        """A new incarnation looks at every other node (its seeds' member lists)."""
        lo, hi = self.delays["notice"]
        if not self.atomic_join:
            for name in sorted(self.nodes):
                if name != node.name:
                    node.later(lo + (hi - lo) * self.rng.random(), self._look, node, name)
            self.changed([node.name], "notice")
            return
        first = lo + (hi - lo) * self.rng.random()
        for name in sorted(self.nodes):
            if name != node.name:
                node.later(first, self._look, node, name)
        self.changed([node.name], "notice", after=first)

    def _look(self, observer: SimNode, subject: str, how: str = "notice") -> None:
        seen = self.truth(observer.name, subject)
        if seen != self.believed(observer, subject):
            observer.topology(subject, seen, left=how == "leave")

    def disagreements(self) -> list[str]:
        """Where some live observer's view differs from the truth (empty: all agree)."""
        out = []
        for name in sorted(self.nodes):
            observer = self.nodes[name]
            if not observer.alive:
                continue
            for subject in sorted(self.nodes):
                if subject != name and self.truth(name, subject) != self.believed(
                    observer, subject
                ):
                    out.append(f"{name} sees {subject} as {self.believed(observer, subject)}")
        return out
