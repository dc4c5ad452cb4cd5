"""Cooperative time slicing for long synchronous loops.

The hub shares its event loop with the membership protocol, which answers probes within a
fraction of a second: a loop that plans, decodes or starts 100,000 children in one go would
block those answers, get the node suspected, and turn a busy moment into a failover. Such
loops give the event loop a turn once their slice is used up::

    pace = Pace()
    for item in items:
        work(item)
        if pace.due():
            await pace.pause()
"""

from __future__ import annotations

import asyncio
import time

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
