"""Desired state: what should run in the cluster, replicated on every node. Pure, no I/O.

A :class:`Record` says what a child id should be: its spec and start metadata, a per-child
``epoch``, the node that wrote this version (``origin``) and a ``status``: ``LIVE`` (it should
run), ``STOPPED`` (deliberately stopped: a tombstone) or ``BURIED`` (it exhausted its restart
intensity). Every change of a child's desired state writes a record with a higher epoch.

The :class:`DesiredTable` is a state-based CRDT: :meth:`DesiredTable.merge` keeps, per child,
the record with the greatest ``(epoch, status, rev, origin)``. That order is total, so merging is
commutative, associative and idempotent: any two nodes that have seen the same records hold the
same table, whatever the order and however often the records arrived. A tombstone outranks the
live record it replaces (higher epoch), so a stale copy that reappears after a partition or a
pause loses; a concurrent stop beats a concurrent start of the same epoch.

Nothing here depends on which node runs a child. The table outlives any node: as long as one
node that saw a record lives, the record lives, and the planner restarts the child.

Anti-entropy: records fall into :data:`BUCKETS` buckets by a stable hash of the child id; each
bucket keeps an XOR digest of its records' keys, updated incrementally. Two nodes compare the
256 digests and exchange only the buckets that differ.

Tombstones (``STOPPED`` and ``BURIED`` records) are kept ``tombstone_ttl`` seconds after they
were written (wall-clock time of the writer, ``Record.at``), then collected by :meth:`collect`; a
tombstone older than that which arrives again is ignored. A node partitioned away for longer
than the TTL can therefore bring back a child that was stopped meanwhile; the default TTL (one
hour) is far beyond any detection period.
"""

from __future__ import annotations

import hashlib
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from .spec import ChildSpec

__all__ = [
    "BUCKETS",
    "BURIED",
    "LIVE",
    "STOPPED",
    "DesiredTable",
    "Record",
    "bucket_of",
]

LIVE: Final = 0
STOPPED: Final = 1
BURIED: Final = 2
STATUS_NAMES: Final = ("live", "stopped", "buried")
BUCKETS: Final = 256
DEFAULT_TOMBSTONE_TTL: Final = 3600.0
_EMPTY: Mapping[str, Any] = MappingProxyType({})


class _RecordFields(NamedTuple):
    spec: ChildSpec
    metadata: Mapping[str, Any]
    epoch: int
    origin: str
    status: int
    #: ``(info, at, rev, pin)``, or ``None`` when all four are their defaults (most records:
    #: a node holds a record for every child of the cluster)
    extra: tuple[str, float, int, str] | None


