"""Hooks: ordered, isolated handlers for the hub's events and for user hooks.

A :class:`HookManager` maps an event (a :class:`Hook` member, or a plain string for a user hook)
to handlers (:class:`HookHandler`). Dispatch calls the enabled handlers in priority order
(highest first, ties in registration order), awaits async ones, and logs and skips a handler
that raises, so a broken hook never stops the caller. The manager also fires declared user
hooks with type-checked keyword arguments and runs hooks on a schedule (interval, cron, daemon).

Hot path design: each handler is compiled at registration into ``call(data)``; each event keeps
an immutable snapshot of its enabled handlers (tuples) that a change replaces (copy-on-write),
so a dispatch's view costs nothing; :meth:`HookManager.dispatch` runs sync handlers eagerly and
returns a shared completed awaitable unless something needs awaiting; and counting is one
increment per dispatch.

See ``docs/hooks.md`` for the user guide.
"""

from __future__ import annotations

import asyncio
import dataclasses
import difflib
import importlib
import logging
import math
from collections.abc import Awaitable, Callable, Coroutine, Generator, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from inspect import isawaitable, iscoroutinefunction
from itertools import count
from types import CoroutineType, coroutine
from typing import TYPE_CHECKING, Any, Final, TypeAlias, cast

if TYPE_CHECKING:
    from croniter import croniter

from .errors import HookArgumentError, HookError, HookIdConflict, HubClosed, ReservedHook
from .events import Hook

__all__ = ["WILDCARD", "Hook", "HookHandler", "HookManager", "HookStats", "ScheduleHandle"]

logger = logging.getLogger(__name__)

#: ``logging`` caches ``isEnabledFor`` answers per level in this dict (the logger's own state)
#: and clears it whenever any level changes. Reading it saves a method call per dispatch; a
#: missing entry, or a Python without the cache, falls through to ``logger.debug``, which decides.
_LEVEL_CACHE: Final[dict[int, bool]] = getattr(logger, "_cache", {})
_DEBUG: Final = logging.DEBUG
_COROUTINE: Final = CoroutineType
_HOOK_VALUES: Final = frozenset(hook.value for hook in Hook)

Event: TypeAlias = Hook | str
ArgTypes: TypeAlias = type | tuple[type, ...]
_Call: TypeAlias = Callable[[Any], Any]
_Step: TypeAlias = tuple[_Call, str, bool, int]  # (call, handler id, is async, handlers after)


def _finished() -> Generator[None, None, None]:
    return
    yield  # a generator function: types.coroutine() makes its (exhausted) generator awaitable


def _completed_awaitable() -> Awaitable[None]:
    gen = coroutine(_finished)()
    for _ in cast(Generator[None, None, None], gen):
        pass
    return gen


#: What :meth:`HookManager.dispatch` returns when every handler already ran: an exhausted
#: generator-based coroutine. Awaiting it returns ``None`` at once, any number of times.
_DONE: Final = _completed_awaitable()


class _Wildcard:
    """Type of :data:`WILDCARD`; one instance, kept by ``copy`` and ``pickle``."""

    __slots__ = ()

    def __repr__(self) -> str:
        return "WILDCARD"

    def __reduce__(self) -> str:
        return "WILDCARD"


#: Placeholder in :attr:`HookHandler.args`: each occurrence is replaced by the event data.
WILDCARD: Final = _Wildcard()


@dataclass(frozen=True, slots=True)
class HookHandler:
    """One handler: ``fn(*args)`` with every :data:`WILDCARD` in ``args`` replaced by the data.

    ``fn`` is a callable (sync or async) or a ``"package.module:function"`` string (a dotted
    attribute path may follow the colon), imported when the handler is registered. Handlers of
    one event run by ``priority`` (highest first), ties in registration order.
    """

    id: str
    fn: Callable[..., Any] | str
    args: Sequence[Any] = (WILDCARD,)
    priority: int = 0
    enabled: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.id, str):
            raise TypeError(f"hook handler id must be a str, got {self.id!r}")
        if not self.id:
            raise ValueError("hook handler id must not be empty")
        if isinstance(self.fn, str):
            _parse_reference(self.fn, self.id)
        elif not callable(self.fn):
            raise TypeError(
                f"hook handler {self.id!r}: fn must be a callable or a 'package.module:function'"
                f" string, got {self.fn!r}"
            )
        if isinstance(self.args, str | bytes) or not isinstance(self.args, Sequence):
            raise TypeError(f"hook handler {self.id!r}: args must be a list or tuple")
        if isinstance(self.priority, bool) or not isinstance(self.priority, int):
            raise TypeError(f"hook handler {self.id!r}: priority must be an int")
        if not isinstance(self.enabled, bool):
            raise TypeError(f"hook handler {self.id!r}: enabled must be a bool")
        object.__setattr__(self, "args", tuple(self.args))


