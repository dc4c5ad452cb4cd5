"""Partition strategies: whether the hub must lock itself because quorum is lost.

The hub calls :meth:`evaluate` after every change of its membership (and may call it
periodically) with the names of its live members and of the known ones (live, plus failed; a
node that left gracefully is not known any more). ``True`` means LOCKED: the hub refuses
changes (``QuorumLost``) until an evaluation answers ``False``. The local node always counts as
live. None of these strategies registers hook handlers or reads a clock of its own, except
:class:`DynamicQuorum`, which reads ``time.monotonic()`` when no ``now`` is passed.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection
from typing import Any

from hub import InvalidSpec
from hub.hooks import HookManager

from .base import check_float, check_int, check_node

__all__ = ["Divergence", "DynamicQuorum", "MajorityQuorum", "StaticQuorum"]


class _Partition:
    """Shared parts: the local node, argument checks, the last evaluation for describe()."""

    __slots__ = ("_last", "_local")

    name = "partition"

    def __init__(self) -> None:
        self._local: str | None = None
        self._last: dict[str, Any] = {}

    def attach(self, hooks: HookManager, local_node: str) -> None:
        if not isinstance(hooks, HookManager):
            raise InvalidSpec(f"{type(self).__name__}.attach: hooks must be a HookManager")
        check_node(f"{type(self).__name__}.attach", local_node)
        if self._local is not None and self._local != local_node:
            raise InvalidSpec(
                f"{type(self).__name__} is attached as node {self._local!r}: use one strategy "
                "instance per hub"
            )
        self._local = local_node

    @property
    def local_node(self) -> str | None:
        return self._local

    def _views(
        self, live_nodes: Collection[str], known_nodes: Collection[str]
    ) -> tuple[set[str], set[str]]:
        """(alive, known): the local node added to both, live nodes added to known."""
        owner = f"{type(self).__name__}.evaluate"
        for names, what in ((live_nodes, "live_nodes"), (known_nodes, "known_nodes")):
            if isinstance(names, str) or not isinstance(names, Collection):
                raise InvalidSpec(f"{owner}: {what} must be a collection of node names")
        alive = set(live_nodes)
        if self._local is not None:
            alive.add(self._local)
        return alive, alive | set(known_nodes)

    def _config(self) -> dict[str, Any]:
        return {}

    def describe(self) -> dict[str, Any]:
        return {"strategy": self.name, **self._config(), **self._last}

    def _record(self, locked: bool, alive: set[str], known: set[str]) -> bool:
        self._last = {"locked": locked, "alive": len(alive), "known": len(known)}
        return locked


class Divergence(_Partition):
    """Never locks (the default). Each side of a partition keeps running and starts the
    children it now owns; when the partition heals, reconciliation stops the surplus copies
    (the ring owner's copy wins) and fires ``CHILD_CONFLICT`` for each."""

    __slots__ = ()
    name = "divergence"

    def evaluate(self, live_nodes: Collection[str], known_nodes: Collection[str]) -> bool:
        alive, known = self._views(live_nodes, known_nodes)
        return self._record(False, alive, known)


class StaticQuorum(_Partition):
    """Locked while fewer than ``size`` nodes are alive, the local node included. With
    ``size`` above half the intended cluster size, at most one side of a partition runs."""

    __slots__ = ("size",)
    name = "static_quorum"

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = check_int("StaticQuorum", "size", size, 1)

    def __repr__(self) -> str:
        return f"StaticQuorum(size={self.size})"

    def _config(self) -> dict[str, Any]:
        return {"size": self.size}

    def evaluate(self, live_nodes: Collection[str], known_nodes: Collection[str]) -> bool:
        alive, known = self._views(live_nodes, known_nodes)
        return self._record(len(alive) < self.size, alive, known)


class MajorityQuorum(_Partition):
    """Locked unless a strict majority of the known nodes is alive: ``2 * alive > known``.
    An even split locks both halves. Nodes that left gracefully are not known any more, so a
    cluster shrunk on purpose keeps running."""

    __slots__ = ()
    name = "majority_quorum"

    def __repr__(self) -> str:
        return "MajorityQuorum()"

    def evaluate(self, live_nodes: Collection[str], known_nodes: Collection[str]) -> bool:
        alive, known = self._views(live_nodes, known_nodes)
        return self._record(2 * len(alive) <= len(known), alive, known)


class DynamicQuorum(_Partition):
    """Locked when more than ``threshold`` of the recent cluster went down within ``window``
    seconds: a sudden loss locks, a slow shrink does not.

    State: the time each known node was first seen down (``down_since``). At each evaluation
    at time ``now`` (``time.monotonic()`` if not given; the hub may pass its own clock):

    1. live nodes are up: their ``down_since`` and any accepted loss are cleared; nodes
       neither live nor known (they left gracefully) are forgotten the same way;
    2. known nodes that are not live, not down yet and not an accepted loss get
       ``down_since = now``;
    3. if the hub was NOT locked after the previous evaluation, nodes down for more than
       ``window`` seconds (``now - down_since > window``) become *accepted losses*: the
       cluster shrank slowly enough, they no longer count (until seen live again). While
       locked nothing expires: the lock holds until enough nodes come back (or join), or
       :meth:`reset` accepts every current loss;
    4. ``recent`` = live nodes + down nodes; LOCKED iff ``len(down) > threshold * len(recent)``.

    ``threshold`` in ``[0, 1)`` (0: any failure within the window locks); ``window`` > 0.
    """

    __slots__ = ("_accepted", "_down_since", "_locked", "threshold", "window")
    name = "dynamic_quorum"

    def __init__(self, threshold: float = 0.5, window: float = 30.0) -> None:
        super().__init__()
        value = check_float("DynamicQuorum", "threshold", threshold, minimum=0.0)
        if value >= 1.0:
            raise InvalidSpec(f"DynamicQuorum: threshold must be < 1, got {threshold!r}")
        self.threshold = value
        self.window = check_float("DynamicQuorum", "window", window, minimum=0.0, strict=True)
        self._down_since: dict[str, float] = {}
        self._accepted: set[str] = set()
        self._locked = False

    def __repr__(self) -> str:
        return f"DynamicQuorum(threshold={self.threshold}, window={self.window})"

    def _config(self) -> dict[str, Any]:
        return {
            "threshold": self.threshold,
            "window": self.window,
            "down": sorted(self._down_since),
            "accepted_losses": sorted(self._accepted),
        }

    def evaluate(
        self,
        live_nodes: Collection[str],
        known_nodes: Collection[str],
        now: float | None = None,
    ) -> bool:
        if now is None:
            now = time.monotonic()
        elif isinstance(now, bool) or not isinstance(now, int | float) or not math.isfinite(now):
            raise InvalidSpec(f"DynamicQuorum.evaluate: now must be a finite number, got {now!r}")
        alive, known = self._views(live_nodes, known_nodes)
        down, accepted = self._down_since, self._accepted
        for node in list(down):
            if node in alive or node not in known:
                del down[node]
        accepted &= known - alive
        for node in known - alive - accepted:
            down.setdefault(node, float(now))
        if not self._locked:
            for node, since in list(down.items()):
                if now - since > self.window:
                    del down[node]
                    accepted.add(node)
        recent = len(alive) + len(down)
        self._locked = len(down) > self.threshold * recent
        return self._record(self._locked, alive, known)

    def reset(self) -> None:
        """Accept every current loss: the live nodes are the cluster now (an operator's
        decision); the next evaluation unlocks unless new losses count."""
        self._accepted.update(self._down_since)
        self._down_since.clear()
        self._locked = False