class Record(_RecordFields):
    """One version of one child's desired state: its spec and start metadata, its ``epoch``,
    the node that wrote it (``origin``), its ``status``, why it was stopped or buried
    (``info``), the wall-clock time a tombstone was written (``at``, for its expiry), its
    revision within the epoch (``rev``: a placement change of a running child) and the node
    it was migrated to (``pin``, by ``hub.migrate``: placed there while live)."""

    __slots__ = ()

    def __new__(
        cls,
        spec: ChildSpec,
        metadata: Mapping[str, Any],
        epoch: int,
        origin: str,
        status: int = LIVE,
        info: str = "",
        at: float = 0.0,
        rev: int = 0,
        pin: str = "",
    ) -> Record:
        extra = (info, at, rev, pin) if info or at or rev or pin else None
        return tuple.__new__(cls, (spec, metadata, epoch, origin, status, extra))

    def __getnewargs__(self) -> tuple[Any, ...]:  # copy and pickle rebuild it through __new__
        return (*self[:5], self.info, self.at, self.rev, self.pin)

    @property
    def info(self) -> str:
        extra = self.extra
        return extra[0] if extra is not None else ""

    @property
    def at(self) -> float:
        extra = self.extra
        return extra[1] if extra is not None else 0.0

    @property
    def rev(self) -> int:
        extra = self.extra
        return extra[2] if extra is not None else 0

    @property
    def pin(self) -> str:
        extra = self.extra
        return extra[3] if extra is not None else ""

    @property
    def child_id(self) -> str:
        return self.spec.id

    @property
    def live(self) -> bool:
        return self.status == LIVE

    def key(self) -> tuple[int, int, int, str]:
        """The merge order: the greatest key wins."""
        return (self.epoch, self.status, self.rev, self.origin)

    def successor(self, origin: str, status: int, info: str = "", at: float = 0.0) -> Record:
        """The next version of this child's desired state, written by ``origin``."""
        return Record(self.spec, self.metadata, self.epoch + 1, origin, status, info, at)

    def pinned(self, origin: str, node: str) -> Record:
        """The same live child, placed on ``node`` from now on (a revision, not a new epoch:
        the running copy stays current and moves)."""
        return Record(
            self.spec,
            self.metadata,
            self.epoch,
            origin,
            self.status,
            self.info,
            self.at,
            self.rev + 1,
            node,
        )

    def to_wire(self) -> list[Any]:
        """``[id, start, epoch, origin, spec extras, metadata, status, rev, pin, info, at]``
        without the trailing fields that hold their defaults (a live record of a spec with
        default options is ``[id, start, epoch, origin]``, one with arguments
        ``[id, start, epoch, origin, {"args": [...]}]``)."""
        spec = self.spec
        extras = spec.extras()
        if extras is None and self.extra is None and not self.metadata and self.status == LIVE:
            return [spec.id, spec.start, self.epoch, self.origin]  # most records
        wire = [
            spec.id,
            spec.start,
            self.epoch,
            self.origin,
            extras,
            dict(self.metadata) if self.metadata else None,
            self.status,
            self.rev,
            self.pin,
            self.info,
            self.at,
        ]
        while len(wire) > 4 and wire[-1] == _WIRE_DEFAULTS[len(wire) - 5]:
            wire.pop()
        return wire

    @staticmethod
    def wire_identity(data: Any) -> tuple[str, tuple[Any, Any, Any, Any]] | None:
        """``(child id, key)`` of the :meth:`to_wire` form ``data`` without decoding it (the
        key in :meth:`key` order), or ``None`` if ``data`` does not look like one."""
        if type(data) is not list or not 4 <= len(data) <= 11 or type(data[0]) is not str:
            return None
        n = len(data)
        return data[0], (data[2], data[6] if n > 6 else LIVE, data[7] if n > 7 else 0, data[3])

    @classmethod
    def from_wire(cls, data: Any) -> Record:
        if type(data) is list and 4 <= len(data) <= 5:  # most records: live, no metadata
            cid, start, epoch, origin = data[:4]
            if type(epoch) is not int or epoch < 1 or type(origin) is not str:
                raise ValueError("malformed desired record epoch or origin")
            spec = ChildSpec.from_extras(cid, start, data[4] if len(data) == 5 else None)
            return cls(spec, _EMPTY, epoch, sys.intern(origin))
        if not isinstance(data, list) or not 4 <= len(data) <= 11:
            raise ValueError("malformed desired record")
        fields: list[Any] = [*data, *_WIRE_DEFAULTS[len(data) - 4 :]]
        cid, start, epoch, origin, extras, meta, status, rev, pin, info, at = fields
        if type(rev) is not int or rev < 0 or not isinstance(pin, str):
            raise ValueError("malformed desired record revision")
        if meta is not None and not isinstance(meta, dict):
            raise ValueError("malformed desired record metadata")
        if type(epoch) is not int or epoch < 1 or not isinstance(origin, str):
            raise ValueError("malformed desired record epoch or origin")
        if status not in (LIVE, STOPPED, BURIED) or not isinstance(info, str):
            raise ValueError("malformed desired record status")
        if not isinstance(at, int | float):
            raise ValueError("malformed desired record time")
        metadata = MappingProxyType(meta) if meta else _EMPTY
        when = float(at) if at else 0.0  # live records carry no time: one shared zero
        spec = ChildSpec.from_extras(cid, start, extras)
        return cls(
            spec, metadata, epoch, sys.intern(origin), status, info, when, rev, sys.intern(pin)
        )


#: The defaults of the optional wire fields of a record, from the spec's extras on.
_WIRE_DEFAULTS: Final = (None, None, LIVE, 0, "", "", 0.0)


