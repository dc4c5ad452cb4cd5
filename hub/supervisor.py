"""Local supervision of a node's children.

Restart policies follow Erlang/OTP: ``permanent`` children are always restarted, ``transient``
ones only after an abnormal exit (an exception, or :meth:`ProcessContext.stop` with a reason
other than ``"normal"``/``"shutdown"``), ``temporary`` ones never. A cancelled child task counts
as stopped, whatever its policy (asyncio's convention: cancellation is a request to stop).

More than ``spec.max_restarts`` restarts within ``spec.max_seconds`` *bury* the child: it is
removed and its last error stays queryable (:meth:`Supervisor.buried`). Restarts wait an
exponentially growing, jittered delay (:class:`Backoff`).

As in Akka, a restart keeps the mailbox: messages sent by child id while the child crashes and
restarts are handled by the next instance (the message being handled when it crashed is not
redelivered). Messages sent to the old pid are refused.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, NamedTuple, Protocol

from .errors import AlreadyStarted, HubError, NotFound, StartFailed, Timeout
from .pacing import Pace
from .pid import Pid
from .process import (
    NO_STATE,
    NORMAL_REASONS,
    Arrival,
    Handed,
    Process,
    ProcessContext,
    ProcessExit,
    _Stop,
    serve,
)
from .spec import ChildSpec, resolve_start

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["Backoff", "Buried", "Child", "Leftover", "Supervisor", "SupervisorListener"]

logger = logging.getLogger(__name__)

RemovalKind = Literal["stopped", "crashed", "buried"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delay before restart ``n`` (1-based): ``d = min(cap, base * 2**(n-1))``, then a
    uniformly random value in ``[d/2, d]`` ("equal jitter": bounded and never zero)."""

    base: float = 0.01
    cap: float = 1.0

    def __post_init__(self) -> None:
        if not (self.base > 0 and self.cap >= self.base):
            raise ValueError("Backoff needs 0 < base <= cap")

    def delay(self, attempt: int, rand: float) -> float:
        d: float = min(self.cap, self.base * 2.0 ** min(attempt - 1, 60))
        return d / 2 + d / 2 * rand


class Buried(NamedTuple):
    """A child that exhausted its restart intensity: its last error and crash count."""

    child_id: str
    spec: ChildSpec
    error: BaseException
    attempts: int
    at: float


class Leftover(NamedTuple):
    """What a child that moved away left for its next instance: the casts still queued (in
    order), its handed-over state (:data:`~hub.process.NO_STATE` if none) and, when its
    ``handover_state()`` failed, why."""

    messages: list[Any]
    state: Any
    error: str


class SupervisorListener(Protocol):
    """What the supervisor tells its owner (the hub); called synchronously, must not block."""

    def child_started(self, child: Child, restarted: bool) -> None: ...

    def child_crashed(self, child: Child, error: BaseException, attempt: int) -> None: ...

    def child_removed(self, child: Child, kind: RemovalKind, reason: Any) -> None:
        """``reason`` is the stop reason (``"stopped"``), the error (``"crashed"``, a
        temporary child) or the :class:`Buried` record (``"buried"``)."""


class _StartBatch:
    """Counts the children of one start request still in ``init``; one future for all."""

    __slots__ = ("future", "pending", "results")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.future: asyncio.Future[None] = loop.create_future()
        self.pending = 1  # the spawning itself (the batch yields to the loop meanwhile)
        self.results: dict[str, Pid | HubError] = {}

    def settle(self, child_id: str, outcome: Pid | HubError) -> None:
        self.results[child_id] = outcome
        self.release()

    def release(self) -> None:
        """One child (or the spawning of them all) is settled."""
        self.pending -= 1
        if self.pending == 0 and not self.future.done():
            self.future.set_result(None)