@dataclass(frozen=True, slots=True)
class HookStats:
    """Counters of one event. ``dispatched`` counts dispatch, dispatch_nowait, alter and fire
    calls (and daemon schedules); ``handlers_run`` counts handler calls, failed ones included;
    ``last_error`` is ``(handler_id, repr(exception))`` of the latest failure."""

    dispatched: int = 0
    handlers_run: int = 0
    failures: int = 0
    last_error: tuple[str, str] | None = None


@dataclass(frozen=True, slots=True)
class _Entry:
    handler: HookHandler
    call: _Call
    is_async: bool  # fn is an ``async def``: call(data) always returns a coroutine
    seq: int
    internal: bool


class _Snapshot:
    """The enabled handlers of one event at one moment, compiled. Immutable: a change installs
    a new snapshot, so a dispatch in progress keeps its own.

    ``steps`` are ``(call, id, is_async, handlers_after)`` in dispatch order; ``head`` the
    ``(call, id)`` pairs before the first ``async def`` handler (what dispatch runs eagerly);
    ``tail`` the steps from that handler on, and ``async_tail`` their pairs if all of them are
    ``async def`` (a leaner loop), else None.
    """

    __slots__ = ("async_tail", "head", "steps", "tail")

    def __init__(self, enabled: Sequence[_Entry] = ()) -> None:
        size = len(enabled)
        self.steps: tuple[_Step, ...] = tuple(
            (e.call, e.handler.id, e.is_async, size - i - 1) for i, e in enumerate(enabled)
        )
        split = next((i for i, e in enumerate(enabled) if e.is_async), size)
        self.head = tuple((e.call, e.handler.id) for e in enabled[:split])
        self.tail = self.steps[split:]
        self.async_tail: tuple[tuple[_Call, str], ...] | None = None
        if all(e.is_async for e in enabled[split:]):
            self.async_tail = tuple((e.call, e.handler.id) for e in enabled[split:])

    def after(self, hid: str) -> tuple[_Step, ...]:
        """The steps after handler ``hid`` (all of them if ``hid`` is not one)."""
        for index, step in enumerate(self.steps):
            if step[1] == hid:
                return self.steps[index + 1 :]
        return self.steps


class _Slot:
    """State of one event: its handlers, their current snapshot, and counters.

    Counting costs one increment per dispatch: ``handlers_run`` is derived from ``dispatched``
    and the snapshot size; before a new snapshot is installed, the runs of the old one are
    folded into ``run_base``. A dispatch cut short (cancelled) subtracts the handlers it did
    not reach; a daemon restart adds one.
    """

    __slots__ = ("dispatched", "entries", "epoch", "failures", "last_error", "run_base", "snap")

    def __init__(self) -> None:
        self.entries: tuple[_Entry, ...] = ()  # all handlers, dispatch order
        self.snap = _Snapshot()  # the enabled ones: what a dispatch runs
        self.dispatched = 0
        self.epoch = 0  # ``dispatched`` when ``snap`` was installed
        self.run_base = 0
        self.failures = 0
        self.last_error: tuple[str, str] | None = None

    @property
    def handlers_run(self) -> int:
        return self.run_base + (self.dispatched - self.epoch) * len(self.snap.steps)

    def install(self, entries: tuple[_Entry, ...]) -> None:
        self.run_base = self.handlers_run
        self.epoch = self.dispatched
        self.entries = entries
        self.snap = _Snapshot([e for e in entries if e.handler.enabled])


