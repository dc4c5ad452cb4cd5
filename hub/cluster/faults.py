"""Fault injection for tests: drop, delay and partition peer traffic. Off unless enabled.

A :class:`Faults` object given to a :class:`~hub.cluster.node.Node` applies to ALL traffic
between that node and its peers: the membership messages of its HTTP transport and the frames of
its hub links (:mod:`hub.cluster.links`) alike, so a partition in a test is a real partition.
Each node consults its own object, on both sides of every hop:

- outgoing: a message or frame to a blocked peer (partition, or a random drop) is silently lost
  (a request then times out with its own timeout); :meth:`Faults.latency` is waited before it is
  written (per link, in order);
- incoming: a message or frame from a blocked peer is dropped on arrival;
- a link cannot be opened across a partition (the dial fails, and the other side refuses it).

It never sends anything itself; it only says "drop this" or "wait this long first". A node
without one (``faults=None``, the default) pays a single ``is None`` check per message.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass, field

__all__ = ["Faults"]


@dataclass
class Faults:
    """``drop``: probability in [0, 1] that a message is lost. ``delay``: a uniform random
    delay range in seconds. ``groups``: a partition; a peer is reachable only if it is in the
    same group as this node (nodes listed in no group reach nobody but themselves).
    ``dropped`` counts the messages and frames lost so far."""

    drop: float = 0.0
    delay: tuple[float, float] = (0.0, 0.0)
    groups: list[frozenset[str]] | None = None
    rng: random.Random = field(default_factory=random.Random)
    dropped: int = 0

    def __post_init__(self) -> None:
        self.set_drop(self.drop)
        self.set_delay(*self.delay)

    def set_drop(self, probability: float) -> None:
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"drop probability must be within [0, 1], got {probability}")
        self.drop = probability

    def set_delay(self, low: float, high: float) -> None:
        if not 0.0 <= low <= high:
            raise ValueError(f"delay range must satisfy 0 <= low <= high, got {low}, {high}")
        self.delay = (low, high)

    def partition(self, groups: Iterable[Iterable[str]] | None) -> None:
        """Split the cluster into ``groups`` of node names; ``None`` heals it."""
        self.groups = None if groups is None else [frozenset(g) for g in groups]

    def partitioned(self, me: str, peer: str) -> bool:
        """Whether the partition separates ``me`` from ``peer`` (random drops aside)."""
        if self.groups is None or peer == me:
            return False
        return peer not in next((g for g in self.groups if me in g), frozenset())

    def blocks(self, me: str, peer: str) -> bool:
        """Whether a message between ``me`` and ``peer`` is lost (partition or random drop);
        a lost message is counted in :attr:`dropped`."""
        if self.partitioned(me, peer) or (self.drop and self.rng.random() < self.drop):
            self.dropped += 1
            return True
        return False

    def latency(self) -> float:
        """A delay to wait before sending a message, drawn from :attr:`delay`."""
        low, high = self.delay
        return low if low == high else self.rng.uniform(low, high)
