"""processhub: a distributed process hub for Python asyncio.

The distribution is named ``processhub``; it installs the packages ``hub`` (the runtime) and
``strategies`` (pluggable policies).
"""

from .errors import (
    AlreadyStarted,
    CallFailed,
    HookArgumentError,
    HookError,
    HookIdConflict,
    HubClosed,
    HubError,
    InvalidSpec,
    MailboxFull,
    NodeUnreachable,
    NotDelivered,
    NotFound,
    QuorumLost,
    ReservedHook,
    StartFailed,
    Timeout,
    Unauthorized,
)
from .events import (
    ChildBuried,
    ChildConflict,
    ChildCrashed,
    ChildrenMigrated,
    ChildStarted,
    ChildStopped,
    HandoverDelivered,
    HandoverSkipped,
    Hook,
    MigrationFailed,
    ModeChanged,
    PidInserted,
    PidRemoved,
    PidUpdate,
    PriorityState,
    Redistribution,
)
from .hooks import WILDCARD, HookHandler, HookManager, HookStats, ScheduleHandle
from .hub import Hub
from .pid import Pid
from .process import Call, Process, ProcessContext, ProcessExit
from .spec import ChildSpec, RegistryRecord, StartResult, StopResult
from .supervisor import Backoff, Buried
from .tuning import tune_gc

__version__ = "0.1.0"

__all__ = [
    "WILDCARD",
    "AlreadyStarted",
    "Backoff",
    "Buried",
    "Call",
    "CallFailed",
    "ChildBuried",
    "ChildConflict",
    "ChildCrashed",
    "ChildSpec",
    "ChildStarted",
    "ChildStopped",
    "ChildrenMigrated",
    "HandoverDelivered",
    "HandoverSkipped",
    "Hook",
    "HookArgumentError",
    "HookError",
    "HookHandler",
    "HookIdConflict",
    "HookManager",
    "HookStats",
    "Hub",
    "HubClosed",
    "HubError",
    "InvalidSpec",
    "MailboxFull",
    "MigrationFailed",
    "ModeChanged",
    "NodeUnreachable",
    "NotDelivered",
    "NotFound",
    "Pid",
    "PidInserted",
    "PidRemoved",
    "PidUpdate",
    "PriorityState",
    "Process",
    "ProcessContext",
    "ProcessExit",
    "QuorumLost",
    "Redistribution",
    "RegistryRecord",
    "ReservedHook",
    "ScheduleHandle",
    "StartFailed",
    "StartResult",
    "StopResult",
    "Timeout",
    "Unauthorized",
    "tune_gc",
]