class ScheduleHandle:
    """A running schedule (see :meth:`HookManager.schedule`). ``cancel()`` stops it."""

    __slots__ = ("_cancelled", "_registry", "_tasks", "kind", "name")

    def __init__(self, name: str, kind: str, registry: set[ScheduleHandle]) -> None:
        self.name = name
        self.kind = kind  # "interval" | "cron" | "daemon"
        self._tasks: list[asyncio.Task[None]] = []
        self._cancelled = False
        self._registry = registry  # the manager's running schedules: we leave it when done

    @property
    def cancelled(self) -> bool:
        """True once :meth:`cancel` was called (also by :meth:`HookManager.aclose`)."""
        return self._cancelled

    def cancel(self) -> None:
        """Stop the schedule: cancel its tasks. Idempotent."""
        self._cancelled = True
        for task in self._tasks:
            task.cancel()
        self._registry.discard(self)

    async def wait_closed(self) -> None:
        """Wait until the schedule's tasks have ended (after :meth:`cancel`, or when every
        daemon handler returned)."""
        if self._tasks:
            await asyncio.wait(self._tasks)

    def _start(self, tasks: Iterable[asyncio.Task[None]]) -> None:
        self._tasks.extend(tasks)
        self._registry.add(self)
        for task in self._tasks:
            task.add_done_callback(self._task_done)

    def _task_done(self, _task: asyncio.Task[None]) -> None:
        if all(task.done() for task in self._tasks):
            self._registry.discard(self)

    def __repr__(self) -> str:
        state = "cancelled" if self._cancelled else "running"
        return f"<ScheduleHandle {self.kind} {self.name!r} {state}>"


