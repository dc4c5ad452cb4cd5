"""Ordered, bounded delivery of lifecycle events to a hub's hooks.

The supervisor reports starts, crashes and exits from synchronous task callbacks; the pump
queues them and one owned task awaits :meth:`HookManager.dispatch` for each in order, so hook
handlers (sync or async) see events in the order they happened and never block the supervisor.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from .hooks import HookManager
from .pacing import Pace

__all__ = ["EventPump"]

logger = logging.getLogger(__name__)

_BARRIER = object()


class EventPump:
    def __init__(self, hooks: HookManager, *, name: str, limit: int = 100_000) -> None:
        self._hooks = hooks
        self._name = name
        self._limit = limit
        self._queue: deque[tuple[Any, Any]] = deque()
        self._wake: asyncio.Future[None] | None = None
        self._task: asyncio.Task[None] | None = None
        self._overflowed = 0

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name=self._name)

    def wants(self, event: Any) -> bool:
        """Whether anything listens to ``event`` (callers skip building payloads otherwise)."""
        return self._hooks.has_handlers(event)

    def emit(self, event: Any, data: Any) -> None:
        if not self._hooks.has_handlers(event):
            return
        if self._task is None:
            self._hooks.dispatch_nowait(event, data)
            return
        if len(self._queue) >= self._limit:
            self._overflowed += 1
            if self._overflowed == 1 or self._overflowed % 10_000 == 0:
                logger.warning(
                    "%s: %d events queued for hooks (limit); dispatching %s out of order",
                    self._name, len(self._queue), event,
                )  # fmt: skip
            self._hooks.dispatch_nowait(event, data)
            return
        self._queue.append((event, data))
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    async def flush(self) -> None:
        """Wait until every event emitted so far has been dispatched."""
        if self._task is None or self._task.done():
            return
        await self._barrier()

    def _barrier(self) -> asyncio.Future[None]:
        """A future resolved once everything queued before it has been dispatched."""
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._queue.append((_BARRIER, done))
        wake = self._wake
        if wake is not None and not wake.done():
            wake.set_result(None)
        return done

    async def _run(self) -> None:
        queue = self._queue
        dispatch = self._hooks.dispatch
        loop = asyncio.get_running_loop()
        pace = Pace()
        while True:
            while queue:
                event, data = queue.popleft()
                if event is _BARRIER:
                    if not data.done():
                        data.set_result(None)
                else:
                    await dispatch(event, data)
                if pace.due():  # a burst of events does not hold the loop for long
                    await pace.pause()
            self._wake = loop.create_future()
            await self._wake
            self._wake = None

    async def aclose(self) -> None:
        """Deliver what is queued, then stop the task."""
        task, self._task = self._task, None
        if task is None:
            return
        if not task.done():
            await asyncio.wait((self._barrier(), task), return_when=asyncio.FIRST_COMPLETED)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
