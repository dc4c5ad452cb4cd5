"""The local runtime of one hub: supervisor, local registry partition, pid index, event pump
and the hub's owned background tasks, behind one public interface.

The :class:`~hub.Hub` facade and the cluster :class:`~hub.coordinator.Coordinator` both work
through this interface; neither touches the other's internals. The runtime tells an observer
(the coordinator, in a cluster) about every local start and removal so that desired state and
peers stay current.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from .errors import HubClosed, HubError, InvalidSpec, NotFound
from .events import (
    ChildBuried,
    ChildCrashed,
    ChildStopped,
    Hook,
    PidInserted,
    PidRemoved,
    PidUpdate,
)
from .events_pump import EventPump
from .hooks import HookManager
from .pid import Pid
from .process import Arrival, ProcessContext
from .registry import Entry, Registry
from .spec import ChildSpec, StopResult
from .supervisor import Backoff, Child, Leftover, RemovalKind, Supervisor

if TYPE_CHECKING:
    from .hub import Hub

__all__ = ["LocalRuntime", "RuntimeObserver", "StartItem"]

logger = logging.getLogger(__name__)

#: ``(spec, metadata, epoch)``: a child to start here, and the epoch of its desired record.
StartItem = tuple[ChildSpec, Mapping[str, Any], int]


class RuntimeObserver(Protocol):
    """Told synchronously about local changes (must not block)."""

    def local_changed(self, child_id: str) -> None: ...

    def local_removed(self, child_id: str, kind: RemovalKind, reason: Any) -> None: ...


class LocalRuntime:
    """What runs on this node for one hub."""

    def __init__(
        self,
        hub: Hub,
        hooks: HookManager,
        *,
        node: str,
        boot_id: str,
        mailbox_limit: int,
        backoff: Backoff | None,
        event_queue_limit: int,
    ) -> None:
        self._hub = hub
        self._mailbox_limit = mailbox_limit
        self._backoff = backoff
        self.hooks = hooks
        self.events = EventPump(hooks, name=f"hub:{hub.hub_id}:events", limit=event_queue_limit)
        self.observer: RuntimeObserver | None = None
        self.accepting = False  # messages are delivered only while the hub runs or drains
        self._tasks: set[asyncio.Task[Any]] = set()
        self._by_local_id: dict[int, Child] = {}
        self._epochs: dict[str, int] = {}
        self._removal_tags: dict[str, str] = {}
        self._arriving: set[str] = set()  # moving in: their startup is reported when they run
        self.bind(node, boot_id)

    def bind(self, node: str, boot_id: str) -> None:
        """(Re)create the supervisor and registry under this node identity (before start)."""
        self.node = node
        self.boot_id = boot_id
        self.registry = Registry(node, boot_id)
        self.supervisor = Supervisor(
            node,
            boot_id,
            self,
            hub=self._hub,
            mailbox_limit=self._mailbox_limit,
            backoff=self._backoff,
        )

    @property
    def mailbox_limit(self) -> int:
        return self._mailbox_limit

    # -- children ------------------------------------------------------------------------------

    def get(self, child_id: str) -> Child | None:
        return self.supervisor.get(child_id)

    def child_ids(self) -> list[str]:
        return list(self.supervisor.children)

    def children(self) -> Mapping[str, Child]:
        return self.supervisor.children

    def epoch(self, child_id: str) -> int:
        return self._epochs.get(child_id, 0)

    async def start(
        self,
        items: Iterable[StartItem],
        timeout: float,
        arrivals: Mapping[str, Arrival] | None = None,
        modes: Mapping[str, str] | None = None,
    ) -> dict[str, Pid | HubError]:
        """Start children here (every path: requests, failover, migration) and report the
        started ones with ``PROCESS_STARTUPS``. A child with an arrival moves in (see
        :meth:`Supervisor.start_batch`)."""
        batch = []
        arrivals = arrivals or {}
        for spec, metadata, epoch in items:
            if spec.id not in self.supervisor.children:
                self._epochs[spec.id] = epoch
            batch.append((spec, metadata, arrivals.get(spec.id)))
        results = await self.supervisor.start_batch(batch, timeout, modes)
        for cid, outcome in results.items():
            if not isinstance(outcome, Pid) and cid not in self.supervisor.children:
                self._epochs.pop(cid, None)
        waiting = {cid for cid, a in arrivals.items() if not a.done}
        # a copy that moves in is reported once it runs (its arrival may never come)
        self._arriving.update(c for c in waiting if isinstance(results.get(c), Pid))
        if self.events.wants(Hook.PROCESS_STARTUPS):
            started = [
                (s.id, r)
                for s, _, _ in batch
                if isinstance(r := results[s.id], Pid) and s.id not in waiting
            ]
            if started:
                self.events.emit(Hook.PROCESS_STARTUPS, started)
        return results

    async def stop(
        self, ids: Iterable[str], reason: Any, tags: Mapping[str, str] | None = None
    ) -> StopResult:
        """Stop local children; ``tags`` say, per child, why it leaves the registry (e.g.
        ``"moved:<node>"``)."""
        supervisor = self.supervisor
        ids = list(ids)
        present = [cid for cid in ids if supervisor.get(cid) is not None]
        errors: list[tuple[str, HubError]] = [
            (cid, NotFound(cid)) for cid in ids if supervisor.get(cid) is None
        ]
        if tags:
            self._removal_tags.update((cid, tags[cid]) for cid in present if cid in tags)
        outcomes = await asyncio.gather(
            *(supervisor.stop(cid, reason) for cid in present), return_exceptions=True
        )
        stopped: list[tuple[str, list[str]]] = []
        for cid, outcome in zip(present, outcomes, strict=True):
            self._removal_tags.pop(cid, None)
            if isinstance(outcome, HubError):
                errors.append((cid, outcome))
            elif isinstance(outcome, BaseException):
                raise outcome
            else:
                stopped.append((cid, [self.node]))
        await self.events.flush()
        return StopResult("error" if errors else "ok", stopped, errors)

    def cancel_start(self, child_id: str) -> bool:
        """Stop a child still in its first ``init`` at once (see
        :meth:`Supervisor.cancel_start`)."""
        return self.supervisor.cancel_start(child_id)

    def set_mode(self, child_id: str, mode: str) -> str | None:
        """See :meth:`Supervisor.set_mode`."""
        return self.supervisor.set_mode(child_id, mode)

    async def move_out(
        self, ids: Iterable[str], target: str, *, handover: bool
    ) -> dict[str, Leftover]:
        """Stop local children that move to ``target`` (their registry removal says
        ``"moved:<target>"``); returns what each left for its next instance."""
        supervisor = self.supervisor
        present = [cid for cid in ids if supervisor.get(cid) is not None]
        tag = f"moved:{target}"
        self._removal_tags.update((cid, tag) for cid in present)
        try:
            outcomes = await asyncio.gather(
                *(supervisor.move_out(cid, handover=handover) for cid in present),
                return_exceptions=True,
            )
        finally:
            for cid in present:
                self._removal_tags.pop(cid, None)
        left: dict[str, Leftover] = {}
        for cid, outcome in zip(present, outcomes, strict=True):
            if isinstance(outcome, Leftover):
                left[cid] = outcome
            elif not isinstance(outcome, HubError):
                raise outcome
        await self.events.flush()
        return left

    def target(self, target: str | Pid) -> ProcessContext:
        """The mailbox a message for ``target`` (a child id or an exact pid) goes to."""
        if isinstance(target, Pid):
            child = self._by_local_id.get(target.local_id)
            ctx = child.ctx if child is not None else None
            if ctx is None or ctx.pid != target or child is None or child.state != "running":
                raise NotFound(target)
            return ctx
        if not isinstance(target, str):
            raise InvalidSpec(f"target must be a child id or a Pid, got {type(target).__name__}")
        if not self.accepting:
            raise HubClosed(f"hub {self._hub.hub_id!r} is not running")
        child = self.supervisor.get(target)
        if child is None or child.ctx is None:
            raise NotFound(target)
        return child.ctx  # starting or restarting: the mailbox is kept for the next instance

    # -- owned tasks ---------------------------------------------------------------------------

    def own(self, coro: Coroutine[Any, Any, Any], what: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the hub owns (cancelled and awaited by :meth:`close_tasks`)."""
        task = asyncio.get_running_loop().create_task(coro, name=f"hub:{self._hub.hub_id}:{what}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)
        return task

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error(
                "hub %s: background %s failed",
                self._hub.hub_id,
                task.get_name(),
                exc_info=task.exception(),
            )

    async def close_tasks(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # -- supervisor listener (synchronous, called from task callbacks) -------------------------

    def child_started(self, child: Child, restarted: bool) -> None:
        ctx = child.ctx
        assert ctx is not None
        pid = ctx.pid
        cid = child.spec.id
        self._by_local_id[pid.local_id] = child
        self.registry.put(Entry.of(child.spec, pid, child.metadata, self._epochs.get(cid, 0)))
        if self.observer is not None:
            self.observer.local_changed(cid)
        events = self.events
        if events.wants(Hook.REGISTRY_PID_INSERTED):
            events.emit(Hook.REGISTRY_PID_INSERTED, PidInserted(cid, [(self.node, pid)]))
        if restarted:
            events.emit(Hook.CHILD_PROCESS_PID_UPDATE, PidUpdate(self.node, cid, pid))
            events.emit(Hook.PROCESS_STARTUPS, [(cid, pid)])
        elif cid in self._arriving:
            self._arriving.discard(cid)
            events.emit(Hook.PROCESS_STARTUPS, [(cid, pid)])

    def child_crashed(self, child: Child, error: BaseException, attempt: int) -> None:
        ctx = child.ctx
        if ctx is not None:
            self._by_local_id.pop(ctx.pid.local_id, None)
        self.events.emit(Hook.CHILD_CRASHED, ChildCrashed(child.spec.id, error, attempt))

    def child_removed(self, child: Child, kind: RemovalKind, reason: Any) -> None:
        cid = child.spec.id
        ctx = child.ctx
        if ctx is not None:
            self._by_local_id.pop(ctx.pid.local_id, None)
        self.registry.delete(cid, self._removal_tags.get(cid, kind))
        self._epochs.pop(cid, None)
        self._arriving.discard(cid)
        if self.observer is not None:
            self.observer.local_removed(cid, kind, reason)
        events = self.events
        events.emit(Hook.REGISTRY_PID_REMOVED, PidRemoved(cid, [self.node]))
        if kind == "stopped":
            events.emit(Hook.CHILD_STOPPED, ChildStopped(cid, reason))
        elif kind == "buried":
            events.emit(Hook.CHILD_BURIED, ChildBuried(cid, reason.error, reason.attempts))
