"""Processes: the children a hub runs.

A child is either a :class:`Process` subclass (``init``, ``handle_cast``, ``handle_call``,
``terminate``, and the handover pair used by hot migration) or a function process
``async def fn(ctx, *args, **kwargs)`` that reads its mailbox with ``await ctx.receive()``.

The mailbox is deliberately lean: an idle process owns no queue at all, only the one future it
awaits, so it costs less memory than a raw task waiting on an :class:`asyncio.Queue`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from .errors import CallFailed, MailboxFull, NotDelivered, Timeout
from .pid import Pid

if TYPE_CHECKING:
    from .hub import Hub

__all__ = [
    "NORMAL_REASONS",
    "NO_STATE",
    "Arrival",
    "Call",
    "Handed",
    "Process",
    "ProcessContext",
    "ProcessExit",
]

#: Exit reasons that count as a normal exit (a ``transient`` child is not restarted).
NORMAL_REASONS = frozenset(("normal", "shutdown"))


class ProcessExit(BaseException):
    """Raised by :meth:`ProcessContext.stop` to end the process with ``reason``.

    A ``BaseException`` so that ``except Exception`` in user code does not swallow it.
    """

    def __init__(self, reason: Any = "normal") -> None:
        super().__init__(reason)
        self.reason = reason


class Call:
    """A request that expects a reply. :class:`Process` subclasses never see it (their
    ``handle_call`` return value is the reply); a function process receives it from
    :meth:`ProcessContext.receive` and answers with :meth:`reply` or :meth:`fail`."""

    __slots__ = ("_future", "message")

    def __init__(self, message: Any, future: asyncio.Future[Any]) -> None:
        self.message = message
        self._future = future

    def reply(self, value: Any) -> None:
        if not self._future.done():
            self._future.set_result(value)

    def fail(self, error: BaseException) -> None:
        if not self._future.done():
            self._future.set_exception(error)

    @property
    def answered(self) -> bool:
        return self._future.done()

    def __repr__(self) -> str:
        return f"Call({self.message!r})"


class _NoState:
    __slots__ = ()

    def __repr__(self) -> str:
        return "NO_STATE"


#: No state was handed over (a cold move, a function process, or a handover that failed).
NO_STATE: Any = _NoState()


class Arrival:
    """How the new instance of a moving child begins.

    Its mailbox is held (messages sent to it queue up, none is handled) until :meth:`complete`:
    then the old instance's leftover messages come first, in their order, and a handed-over
    state (anything but :data:`NO_STATE`) goes to ``receive_handover`` before any message.
    A cold move completes its arrival at once; a hot move once the old instance has stopped.
    """

    __slots__ = ("future",)

    def __init__(self) -> None:
        self.future: asyncio.Future[tuple[list[Any], Any]] = (
            asyncio.get_running_loop().create_future()
        )

    @classmethod
    def of(cls, messages: list[Any], state: Any = NO_STATE) -> Arrival:
        arrival = cls()
        arrival.complete(messages, state)
        return arrival

    def complete(self, messages: list[Any], state: Any = NO_STATE) -> bool:
        """Let the new instance begin; False when it was completed (or abandoned) before."""
        if self.future.done():
            return False
        self.future.set_result((messages, state))
        return True

    @property
    def done(self) -> bool:
        return self.future.done()


class Handed:
    """What a class process returns when it stops for a move with handover: its stop reason,
    its ``handover_state()`` (:data:`NO_STATE` when that raised: ``error`` says why)."""

    __slots__ = ("error", "reason", "state")

    def __init__(self, reason: Any, state: Any, error: str = "") -> None:
        self.reason = reason
        self.state = state
        self.error = error


class _Mode:
    """Mailbox control message: the copy's mode changed (``on_mode_change``)."""

    __slots__ = ("mode",)

    def __init__(self, mode: str) -> None:
        self.mode = mode


class _Stop:
    """Mailbox control message: finish (``terminate``) and exit; optionally hand over state."""

    __slots__ = ("handover", "reason")

    def __init__(self, reason: Any, handover: bool) -> None:
        self.reason = reason
        self.handover = handover


