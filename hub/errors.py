"""Exceptions raised by processhub. Every one derives from :class:`HubError`."""

from __future__ import annotations

__all__ = [
    "AlreadyStarted",
    "CallFailed",
    "HookArgumentError",
    "HookError",
    "HookIdConflict",
    "HubClosed",
    "HubError",
    "InvalidSpec",
    "MailboxFull",
    "NotDelivered",
    "NotFound",
    "QuorumLost",
    "ReservedHook",
    "StartFailed",
    "Timeout",
    "Unauthorized",
]


class HubError(Exception):
    """Base class of every processhub error."""


class HubClosed(HubError):
    """The hub (or hook manager) is not running: it was never started or it has stopped."""


class InvalidSpec(HubError, ValueError):
    """A child specification (or another argument) is malformed."""


class AlreadyStarted(HubError):
    """A child with this id already runs (``child_id`` and where it runs are attached)."""

    def __init__(self, child_id: str, where: object = None) -> None:
        self.child_id = child_id
        self.where = where
        at = f" at {where}" if where else ""
        super().__init__(f"child {child_id!r} is already started{at}")


class NotFound(HubError, LookupError):
    """No child with this id (or pid) runs anywhere the hub knows of."""

    def __init__(self, target: object) -> None:
        self.target = target
        super().__init__(f"no process found for {target!r}")


class StartFailed(HubError):
    """A child failed to start (its ``init`` raised or its start reference did not resolve)."""

    def __init__(self, child_id: str, reason: str) -> None:
        self.child_id = child_id
        self.reason = reason
        super().__init__(f"child {child_id!r} failed to start: {reason}")


class Timeout(HubError, TimeoutError):
    """A bounded wait ran out. Also a :class:`TimeoutError`, so either may be caught."""


class NodeUnreachable(Timeout):
    """The node that runs (or should start) a child could not be reached: its link broke or
    it did not answer. ``node`` names it. A message by child id waits for the child to come
    back (failover) before this is raised; it is a :class:`Timeout`, so either may be caught."""

    def __init__(self, node: str, detail: str = "") -> None:
        self.node = node
        super().__init__(f"node {node} is unreachable" + (f": {detail}" if detail else ""))


class MailboxFull(HubError):
    """A process's mailbox holds its configured maximum number of messages."""

    def __init__(self, target: object, limit: int) -> None:
        self.target = target
        self.limit = limit
        super().__init__(f"mailbox of {target} is full ({limit} messages)")


class QuorumLost(HubError):
    """The partition strategy has locked the hub: it refuses changes until quorum returns."""


class Unauthorized(HubError):
    """A peer message failed authentication."""


class HookError(HubError):
    """Base class of hook registration and dispatch errors."""


class HookIdConflict(HookError):
    """A handler with this id is already registered for this event."""


class ReservedHook(HookError):
    """An internal (strategy) handler cannot be cancelled without ``force=True``."""


class HookArgumentError(HookError, TypeError):
    """A declared user hook was fired with missing, unknown or mistyped arguments."""


class CallFailed(HubError):
    """The process handling a call crashed, or exited before it answered."""

    def __init__(self, target: object, reason: str) -> None:
        self.target = target
        self.reason = reason
        super().__init__(f"call to {target!r} failed: {reason}")


class NotDelivered(CallFailed):
    """The process exited (stopped, moved, crashed on an earlier message) before it handled
    this message: it was never processed, so sending it again is safe."""