class HookManager:
    """Registry and dispatcher of hook handlers. Works standalone or inside a hub.

    Not thread-safe: use it from its event loop's thread.
    """

    #: Daemon restart backoff in seconds: doubles from ``daemon_backoff_min`` up to
    #: ``daemon_backoff_max``; back to the minimum after a run that lasted at least the maximum.
    daemon_backoff_min: float = 0.1
    daemon_backoff_max: float = 30.0

    def __init__(self, *, name: str = "hooks", max_pending: int = 10_000) -> None:
        if not isinstance(name, str) or not name:
            raise ValueError("HookManager name must be a non-empty str")
        if isinstance(max_pending, bool) or not isinstance(max_pending, int) or max_pending < 1:
            raise ValueError(f"max_pending must be a positive int, got {max_pending!r}")
        self.name = name
        self.max_pending = max_pending
        self._slots: dict[str, _Slot] = {}
        self._active: set[str] = set()  # events with at least one enabled handler
        self._declared: dict[str, dict[str, ArgTypes]] = {}
        self._seq = count()
        self._tasks: set[asyncio.Task[None]] = set()  # every task the manager owns
        self._pending: set[asyncio.Task[None]] = set()  # fire(wait=False) and nowait tasks
        self._schedules: set[ScheduleHandle] = set()  # running ones
        self._closed = False

    def __repr__(self) -> str:
        return f"<HookManager {self.name!r} events={len(self._active)} tasks={len(self._tasks)}>"

    # -- registration ------------------------------------------------------------------------

    def register(
        self,
        event: Event,
        handler_or_list: HookHandler | Iterable[HookHandler],
        *,
        internal: bool = False,
    ) -> None:
        """Register one handler or a list for ``event``: all of them or, on any error (such as
        :class:`HookIdConflict` for an id already used for this event), none. ``internal``
        handlers (the hub's and strategies') can only be cancelled with ``force=True``."""
        key = _event_key(event)
        if type(key) is str and key not in self._declared:
            _refuse_misspelled(key)
        if isinstance(handler_or_list, HookHandler):
            handlers: list[HookHandler] = [handler_or_list]
        else:
            handlers = list(handler_or_list)
        slot = self._slots.get(key) or _Slot()
        taken = {entry.handler.id for entry in slot.entries}
        added: list[_Entry] = []
        for handler in handlers:
            if not isinstance(handler, HookHandler):
                raise TypeError(f"hook {key}: expected a HookHandler, got {handler!r}")
            if handler.id in taken:
                raise HookIdConflict(f"hook {key}: handler id {handler.id!r} is already registered")
            taken.add(handler.id)
            fn = _resolve(handler.fn, handler.id) if isinstance(handler.fn, str) else handler.fn
            call = _compile(fn, tuple(handler.args))
            is_async = iscoroutinefunction(fn)
            added.append(_Entry(handler, call, is_async, next(self._seq), internal))
        self._slots[key] = slot
        self._publish(key, slot, (*slot.entries, *added))

    def cancel(self, event: Event, id: str, *, force: bool = False) -> bool:
        """Remove handler ``id`` from ``event``; False (a no-op) if it is not registered.
        Raises :class:`ReservedHook` for an internal handler unless ``force``."""
        key, slot, entry = self._find(event, id)
        if entry is None:
            return False
        if entry.internal and not force:
            raise ReservedHook(
                f"hook {key}: handler {id!r} is internal; cancel it with force=True if you must"
            )
        assert slot is not None
        self._publish(key, slot, tuple(e for e in slot.entries if e is not entry))
        return True

    def enable(self, event: Event, id: str) -> bool:
        """Enable handler ``id``; False (a no-op) if it is not registered."""
        return self._set_enabled(event, id, True, force=False)

    def disable(self, event: Event, id: str, *, force: bool = False) -> bool:
        """Disable handler ``id`` (it stays registered, in place); False (a no-op) if it is not
        registered. Raises :class:`ReservedHook` for an internal handler unless ``force``."""
        return self._set_enabled(event, id, False, force=force)

    def registered(self, event: Event) -> list[HookHandler]:
        """The handlers of ``event`` in dispatch order, disabled ones included."""
        slot = self._slots.get(_event_key(event))
        return [entry.handler for entry in slot.entries] if slot else []

    def events(self) -> list[Event]:
        """Every event this manager has seen (registered or dispatched), in first-seen order:
        with :meth:`stats`, what the metrics report."""
        return list(self._slots)

    def has_handlers(self, event: Event) -> bool:
        """Whether ``event`` has an enabled handler: one set lookup, so callers can skip
        building a payload nobody will see."""
        return event in self._active

    def stats(self, event: Event) -> HookStats:
        """Counters of ``event`` (all zero for an event never seen)."""
        slot = self._slots.get(_event_key(event))
        if slot is None:
            return HookStats()
        return HookStats(slot.dispatched, slot.handlers_run, slot.failures, slot.last_error)

    # -- dispatch ----------------------------------------------------------------------------

    def dispatch(self, event: Event, data: Any) -> Awaitable[None]:
        """Call the enabled handlers of ``event`` with ``data``, in order; await the result.

        Eager: the sync handlers before the first ``async def`` one run during this call. If
        no handler needs awaiting, the result is a shared completed awaitable; otherwise it is
        a coroutine that runs the rest. Always await it (or hand it to
        ``asyncio.ensure_future``). A handler that raises an ``Exception`` is logged and
        counted, and the next one runs. The handlers are those registered when the call began.
        """
        try:
            slot = self._slots[event]
        except KeyError:
            slot = self._slot(event)
        slot.dispatched += 1
        snap = slot.snap
        for call, hid in snap.head:
            try:
                result = call(data)
            except Exception as exc:
                self._failed(slot, event, hid, exc)
                continue
            if result is not None and (type(result) is _COROUTINE or isawaitable(result)):
                return self._run_steps(slot, event, data, snap, snap.after(hid), result, hid)
        if snap.tail:
            if snap.async_tail is not None:
                return self._run_async_tail(slot, event, data, snap)
            return self._run_steps(slot, event, data, snap, snap.tail)
        if _LEVEL_CACHE.get(_DEBUG, True):
            logger.debug("completed %d handlers for %s", len(snap.steps), event)
        return _DONE

    async def _run_async_tail(self, slot: _Slot, event: Event, data: Any, snap: _Snapshot) -> None:
        """The rest of a dispatch when it is made of ``async def`` handlers only."""
        hid = ""
        try:
            for call, hid in snap.async_tail or ():
                try:
                    await call(data)
                except Exception as exc:
                    self._failed(slot, event, hid, exc)
        except BaseException:  # cancelled: the handlers after ``hid`` did not run
            slot.run_base -= len(snap.after(hid))
            raise
        if _LEVEL_CACHE.get(_DEBUG, True):
            logger.debug("completed %d handlers for %s", len(snap.steps), event)

    async def _run_steps(
        self,
        slot: _Slot,
        event: Event,
        data: Any,
        snap: _Snapshot,
        steps: tuple[_Step, ...],
        pending: Awaitable[Any] | None = None,
        pending_id: str = "",
    ) -> None:
        """The rest of a dispatch: ``steps``, after awaiting ``pending``, the awaitable that
        the sync handler ``pending_id`` returned (if any)."""
        left = len(steps)  # handlers that will not have run if we are cancelled now
        try:
            if pending is not None:
                try:
                    await pending
                except Exception as exc:
                    self._failed(slot, event, pending_id, exc)
            for call, hid, is_async, left in steps:  # noqa: B007 (left is read on cancel)
                try:
                    if is_async:
                        await call(data)
                        continue
                    result = call(data)
                    if result is not None and (type(result) is _COROUTINE or isawaitable(result)):
                        await result
                except Exception as exc:
                    self._failed(slot, event, hid, exc)
        except BaseException:
            slot.run_base -= left
            raise
        if _LEVEL_CACHE.get(_DEBUG, True):
            logger.debug("completed %d handlers for %s", len(snap.steps), event)

    async def alter(self, event: Event, data: Any) -> Any:
        """Fold ``data`` through the handlers: each one's return value (awaited if awaitable)
        is the next one's data. A handler that raises is logged and skipped. Returns the
        final data."""
        try:
            slot = self._slots[event]
        except KeyError:
            slot = self._slot(event)
        slot.dispatched += 1
        steps = slot.snap.steps
        left = len(steps)
        try:
            for call, hid, _, left in steps:  # noqa: B007 (left is read on cancel)
                try:
                    result = call(data)
                    if result is not None and (type(result) is _COROUTINE or isawaitable(result)):
                        result = await result
                except Exception as exc:
                    self._failed(slot, event, hid, exc)
                    continue
                data = result
        except BaseException:
            slot.run_base -= left
            raise
        if _LEVEL_CACHE.get(_DEBUG, True):
            logger.debug("completed %d handlers for %s", len(steps), event)
        return data

    def dispatch_nowait(self, event: Event, data: Any) -> None:
        """Dispatch from sync code (e.g. a callback) on the event loop's thread: sync handlers
        run inline, in order; an awaitable a handler returns runs in an owned task. Past
        ``max_pending`` pending tasks (or once closed) it is dropped, logged and counted as a
        failure."""
        try:
            slot = self._slots[event]
        except KeyError:
            slot = self._slot(event)
        slot.dispatched += 1
        steps = slot.snap.steps
        for call, hid, _, _ in steps:
            try:
                result = call(data)
            except Exception as exc:
                self._failed(slot, event, hid, exc)
                continue
            if result is not None and (type(result) is _COROUTINE or isawaitable(result)):
                self._background(slot, event, hid, result)
        if _LEVEL_CACHE.get(_DEBUG, True):
            logger.debug("completed %d handlers for %s", len(steps), event)

    # -- user hooks --------------------------------------------------------------------------

    def declare(self, name: str, /, **types: ArgTypes) -> None:
        """Declare user hook ``name`` with typed keyword arguments, checked by :meth:`fire`
        and :meth:`schedule`. Re-declaring with the same types is a no-op; other types, or a
        name of a :class:`Hook` event, are refused."""
        _user_hook(name, "declare")
        for arg, expected in types.items():
            if not _is_arg_type(expected):
                raise TypeError(
                    f"hook {name!r}: type of argument {arg!r} must be a type or a "
                    f"tuple of types, got {expected!r}"
                )
        previous = self._declared.get(name)
        if previous is not None and previous != types:
            raise HookError(f"hook {name!r} is already declared with other arguments")
        self._declared[name] = dict(types)

    async def fire(self, name: str, /, *, wait: bool = True, **kwargs: Any) -> None:
        """Dispatch user hook ``name``; its handlers get the ``kwargs`` dict as data. Declared
        arguments are checked first (:class:`HookArgumentError`, no handler runs). With
        ``wait=False`` it returns at once and the dispatch runs in an owned task."""
        self._check_open()
        self._check_arguments(name, kwargs, "fire")
        if wait:
            await self.dispatch(name, kwargs)
            return
        if len(self._pending) >= self.max_pending:
            raise HookError(f"hook {name!r}: {self.max_pending} fired hooks are pending")
        task = self._spawn(self._dispatch_later(name, kwargs), f"{self.name}:fire:{name}")
        self._track_pending(task)

    def schedule(
        self,
        name: str,
        /,
        *,
        interval: float | None = None,
        cron: str | None = None,
        daemon: bool = False,
        **kwargs: Any,
    ) -> ScheduleHandle:
        """Run user hook ``name`` with ``kwargs`` every ``interval`` seconds, at the times of
        the ``cron`` expression, or (``daemon=True``) once, each handler as long-lived work in
        its own task, restarted with backoff when it raises. Needs a running event loop."""
        self._check_open()
        if (interval is not None) + (cron is not None) + bool(daemon) != 1:
            raise ValueError("schedule() needs exactly one of interval=, cron= or daemon=True")
        self._check_arguments(name, kwargs, "schedule")
        _running_loop(f"schedule({name!r})")
        if interval is not None:
            if isinstance(interval, bool) or not isinstance(interval, int | float):
                raise TypeError(f"schedule {name!r}: interval must be a number of seconds")
            if not math.isfinite(interval) or interval <= 0:
                raise ValueError(f"schedule {name!r}: interval must be positive and finite")
            handle = ScheduleHandle(name, "interval", self._schedules)
            jobs = [(self._every(name, float(interval), kwargs), f"interval:{name}")]
        elif cron is not None:
            _validate_cron(name, cron)
            handle = ScheduleHandle(name, "cron", self._schedules)
            jobs = [(self._on_cron(name, cron, kwargs), f"cron:{name}")]
        else:
            slot = self._slot(name)
            if not slot.snap.steps:
                raise HookError(f"daemon hook {name!r} has no enabled handler")
            slot.dispatched += 1
            handle = ScheduleHandle(name, "daemon", self._schedules)
            jobs = [
                (self._daemon(slot, name, hid, call, kwargs), f"daemon:{name}:{hid}")
                for call, hid, _, _ in slot.snap.steps
            ]
        handle._start([self._spawn(job, f"{self.name}:{label}") for job, label in jobs])
        return handle

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        """True once :meth:`aclose` was called."""
        return self._closed

    async def aclose(self) -> None:
        """Cancel every schedule, daemon and pending task and await them. Afterwards
        :meth:`fire` and :meth:`schedule` raise :class:`HubClosed`; dispatch still works (with
        no background tasks). Idempotent."""
        self._closed = True
        for handle in list(self._schedules):
            handle.cancel()
        current = asyncio.current_task()
        while tasks := [t for t in self._tasks if t is not current and not t.done()]:
            for task in tasks:
                task.cancel()
            await asyncio.wait(tasks)

    # -- internals ---------------------------------------------------------------------------

    def _slot(self, event: Event) -> _Slot:
        key = _event_key(event)
        slot = self._slots.get(key)
        if slot is None:
            slot = self._slots[key] = _Slot()
        return slot

    def _find(self, event: Event, hid: str) -> tuple[str, _Slot | None, _Entry | None]:
        key = _event_key(event)
        slot = self._slots.get(key)
        if slot is not None:
            for entry in slot.entries:
                if entry.handler.id == hid:
                    return key, slot, entry
        return key, slot, None

    def _set_enabled(self, event: Event, hid: str, enabled: bool, *, force: bool) -> bool:
        key, slot, entry = self._find(event, hid)
        if entry is None:
            return False
        if entry.internal and not enabled and not force:
            raise ReservedHook(
                f"hook {key}: handler {hid!r} is internal; disable it with force=True if you must"
            )
        assert slot is not None
        if entry.handler.enabled != enabled:
            new = dataclasses.replace(
                entry, handler=dataclasses.replace(entry.handler, enabled=enabled)
            )
            self._publish(key, slot, tuple(new if e is entry else e for e in slot.entries))
        return True

    def _publish(self, key: str, slot: _Slot, entries: Iterable[_Entry]) -> None:
        """Install a new handler list: new tuples, so running dispatches keep their snapshot."""
        slot.install(tuple(sorted(entries, key=lambda e: (-e.handler.priority, e.seq))))
        if slot.snap.steps:
            self._active.add(key)
        else:
            self._active.discard(key)

    def _failed(self, slot: _Slot, event: Event, hid: str, exc: BaseException) -> None:
        slot.failures += 1
        slot.last_error = (hid, repr(exc))
        logger.error("hook %s: handler %r failed: %r", event, hid, exc, exc_info=exc)

    def _check_open(self) -> None:
        if self._closed:
            raise HubClosed(f"hook manager {self.name!r} is closed")

    def _check_arguments(self, name: str, kwargs: dict[str, Any], what: str) -> None:
        _user_hook(name, what)
        declared = self._declared.get(name)
        if declared is None:
            return
        for arg in declared:
            if arg not in kwargs:
                raise HookArgumentError(f"hook {name!r}: missing argument {arg!r}")
        for arg, value in kwargs.items():
            expected = declared.get(arg)
            if expected is None:
                raise HookArgumentError(f"hook {name!r}: unknown argument {arg!r}")
            if not isinstance(value, expected):
                raise HookArgumentError(
                    f"hook {name!r}: argument {arg!r} must be {_type_names(expected)}, "
                    f"got {type(value).__name__}"
                )

    def _spawn(self, coro: Coroutine[Any, Any, None], label: str) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro, name=label)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _track_pending(self, task: asyncio.Task[None]) -> None:
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    def _background(self, slot: _Slot, event: Event, hid: str, awaitable: Awaitable[Any]) -> None:
        """Run the awaitable a handler returned (from dispatch_nowait) in an owned task."""
        if self._closed:
            reason = "the hook manager is closed"
        elif len(self._pending) >= self.max_pending:
            reason = f"{self.max_pending} handler tasks are pending"
        else:
            try:
                asyncio.get_running_loop()
            except RuntimeError:
                reason = "no running event loop"
            else:
                task = self._spawn(
                    self._guard(slot, event, hid, awaitable), f"{self.name}:nowait:{event}:{hid}"
                )
                self._track_pending(task)
                return
        close = getattr(awaitable, "close", None)
        if callable(close):
            close()  # a coroutine that will never run: close it (no "never awaited" warning)
        self._failed(slot, event, hid, HookError(f"async handler dropped: {reason}"))

    async def _guard(self, slot: _Slot, event: Event, hid: str, awaitable: Awaitable[Any]) -> None:
        try:
            await awaitable
        except Exception as exc:
            self._failed(slot, event, hid, exc)

    async def _dispatch_later(self, event: Event, data: Any) -> None:
        await self.dispatch(event, data)

    async def _every(self, name: str, interval: float, kwargs: dict[str, Any]) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time() + interval
        while True:
            await asyncio.sleep(due - loop.time())
            await self.dispatch(name, dict(kwargs))
            due = _next_due(due, interval, loop.time())

    async def _on_cron(self, name: str, expression: str, kwargs: dict[str, Any]) -> None:
        after = _wall_now()
        while True:
            try:
                due = _next_cron_time(expression, after)
            except Exception:
                logger.exception(
                    "hook %s: cron %r has no next time; schedule ends", name, expression
                )
                return
            delay = (due - _wall_now()).total_seconds()
            if delay > 0:
                await asyncio.sleep(delay)
                continue  # plan again: the wall clock may have been set while we slept
            await self.dispatch(name, dict(kwargs))
            after = max(due, _wall_now())

    async def _daemon(
        self, slot: _Slot, name: str, hid: str, call: _Call, kwargs: dict[str, Any]
    ) -> None:
        loop = asyncio.get_running_loop()
        delay = self.daemon_backoff_min
        while True:
            started = loop.time()
            try:
                result = call(dict(kwargs))
                if result is not None and isawaitable(result):
                    await result
                return
            except Exception as exc:
                ran = loop.time() - started  # before the failure is logged (that takes time)
                self._failed(slot, name, hid, exc)
            if ran >= self.daemon_backoff_max:
                delay = self.daemon_backoff_min  # it ran a long time: not a crash loop
            logger.warning("hook %s: daemon handler %r restarts in %.3g s", name, hid, delay)
            await asyncio.sleep(delay)
            slot.run_base += 1
            delay = min(delay * 2, self.daemon_backoff_max)