def bucket_of(child_id: str) -> int:
    """The anti-entropy bucket of a child id (stable across processes and machines)."""
    return zlib.crc32(child_id.encode()) % BUCKETS


def _fingerprint(record: Record) -> int:
    raw = (
        f"{record.spec.id}\x00{record.epoch}\x00{record.status}\x00{record.origin}"
        f"\x00{record.rev}\x00{record.pin}"
    ).encode()
    return int.from_bytes(hashlib.blake2b(raw, digest_size=8).digest(), "big")


class DesiredTable:
    """Every child's current desired record, with per-bucket digests."""

    def __init__(self, *, tombstone_ttl: float = DEFAULT_TOMBSTONE_TTL) -> None:
        if not tombstone_ttl > 0:
            raise ValueError("tombstone_ttl must be positive")
        self.tombstone_ttl = tombstone_ttl
        self._records: dict[str, Record] = {}
        self._digests = [0] * BUCKETS
        self._tombstones: dict[str, float] = {}  # child id -> written at (insertion ~ time order)
        self.live_count = 0

    def __len__(self) -> int:
        return len(self._records)

    def __contains__(self, child_id: object) -> bool:
        return child_id in self._records

    def __iter__(self) -> Iterator[Record]:
        return iter(list(self._records.values()))

    def get(self, child_id: str) -> Record | None:
        return self._records.get(child_id)

    def live(self, child_id: str) -> Record | None:
        """The record of ``child_id`` if it should run, else ``None``."""
        record = self._records.get(child_id)
        return record if record is not None and record.status == LIVE else None

    def ids(self) -> list[str]:
        return list(self._records)

    def merge(self, record: Record, now: float | None = None) -> bool:
        """Keep ``record`` if it outranks what is known of its child. Returns whether the
        table changed. A tombstone already past its TTL at ``now`` (wall clock) is ignored."""
        cid = record.spec.id
        old = self._records.get(cid)
        if old is record:  # a registry entry's record decoded as the one held (the usual case)
            return False
        if old is not None and record.key() <= old.key():
            return False
        if (
            record.status != LIVE
            and now is not None
            and record.at + self.tombstone_ttl < now
            and old is None
        ):
            return False
        bucket = bucket_of(cid)
        if old is not None:
            self._digests[bucket] ^= _fingerprint(old)
            if old.status == LIVE:
                self.live_count -= 1
            else:
                self._tombstones.pop(cid, None)
        self._digests[bucket] ^= _fingerprint(record)
        self._records[cid] = record
        if record.status == LIVE:
            self.live_count += 1
        else:
            self._tombstones[cid] = record.at
        return True

    def collect(self, now: float) -> list[str]:
        """Forget tombstones written more than ``tombstone_ttl`` before ``now`` (wall clock).
        Returns the collected ids."""
        limit = now - self.tombstone_ttl
        gone = [cid for cid, at in self._tombstones.items() if at < limit]
        for cid in gone:
            record = self._records.pop(cid)
            self._digests[bucket_of(cid)] ^= _fingerprint(record)
            del self._tombstones[cid]
        return gone

    # -- anti-entropy --------------------------------------------------------------------------

    def digests(self) -> list[int]:
        """One digest per bucket: equal digests, (almost surely) equal buckets."""
        return list(self._digests)

    def digest(self) -> int:
        """One number for the whole table."""
        out = 0
        for i, d in enumerate(self._digests):
            out ^= (d * (2 * i + 1)) & 0xFFFF_FFFF_FFFF_FFFF
        return out

    def differing(self, digests: Iterable[int]) -> list[int]:
        """The buckets whose digest differs from ``digests`` (a peer's)."""
        return [i for i, (a, b) in enumerate(zip(self._digests, digests, strict=False)) if a != b]

    def bucket_records(self, buckets: Iterable[int]) -> Iterator[Record]:
        """The records in ``buckets``, one at a time (from a copy of the table: the caller
        may pause between them while the table changes)."""
        wanted = set(buckets)
        return (r for cid, r in list(self._records.items()) if bucket_of(cid) in wanted)