class ProcessContext:
    """What a process knows about itself, and its mailbox.

    ``child_id``, ``pid``, ``node`` and ``hub`` identify it; ``mode`` is ``"active"`` (or
    ``"passive"`` for a replica under replication).
    """

    __slots__ = ("_box", "_held", "_limit", "_waiter", "child_id", "hub", "mode", "pid")

    def __init__(self, child_id: str, pid: Pid, hub: Hub | None, limit: int) -> None:
        self.child_id = child_id
        self.pid = pid
        self.hub = hub
        self.mode = "active"
        self._limit = limit
        self._box: deque[Any] | None = None
        self._waiter: asyncio.Future[Any] | None = None
        self._held = False

    @property
    def node(self) -> str:
        return self.pid.node

    def __repr__(self) -> str:
        return f"<ProcessContext {self.child_id!r} {self.pid}>"

    # -- the process side -------------------------------------------------------------------

    async def receive(self, timeout: float | None = None) -> Any:
        """The next message (a cast's payload, or a :class:`Call` to answer).

        Waits up to ``timeout`` seconds (forever when ``None``) and raises :class:`hub.Timeout`.
        A message is never lost: if the wait is cancelled just as a message arrives, the
        message stays first in the mailbox.
        """
        box = self._box
        if box and not self._held:
            return box.popleft()
        if self._waiter is not None:
            raise RuntimeError(f"{self.child_id}: receive() is already waiting in another task")
        waiter: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiter = waiter
        try:
            if timeout is None:
                return await waiter
            async with asyncio.timeout(timeout):
                return await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return waiter.result()
            raise Timeout(f"{self.child_id}: no message within {timeout}s") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._requeue(waiter.result())
            raise
        finally:
            if self._waiter is waiter:
                self._waiter = None

    def stop(self, reason: Any = "normal") -> NoReturn:
        """End this process with ``reason`` (call it from the process itself).

        ``"normal"`` and ``"shutdown"`` are normal exits; any other reason is abnormal, so a
        ``transient`` child is restarted after it.
        """
        raise ProcessExit(reason)

    def pending(self) -> int:
        """Number of messages waiting in the mailbox."""
        return len(self._box) if self._box else 0

    # -- the hub side -----------------------------------------------------------------------

    def deliver(self, message: Any) -> None:
        """Put ``message`` in the mailbox; raises :class:`hub.MailboxFull` at the limit."""
        waiter = self._waiter
        if waiter is not None and not waiter.done() and not self._held:
            self._waiter = None
            waiter.set_result(message)
            return
        box = self._box
        if box is None:
            box = self._box = deque()
        elif len(box) >= self._limit:
            raise MailboxFull(self.pid, self._limit)
        box.append(message)

    def _inherit(self, previous: ProcessContext) -> None:
        """Take over the mailbox of the previous instance (a restart keeps the mailbox)."""
        self._box, previous._box = previous._box, None

    def _hold(self) -> None:
        """Queue messages without handing any to the process (a moving child's new copy)."""
        self._held = True

    def _release(self, front: list[Any]) -> None:
        """Stop holding: ``front`` (the old copy's leftovers) first, then what queued here."""
        self._held = False
        if front:
            merged = deque(front)
            if self._box:
                merged.extend(self._box)
            self._box = merged
        box = self._box
        waiter = self._waiter
        if box and waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_result(box.popleft())

    def _take(self, reason: Any) -> list[Any]:
        """Empty the mailbox of an instance that moves away: returns the casts in order (the
        next instance handles them); the calls fail with :class:`hub.NotDelivered`, which
        their callers retry where the child went (so each call is answered once)."""
        box, self._box = self._box, None
        if not box:
            return []
        casts = []
        for message in box:
            kind = type(message)
            if kind is Call:
                message.fail(NotDelivered(self.child_id, f"moved away ({reason!r})"))
            elif kind is not _Stop and kind is not _Mode:
                casts.append(message)
        return casts

    def _requeue(self, message: Any) -> None:
        if self._box is None:
            self._box = deque()
        self._box.appendleft(message)

    def _request_mode(self, mode: str) -> None:
        """Switch to ``mode`` now; the process's ``on_mode_change`` runs before its next
        message (a control message: it jumps the queue and ignores the limit)."""
        self.mode = mode
        self._request_stop(_Mode(mode))

    def _request_stop(self, stop: _Stop | _Mode) -> None:
        """Control messages jump the queue and ignore the limit."""
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            self._waiter = None
            waiter.set_result(stop)
        else:
            self._requeue(stop)

    def _close(self, reason: Any) -> int:
        """Fail every pending call (the process is gone) and drop the rest. Returns the number
        of messages that were still queued."""
        box, self._box = self._box, None
        if not box:
            return 0
        for message in box:
            if type(message) is Call:
                message.fail(NotDelivered(self.child_id, f"process exited ({reason!r})"))
        return len(box)