# -- helpers (pure) ------------------------------------------------------------------------------


def _event_key(event: Event) -> str:
    """The dict key of ``event``: the :class:`Hook` member for hub events (so the hub's own
    lookups hit by identity), else the string itself."""
    if isinstance(event, Hook):
        return event
    if not isinstance(event, str) or not event:
        raise TypeError(f"a hook event is a Hook member or a non-empty str, got {event!r}")
    try:
        return Hook(event)
    except ValueError:
        return event


def near_hub_event(name: str) -> str | None:
    """The hub event that ``name`` looks like a misspelling of (``"child_crashd"`` ->
    ``"child_crashed"``), or ``None``. Pure; a similarity ratio of at least 0.85 counts."""
    if name in _HOOK_VALUES:
        return None
    close = difflib.get_close_matches(name.lower(), _HOOK_VALUES, n=1, cutoff=0.85)
    return close[0] if close else None


def _refuse_misspelled(name: str) -> None:
    """Registering for a name that is not a hub event but nearly is: almost surely a typo that
    would never fire. A user hook of that name is accepted once declared."""
    near = near_hub_event(name)
    if near is not None:
        raise HookError(
            f"hook {name!r} is not a hub event: did you mean {near!r} (Hook.{Hook(near).name})? "
            f"If {name!r} is a user hook of yours, declare it first: declare({name!r}, ...)"
        )


