"""The hub's peer messages as msgpack data, and the error mapping across the wire.

Pure functions: no I/O. Every decoder refuses malformed data with ``ValueError`` (the frame
handler answers it as :class:`~hub.errors.InvalidSpec`). Strings that repeat across many
entries (node names, boot ids, origins) are interned on decode, so a registry replica of many
children holds one copy of each.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import msgpack  # type: ignore[import-untyped]

from .desired import Record
from .errors import (
    AlreadyStarted,
    CallFailed,
    HubError,
    InvalidSpec,
    NotDelivered,
    NotFound,
    StartFailed,
    Timeout,
)
from .pid import Pid
from .registry import Delta, Entry

__all__ = [
    "delta_to_wire",
    "dumps",
    "entry_from_wire",
    "entry_to_wire",
    "error_from_wire",
    "error_to_wire",
    "loads",
    "members_from_wire",
    "pid_from_wire",
    "record_from_wire",
    "state_from_wire",
    "state_to_wire",
]


def error_to_wire(exc: HubError) -> list[Any]:
    return [type(exc).__name__, str(exc)]


def error_from_wire(target: Any, kind: str, message: str) -> HubError:
    """The local exception for an error (type name ``kind``) that a peer reported about
    ``target``: start and stop results, and the errors of remote requests."""
    if kind == "NotFound":
        return NotFound(target)
    if kind == "AlreadyStarted":
        return AlreadyStarted(target, message)
    if kind == "StartFailed":
        return StartFailed(target, message)
    if kind == "NotDelivered":
        return NotDelivered(target, message)
    if kind == "CallFailed":
        return CallFailed(target, message)
    if kind in ("Timeout", "NodeUnreachable"):
        return Timeout(message)
    if kind == "InvalidSpec":
        return InvalidSpec(message)
    return HubError(message)


# -- wire formats (msgpack data) -----------------------------------------------------------------


def pid_from_wire(data: Any) -> Pid:
    pid = Pid.from_wire(data)
    return Pid(sys.intern(pid.node), sys.intern(pid.boot_id), pid.local_id)


def record_from_wire(data: Any, known: Callable[[str], Record | None] | None = None) -> Record:
    """A desired record. With ``known`` (the local table's lookup), a record the table holds
    in the same version is returned as it is, without decoding its spec again."""
    if known is not None:
        held = _held(data, known)
        if held is not None:
            return held
    return Record.from_wire(data)


def _held(data: Any, known: Callable[[str], Record | None]) -> Record | None:
    """The table's record when ``data`` is the wire form of that very version."""
    identity = Record.wire_identity(data)
    if identity is None:
        return None
    held = known(identity[0])
    return held if held is not None and held.key() == identity[1] else None


def entry_to_wire(entry: Entry, record: Record) -> list[Any]:
    """A registry entry of the writer's own partition as ``[local id, record, epoch]``: the
    pid's node and boot are the partition's (sent once per frame); ``record`` is the desired
    record as the writer knows it (possibly newer than the copy: a tombstone), ``epoch`` the
    copy's."""
    return [entry.local_id, record.to_wire(), entry.epoch]


def entry_from_wire(
    item: Any, known: Callable[[str], Record | None], node: str, boot_id: str
) -> tuple[Record, Entry]:
    """A registry entry of ``node``'s partition (boot ``boot_id``) and the desired record it
    carries. When ``known`` (the local desired table's lookup) holds the same version of the
    record, the entry shares that record's spec and metadata objects."""
    local_id, record_wire, epoch = item
    if type(epoch) is not int or type(local_id) is not int:
        raise ValueError("malformed registry entry")
    record = record_from_wire(record_wire, known)
    return record, Entry(record.spec, node, boot_id, local_id, record.metadata, epoch)


def delta_to_wire(delta: Delta, ops: list[list[Any]]) -> list[Any]:
    """``delta`` with its ``ops`` in wire form (``[child_id, entry wire or reason]``, encoded
    by the caller: the entries carry the writer's records)."""
    return [delta.node, delta.boot_id, delta.base, delta.version, ops]


def members_from_wire(data: Any) -> frozenset[tuple[str, str]]:
    """A peer's member list (``[[name, boot], ...]`` in its anti-entropy state), without the
    items that are malformed."""
    if not isinstance(data, list):
        return frozenset()
    return frozenset(
        (m[0], m[1])
        for m in data
        if isinstance(m, list) and len(m) == 2 and isinstance(m[0], str) and isinstance(m[1], str)
    )


def state_to_wire(state: tuple[Any, int]) -> list[Any]:
    versions, digest = state
    return [[list(v) for v in versions], digest]


def state_from_wire(data: Any) -> tuple[Any, int]:
    versions, digest = data
    return (tuple(tuple(v) for v in versions), int(digest))


def dumps(value: Any) -> bytes:
    """``value`` as msgpack bytes (a handover state, a moved mailbox); raises
    :class:`~hub.errors.InvalidSpec` for what msgpack cannot encode."""
    try:
        data: bytes = msgpack.packb(value, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidSpec(f"not msgpack data: {exc}") from None
    return data


def loads(data: Any) -> Any:
    """The value :func:`dumps` encoded; raises ``ValueError`` for malformed data."""
    if not isinstance(data, bytes):
        raise ValueError(f"expected bytes, got {type(data).__name__}")
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise ValueError(f"malformed data: {exc}") from None