class Child:
    """The supervisor's record of one child across its restarts."""

    __slots__ = (
        "_batch",
        "_crashes",
        "_keep",
        "_leftover",
        "_stop_waiter",
        "_supervisor",
        "_timer",
        "ctx",
        "is_class",
        "metadata",
        "mode",
        "registered",
        "spec",
        "starts",
        "state",
        "task",
    )

    def __init__(
        self, supervisor: Supervisor, spec: ChildSpec, metadata: Mapping[str, Any]
    ) -> None:
        self._supervisor = supervisor
        self.spec = spec
        self.metadata = metadata
        self.ctx: ProcessContext | None = None
        self.is_class = False
        self.task: asyncio.Task[Any] | None = None
        self.state: Literal["starting", "running", "restarting", "stopping"] = "starting"
        self.starts = 0
        self.registered = False
        self._crashes: deque[float] | None = None
        self._batch: _StartBatch | None = None
        self._stop_waiter: asyncio.Future[Any] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self.mode = "active"  # "active" | "passive" (under replication)
        self._keep = False  # moving away: keep the mailbox's casts for the next instance
        self._leftover: list[Any] | None = None

    def __repr__(self) -> str:
        return f"<Child {self.spec.id!r} {self.state} {self.ctx.pid if self.ctx else None}>"

    # Callbacks of the child's task (methods, not closures: a node runs 100,000 children, and
    # every object each keeps alive is one more for the garbage collector to scan).

    def ready(self, ctx: ProcessContext) -> None:
        """A moving class process finished ``init``; it waits for its arrival."""
        if self.ctx is ctx and self.state == "starting":
            batch, self._batch = self._batch, None
            if batch is not None:
                batch.settle(self.spec.id, ctx.pid)

    def started(self, ctx: ProcessContext) -> None:
        """A class process finished ``init`` (and its arrival): it serves its mailbox."""
        if self.ctx is ctx and self.state == "starting" and self._stop_waiter is None:
            batch, self._batch = self._batch, None
            self._supervisor._mark_running(self)
            if batch is not None:
                batch.settle(self.spec.id, ctx.pid)

    def exited(self, task: asyncio.Task[Any]) -> None:
        if self.task is task:
            self._supervisor._on_exit(self, task)