def _user_hook(name: str, what: str) -> None:
    if not isinstance(name, str) or not name:
        raise TypeError(f"{what}(): a user hook name is a non-empty str, got {name!r}")
    if name in _HOOK_VALUES:
        raise HookError(f"{what}(): {name!r} is a hub event; use dispatch() for hub events")


def _parse_reference(ref: str, hid: str) -> tuple[str, list[str]]:
    module, colon, path = ref.partition(":")
    attrs = path.split(".")
    if not colon or not all(p.isidentifier() for p in (*module.split("."), *attrs)):
        raise ValueError(
            f"hook handler {hid!r}: fn {ref!r} is not a 'package.module:function' reference"
        )
    return module, attrs


def _resolve(ref: str, hid: str) -> Callable[..., Any]:
    """Import ``"package.module:attr.path"``; a :class:`HookError` names the handler."""
    module, attrs = _parse_reference(ref, hid)
    try:
        obj: Any = importlib.import_module(module)
        for attr in attrs:
            obj = getattr(obj, attr)
    except Exception as exc:  # ImportError, AttributeError or whatever the module raised
        raise HookError(f"hook handler {hid!r}: cannot resolve {ref!r}: {exc!r}") from exc
    if not callable(obj):
        raise HookError(f"hook handler {hid!r}: {ref!r} is not callable")
    return cast(Callable[..., Any], obj)


