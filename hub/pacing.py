"""Cooperative time slicing for long synchronous loops, and a rolling sweep.

The hub shares its event loop with the membership protocol, which answers probes within a
fraction of a second: a loop that plans, decodes or starts 100,000 children in one go would
block those answers, get the node suspected, and turn a busy moment into a failover. Such
loops give the event loop a turn once their slice is used up::

    pace = Pace()
    for item in items:
        work(item)
        if pace.due():
            await pace.pause()

or, for a plain map, ``await paced(work, items)``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

#: seconds of synchronous work between two turns of the event loop
SLICE = 0.02


class Pace:
    """A time slice: :meth:`due` says when it is used up, :meth:`pause` yields and starts the
    next one. Cheap enough to check once per item."""

    __slots__ = ("_slice", "_until")

    def __init__(self, slice_s: float = SLICE) -> None:
        self._slice = slice_s
        self._until = time.perf_counter() + slice_s

    def due(self) -> bool:
        return time.perf_counter() >= self._until

    async def pause(self) -> None:
        await asyncio.sleep(0)
        self._until = time.perf_counter() + self._slice


async def paced(function: Callable[[T], R], items: Iterable[T]) -> list[R]:
    """``[function(item) for item in items]``, with a turn of the event loop every slice."""
    pace = Pace()
    out = []
    for item in items:
        out.append(function(item))
        if pace.due():
            await pace.pause()
    return out


async def in_slices(
    work: Callable[[Sequence[T]], object], items: Sequence[T], size: int = 500
) -> None:
    """``work(items[i : i + size])`` for each slice of ``items`` in turn, with a turn of the
    event loop whenever a time slice is used up (for work that takes many items at once)."""
    pace = Pace()
    for i in range(0, len(items), size):
        work(items[i : i + size])
        if pace.due():
            await pace.pause()


class RollingSweep:
    """Visits a changing population ``size`` at a time: each :meth:`next` returns the next
    part of a round; a round is a snapshot of the population taken when the previous one was
    used up, so every member present at its start is visited once per round."""

    __slots__ = ("_rest", "size")

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self.size = size
        self._rest: list[str] = []

    def next(self, population: Callable[[], Iterable[str]]) -> list[str]:
        if not self._rest:
            self._rest = list(dict.fromkeys(population()))
        part = self._rest[-self.size :]
        del self._rest[-self.size :]
        return part

    def restart(self) -> None:
        """Forget the round under way (everyone was just visited some other way)."""
        self._rest.clear()