class Supervisor:
    """Starts, restarts and stops the children of one node. Owns every child task."""

    def __init__(
        self,
        node: str,
        boot_id: str,
        listener: SupervisorListener,
        *,
        hub: Hub | None = None,
        mailbox_limit: int = 10_000,
        backoff: Backoff | None = None,
        buried_limit: int = 1_000,
        rng: random.Random | None = None,
    ) -> None:
        self.node = node
        self.boot_id = boot_id
        self.children: dict[str, Child] = {}
        self._listener = listener
        self._hub = hub
        self._mailbox_limit = mailbox_limit
        self._backoff = backoff or Backoff()
        self._rng = rng or random.Random()
        self._ids = itertools.count(1)
        self._starters: dict[str, tuple[bool, Any]] = {}
        self._buried: OrderedDict[str, Buried] = OrderedDict()
        self._buried_limit = buried_limit
        self._closing = False

    # -- queries -------------------------------------------------------------------------------

    def get(self, child_id: str) -> Child | None:
        return self.children.get(child_id)

    def buried(self) -> list[Buried]:
        """The most recently buried children (bounded), oldest first."""
        return list(self._buried.values())

    # -- starting ------------------------------------------------------------------------------

    async def start_batch(
        self,
        items: Iterable[tuple[ChildSpec, Mapping[str, Any], Arrival | None]],
        timeout: float,
        modes: Mapping[str, str] | None = None,
    ) -> dict[str, Pid | HubError]:
        """Start ``(spec, metadata, arrival)`` items; wait up to ``timeout`` for every
        ``init``. A child whose ``init`` has not finished by then is stopped and reported as
        :class:`hub.Timeout`. A child with an :class:`~hub.process.Arrival` (it moves in) is
        reported once its ``init`` finished; it runs (and is registered) once the arrival is
        complete."""
        batch = _StartBatch(asyncio.get_running_loop())
        results = batch.results
        pace = Pace()
        for spec, metadata, arrival in items:
            if pace.due():  # a large batch does not hold the event loop for long
                await pace.pause()
            if self._closing:
                results[spec.id] = HubError("supervisor is shutting down")
            elif spec.id in self.children:
                results[spec.id] = AlreadyStarted(spec.id, self.node)
            else:
                child = Child(self, spec, metadata)
                if modes:
                    child.mode = modes.get(spec.id, "active")
                try:
                    self._spawn(child, batch, arrival)
                except StartFailed as exc:
                    results[spec.id] = exc
        batch.release()
        if batch.pending:
            try:
                async with asyncio.timeout(timeout):
                    await asyncio.shield(batch.future)
            except TimeoutError:
                late = [c for c in self.children.values() if c._batch is batch]
                for child in late:
                    child._batch = None
                    results[child.spec.id] = Timeout(
                        f"{child.spec.id}: init did not finish within {timeout}s"
                    )
                await asyncio.gather(*(self.stop(c.spec.id, "shutdown") for c in late))
        return results

    def _resolve(self, ref: str) -> tuple[bool, Any]:
        try:
            return self._starters[ref]
        except KeyError:
            pass
        target = resolve_start(ref)
        if isinstance(target, type) and issubclass(target, Process):
            entry: tuple[bool, Any] = (True, target)
        elif inspect.iscoroutinefunction(target):
            entry = (False, target)
        else:
            raise TypeError(f"{ref} is neither a Process subclass nor an async function")
        self._starters[ref] = entry
        return entry

    def _spawn(
        self, child: Child, batch: _StartBatch | None, arrival: Arrival | None = None
    ) -> None:
        spec = child.spec
        try:
            is_class, target = self._resolve(spec.start)
        except (LookupError, TypeError) as exc:
            raise StartFailed(spec.id, str(exc)) from None
        ctx = ProcessContext(
            spec.id, Pid(self.node, self.boot_id, next(self._ids)), self._hub, self._mailbox_limit
        )
        if child.ctx is not None:
            ctx._inherit(child.ctx)
        ctx.mode = child.mode
        child.ctx = ctx
        child.is_class = is_class
        self.children[spec.id] = child
        if is_class:
            proc: Process = target()
            proc.ctx = ctx
            child.state = "starting"
            if batch is not None:
                child._batch = batch
                batch.pending += 1
            coro = serve(
                proc,
                ctx,
                spec.args,
                spec.kwargs,
                arrival,
                child,
            )
        else:
            coro = target(ctx, *spec.args, **spec.kwargs)
        task = asyncio.get_running_loop().create_task(coro, name=f"child:{spec.id}")
        child.task = task
        task.add_done_callback(child.exited)
        if not is_class:
            if batch is not None:
                batch.results[spec.id] = ctx.pid
            if arrival is None:
                self._mark_running(child)
            else:  # it runs at once, but its mailbox is held until the old copy is gone
                ctx._hold()
                arrival.future.add_done_callback(self._arrived_cb(child, ctx))

    def _arrived_cb(self, child: Child, ctx: ProcessContext) -> Callable[[Any], None]:
        def arrived(future: asyncio.Future[tuple[list[Any], Any]]) -> None:
            if future.cancelled() or child.ctx is not ctx or child.task is None:
                return
            ctx._release(future.result()[0])
            if child.state == "starting" and child._stop_waiter is None:
                self._mark_running(child)

        return arrived

    def _mark_running(self, child: Child) -> None:
        child.state = "running"
        restarted = child.starts > 0
        child.starts += 1
        child.registered = True
        self._listener.child_started(child, restarted)

    # -- exits ---------------------------------------------------------------------------------

    def _on_exit(self, child: Child, task: asyncio.Task[Any]) -> None:
        child.task = None
        error: BaseException | None = None
        handed: Handed | None = None
        if task.cancelled():
            reason: Any = "cancelled"
        else:
            exc = task.exception()
            if exc is None:  # a class process returns its stop reason; a function returns
                reason = task.result() if child.is_class else "normal"
                if isinstance(reason, Handed):
                    handed = reason
                    reason = reason.reason
            elif isinstance(exc, ProcessExit):
                reason = exc.reason
                if reason not in NORMAL_REASONS:
                    error = exc
            else:
                reason, error = exc, exc
        batch, child._batch = child._batch, None
        if child._stop_waiter is not None:
            self._remove(child, "stopped", reason)
            if batch is not None:  # stopped before its init finished: the start did not happen
                batch.settle(child.spec.id, NotFound(child.spec.id))
            if not child._stop_waiter.done():
                child._stop_waiter.set_result(handed)
        elif batch is not None:  # first init failed: the child never ran
            if child.ctx is not None:
                child.ctx._close(reason)
            self.children.pop(child.spec.id, None)
            why = repr(error) if error is not None else f"exited during init ({reason!r})"
            batch.settle(child.spec.id, StartFailed(child.spec.id, why))
        elif reason == "cancelled":
            self._remove(child, "stopped", reason)
        elif error is None:
            if child.spec.restart == "permanent" and not self._closing:
                self._schedule_restart(child, None)
            else:
                self._remove(child, "stopped", reason)
        else:
            self._crashed(child, error)

    def _crashed(self, child: Child, error: BaseException) -> None:
        spec = child.spec
        now = time.monotonic()
        crashes = child._crashes
        if crashes is None:
            crashes = child._crashes = deque()
        while crashes and crashes[0] <= now - spec.max_seconds:
            crashes.popleft()
        crashes.append(now)
        attempt = len(crashes)
        logger.warning("child %s crashed (attempt %d): %r", spec.id, attempt, error)
        self._listener.child_crashed(child, error, attempt)
        if spec.restart == "temporary" or self._closing:
            self._remove(child, "crashed", error)
        elif attempt > spec.max_restarts:
            logger.error(
                "child %s buried: %d crashes within %.1fs (max_restarts=%d); last error: %r",
                spec.id, attempt, spec.max_seconds, spec.max_restarts, error,
            )  # fmt: skip
            record = Buried(spec.id, spec, error, attempt, time.time())
            self._buried[spec.id] = record
            self._buried.move_to_end(spec.id)
            while len(self._buried) > self._buried_limit:
                self._buried.popitem(last=False)
            self._remove(child, "buried", record)
        else:
            self._schedule_restart(child, attempt)

    def _schedule_restart(self, child: Child, attempt: int | None) -> None:
        child.state = "restarting"
        delay = self._backoff.delay(attempt or 1, self._rng.random())
        child._timer = asyncio.get_running_loop().call_later(delay, self._restart, child)

    def _restart(self, child: Child) -> None:
        child._timer = None
        if self.children.get(child.spec.id) is not child or child._stop_waiter is not None:
            return
        try:
            self._spawn(child, None)
        except StartFailed as exc:
            self._crashed(child, exc)

    def _remove(self, child: Child, kind: RemovalKind, reason: Any) -> None:
        if child.ctx is not None:
            if child._keep:
                child._leftover = child.ctx._take(reason)
            else:
                child.ctx._close(reason)
        if self.children.get(child.spec.id) is child:
            del self.children[child.spec.id]
        child.state = "stopping"
        if child.registered:
            child.registered = False
            self._listener.child_removed(child, kind, reason)

    # -- stopping ------------------------------------------------------------------------------

    def set_mode(self, child_id: str, mode: str) -> str | None:
        """Switch a child's copy to ``mode``; returns the previous mode (``None``: no such
        child). A class process's ``on_mode_change(mode)`` runs before its next message."""
        child = self.children.get(child_id)
        if child is None:
            return None
        old = child.mode
        if old != mode:
            child.mode = mode
            ctx = child.ctx
            if ctx is not None:
                if child.is_class and child.state == "running":
                    ctx._request_mode(mode)
                else:  # a function process reads ctx.mode; a starting one starts in it
                    ctx.mode = mode
        return old

    async def move_out(self, child_id: str, *, handover: bool) -> Leftover:
        """Stop a child that moves to another node (reason ``"migrate"``): the casts still in
        its mailbox are kept, in order, for the next instance (calls fail with
        :class:`hub.NotDelivered`: their callers retry there); with ``handover`` a class
        process's ``handover_state()`` is taken after the message it is handling, before
        ``terminate``."""
        child = self.children.get(child_id)
        if child is None:
            raise NotFound(child_id)
        child._keep = True
        handed = await self.stop(child_id, "migrate", handover=handover)
        messages, child._leftover = child._leftover or [], None
        if isinstance(handed, Handed):
            return Leftover(messages, handed.state, handed.error)
        return Leftover(messages, NO_STATE, "")

    def cancel_start(self, child_id: str) -> bool:
        """Stop a child whose first ``init`` has not finished, at once: it is never registered
        and its start reports :class:`hub.NotFound`. False if it is not starting."""
        child = self.children.get(child_id)
        if (
            child is None
            or child.state != "starting"
            or child._batch is None
            or child._stop_waiter is not None
        ):
            return False
        self._begin_stop(child, "cancelled", handover=False)
        return True

    async def stop(self, child_id: str, reason: Any = "shutdown", *, handover: bool = False) -> Any:
        """Stop a child: ``terminate(reason)`` within ``shutdown_timeout``, then cancel.

        Returns a :class:`~hub.process.Handed` when ``handover`` and the child is a running
        class process, else ``None``.
        """
        child = self.children.get(child_id)
        if child is None:
            raise NotFound(child_id)
        if child._stop_waiter is not None:
            return await asyncio.shield(child._stop_waiter)
        task = child.task
        waiter = self._begin_stop(child, reason, handover=handover)
        if waiter.done():
            return waiter.result()
        assert task is not None
        timeout = child.spec.shutdown_timeout
        while True:
            done, _ = await asyncio.wait((waiter,), timeout=timeout)
            if done:
                return waiter.result()
            logger.warning("child %s did not stop within %.1fs; cancelling it", child_id, timeout)
            task.cancel()

    def _begin_stop(self, child: Child, reason: Any, *, handover: bool) -> asyncio.Future[Any]:
        """Ask ``child`` to stop (a running class process after its current message, anything
        else at once) and return the future its exit settles."""
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        child._stop_waiter = waiter
        if child._timer is not None:  # between restarts: nothing runs
            child._timer.cancel()
            child._timer = None
            self._remove(child, "stopped", reason)
            waiter.set_result(None)
            return waiter
        task = child.task
        ctx = child.ctx
        assert task is not None
        assert ctx is not None
        if child.state == "running" and child.is_class:
            ctx._request_stop(_Stop(reason, handover))
        else:
            task.cancel()
        return waiter

    async def close(self, reason: Any = "shutdown") -> None:
        """Stop every child (concurrently, each bounded by its ``shutdown_timeout``)."""
        self._closing = True
        for child in list(self.children.values()):
            if child._timer is not None:
                child._timer.cancel()
                child._timer = None
                child._stop_waiter = asyncio.get_running_loop().create_future()
                child._stop_waiter.set_result(None)
                self._remove(child, "stopped", reason)
        ids = list(self.children)
        results = await asyncio.gather(
            *(self.stop(cid, reason) for cid in ids), return_exceptions=True
        )
        for cid, result in zip(ids, results, strict=True):
            if isinstance(result, BaseException) and not isinstance(result, NotFound):
                logger.error("stopping child %s failed: %r", cid, result)