class Process:
    """Base class of a class-based child. Override what you need; every hook is optional.

    ``self.ctx`` (a :class:`ProcessContext`) is set before :meth:`init` runs.
    """

    ctx: ProcessContext

    async def init(self, *args: Any, **kwargs: Any) -> None:
        """Called once per instance with the spec's ``args`` and ``kwargs``. If it raises,
        the start fails (first start) or counts as a crash (restart)."""

    async def handle_cast(self, message: Any) -> None:
        """A fire-and-forget message."""

    async def handle_call(self, message: Any) -> Any:
        """A request; the return value is the reply. Raising crashes the process (the caller
        gets :class:`hub.CallFailed`) and the restart policy applies."""
        raise NotImplementedError(f"{type(self).__name__} does not handle calls")

    async def terminate(self, reason: Any) -> None:
        """Called when the process stops (``reason`` is the stop reason) or crashes (``reason``
        is the exception). Bounded by the spec's ``shutdown_timeout``."""

    async def on_mode_change(self, mode: str) -> None:
        """This copy's mode changed under replication (``ctx.mode`` already says ``mode``):
        ``"active"`` when a replica becomes the primary (its primary's node left or died),
        ``"passive"`` when a primary stops being it. Runs in the process's task, before the
        next message."""

    def handover_state(self) -> Any:
        """State to hand to the next instance when the child moves under ``HotSwap`` (msgpack
        data, at most the strategy's ``max_state_bytes`` encoded). Called after the message
        being handled, before :meth:`terminate`; if it raises, the move goes ahead without
        the state (``HANDOVER_SKIPPED``)."""
        return None

    async def receive_handover(self, state: Any) -> None:
        """Receive the previous instance's :meth:`handover_state`: after :meth:`init`, once
        the old instance has stopped, before any message."""


class Progress(Protocol):
    """What :func:`serve` reports to the supervisor."""

    def ready(self, ctx: ProcessContext) -> None: ...

    def started(self, ctx: ProcessContext) -> None: ...


async def serve(
    proc: Process,
    ctx: ProcessContext,
    args: tuple[Any, ...],
    kwargs: Any,
    arrival: Arrival | None,
    progress: Progress,
) -> Any:
    """Run a :class:`Process` instance: init, then (a moving child) report
    ``progress.ready(ctx)`` and wait for its ``arrival`` (state, leftover messages), report
    ``progress.started(ctx)``, then serve the mailbox.

    Returns the exit reason, or a :class:`Handed` when stopped with handover.
    """
    await proc.init(*args, **kwargs)
    if arrival is not None:
        progress.ready(ctx)
        messages, state = await arrival.future
        try:
            if state is not NO_STATE:
                await proc.receive_handover(state)
        finally:  # a failed receive_handover is a crash: the next instance gets the messages
            ctx._release(messages)
    progress.started(ctx)
    try:
        # ctx.receive and proc.handle_cast are looked up per message: kept bound in locals,
        # they would be two more objects per child for the garbage collector to scan
        while True:
            message = await ctx.receive()
            kind = type(message)
            if kind is Call:
                try:
                    reply = await proc.handle_call(message.message)
                except ProcessExit as exit_:
                    message.fail(CallFailed(ctx.child_id, f"process exited ({exit_.reason!r})"))
                    raise
                except Exception as exc:
                    failed = CallFailed(ctx.child_id, repr(exc))
                    failed.__cause__ = exc
                    message.fail(failed)
                    raise
                message.reply(reply)
            elif kind is _Mode:
                await proc.on_mode_change(message.mode)
            elif kind is _Stop:
                if not message.handover:
                    await proc.terminate(message.reason)
                    return message.reason
                handed = Handed(message.reason, NO_STATE)
                try:
                    handed.state = proc.handover_state()
                except Exception as exc:
                    handed.error = f"handover_state() raised {exc!r}"
                await proc.terminate(message.reason)
                return handed
            else:
                await proc.handle_cast(message)
    except ProcessExit as exit_:
        await proc.terminate(exit_.reason)
        raise
    except Exception as exc:
        try:
            await proc.terminate(exc)
        except Exception as terminate_error:
            exc.add_note(f"terminate() also raised: {terminate_error!r}")
        raise