def _compile(fn: Callable[..., Any], args: tuple[Any, ...]) -> _Call:
    """``call(data)`` doing ``fn(*args)`` with each WILDCARD replaced by ``data``, in the
    cheapest form: ``fn`` itself for the default ``(WILDCARD,)``."""
    holes = [i for i, arg in enumerate(args) if arg is WILDCARD]
    if holes == [0] and len(args) == 1:
        return fn
    if not holes:
        return lambda _data: fn(*args)
    if len(holes) == 1:
        head, tail = args[: holes[0]], args[holes[0] + 1 :]
        return lambda data: fn(*head, data, *tail)
    return lambda data: fn(*[data if arg is WILDCARD else arg for arg in args])


def _is_arg_type(expected: object) -> bool:
    if isinstance(expected, tuple):
        return bool(expected) and all(isinstance(t, type) for t in expected)
    return isinstance(expected, type)


def _type_names(expected: ArgTypes) -> str:
    if isinstance(expected, tuple):
        return " or ".join(t.__name__ for t in expected)
    return expected.__name__


def _next_due(due: float, interval: float, now: float) -> float:
    """The next tick of an interval schedule on the grid ``due + k * interval``: the one after
    ``due``, or, after an overrun, the first one after ``now`` (missed ticks are skipped, and
    the grid does not drift)."""
    nxt = due + interval
    if nxt <= now:
        nxt += (math.floor((now - nxt) / interval) + 1) * interval
    return nxt


def _wall_now() -> datetime:
    return datetime.now().astimezone()


def _croniter() -> type[croniter]:
    try:
        from croniter import croniter
    except ImportError as exc:
        raise HookError("cron schedules need croniter: pip install 'processhub[cron]'") from exc
    return croniter


def _validate_cron(name: str, expression: str) -> None:
    if not isinstance(expression, str) or not _croniter().is_valid(expression):
        raise ValueError(f"schedule {name!r}: invalid cron expression {expression!r}")
    try:
        _next_cron_time(expression, _wall_now())
    except ValueError as exc:  # e.g. "0 0 30 2 *": well formed, but never matches
        raise ValueError(f"schedule {name!r}: cron expression {expression!r}: {exc}") from exc


def _next_cron_time(expression: str, after: datetime) -> datetime:
    """The first time strictly after ``after`` matching ``expression`` (a pure planner)."""
    return _croniter()(expression, after).get_next(datetime)


def _running_loop(what: str) -> asyncio.AbstractEventLoop:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        raise HookError(f"{what} needs a running event loop") from None
