"""The cluster registry: where every child runs.

Pure data structure, no I/O. The registry is the union of per-node *partitions*. A node alone
writes its own partition (the children it runs); every write bumps the partition's version and
is kept in a bounded change log. Other nodes hold replicas of that partition and apply its
changes strictly in version order (:meth:`Registry.apply`); a gap, or a writer whose log no longer
reaches back far enough, is answered with a full snapshot. Since each partition has one writer,
no two writes can conflict, and two registries that hold the same partition versions are equal.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Mapping
from itertools import islice
from typing import Any, Literal, NamedTuple

from .pid import Pid
from .spec import ChildSpec

__all__ = [
    "Change",
    "Delta",
    "Entry",
    "Partition",
    "Registry",
    "Snapshot",
]


class Entry(NamedTuple):
    """One child in one node's partition. ``epoch`` is the epoch of the desired record this
    copy runs for (:mod:`hub.desired`). A named tuple with the pid's fields inline (one object
    per entry, not two: a node holds an entry for every child of the cluster); build one with
    :meth:`of`."""

    spec: ChildSpec
    node: str
    boot_id: str
    local_id: int
    metadata: Mapping[str, Any]
    epoch: int = 0

    @classmethod
    def of(cls, spec: ChildSpec, pid: Pid, metadata: Mapping[str, Any], epoch: int = 0) -> Entry:
        return cls(spec, pid.node, pid.boot_id, pid.local_id, metadata, epoch)

    @property
    def pid(self) -> Pid:
        return Pid(self.node, self.boot_id, self.local_id)

    @property
    def child_id(self) -> str:
        return self.spec.id


class Delta(NamedTuple):
    """Changes of one partition from version ``base`` to ``version``, one op per version.
    ``ops`` are ``(child_id, entry)`` for an upsert and ``(child_id, reason)`` for a removal,
    ``reason`` saying why it left this node (``"moved:<node>"``, ``"stopped"``, ...)."""

    node: str
    boot_id: str
    base: int
    version: int
    ops: tuple[tuple[str, Entry | str], ...]


class Snapshot(NamedTuple):
    """A whole partition at ``version``."""

    node: str
    boot_id: str
    version: int
    entries: tuple[Entry, ...]


class Change(NamedTuple):
    """What an operation did to the cluster view of one child on one node: ``kind`` is
    ``"inserted"`` (new there), ``"replaced"`` (its pid changed: a restart) or ``"removed"``
    (with the removal ``reason``: ``"moved:<node>"`` when it moved, empty when unknown)."""

    kind: Literal["inserted", "replaced", "removed"]
    child_id: str
    node: str
    pid: Pid | None
    reason: str = ""


class Partition:
    """One node's entries, a version, and a bounded log of recent changes."""

    __slots__ = ("_log", "boot_id", "entries", "node", "version")

    def __init__(self, node: str, boot_id: str, log_size: int = 0) -> None:
        self.node = node
        self.boot_id = boot_id
        self.version = 0
        self.entries: dict[str, Entry] = {}
        self._log: deque[tuple[int, str, Entry | str]] | None = (
            deque(maxlen=log_size) if log_size else None
        )

    def changes_since(self, version: int) -> Delta | None:
        """The changes after ``version``, or ``None`` when the log does not reach back that far
        (the reader then needs a :meth:`snapshot`)."""
        if version == self.version:
            return Delta(self.node, self.boot_id, version, version, ())
        log = self._log
        if log is None or version > self.version or not log or log[0][0] > version + 1:
            return None
        # the log holds consecutive versions: the last ``self.version - version`` are wanted
        recent = islice(log, len(log) - (self.version - version), None)
        ops = tuple((cid, entry) for _, cid, entry in recent)
        return Delta(self.node, self.boot_id, version, self.version, ops)

    def snapshot(self) -> Snapshot:
        return Snapshot(self.node, self.boot_id, self.version, tuple(self.entries.values()))


class Registry:
    """All partitions known to this node, with the local one writable."""

    def __init__(self, node: str, boot_id: str, *, log_size: int = 200_000) -> None:
        self.node = node
        self.local = Partition(node, boot_id, log_size)
        self.partitions: dict[str, Partition] = {node: self.local}

    # -- local writes (single writer) ----------------------------------------------------------

    def put(self, entry: Entry) -> int:
        """Insert or replace a local child. Returns the new version."""
        local = self.local
        local.version += 1
        local.entries[entry.spec.id] = entry
        if local._log is not None:
            local._log.append((local.version, entry.spec.id, entry))
        return local.version

    def delete(self, child_id: str, reason: str = "") -> int | None:
        """Remove a local child (``reason``: why, for the readers). Returns the new version, or
        ``None`` if it was not there."""
        local = self.local
        if local.entries.pop(child_id, None) is None:
            return None
        local.version += 1
        if local._log is not None:
            local._log.append((local.version, child_id, reason))
        return local.version

    # -- replicas ------------------------------------------------------------------------------

    def fits(self, delta: Delta) -> Literal["next", "stale", "gap"]:
        """What :meth:`apply` does with ``delta``: apply it (``"next"``: the held partition's
        next versions, or a new boot's first), ignore it (``"stale"``: nothing newer than what
        is held) or refuse it (``"gap"``: a snapshot is needed)."""
        if delta.node == self.node or self.holds(delta.node, delta.boot_id, delta.version):
            return "stale"
        part = self.partitions.get(delta.node)
        held = part.version if part is not None and part.boot_id == delta.boot_id else 0
        return "next" if delta.base == held else "gap"

    def apply(self, delta: Delta) -> list[Change] | None:
        """Apply a peer's delta in version order (see :meth:`fits`). Returns the changes, an
        empty list for a stale delta, or ``None`` when there is a gap and a snapshot is
        needed."""
        fits = self.fits(delta)
        if fits != "next":
            return [] if fits == "stale" else None
        part = self.partitions.get(delta.node)
        changes: list[Change] = []
        if part is None or part.boot_id != delta.boot_id:
            changes = self._load(delta.node, delta.boot_id, 0, ())  # a new boot replaces the old
            part = self.partitions[delta.node]
        entries = part.entries
        for child_id, entry in delta.ops:
            if isinstance(entry, str):
                if entries.pop(child_id, None) is not None:
                    changes.append(Change("removed", child_id, delta.node, None, entry))
            else:
                child_id = entry.spec.id  # the key is the spec's own string (not a second copy)
                old = entries.get(child_id)
                entries[child_id] = entry
                if old is None:
                    changes.append(Change("inserted", child_id, delta.node, entry.pid))
                elif old.pid != entry.pid:
                    changes.append(Change("replaced", child_id, delta.node, entry.pid))
        part.version = delta.version
        return _net(changes)

    def holds(self, node: str, boot_id: Any, version: Any) -> bool:
        """Whether this registry holds ``node``'s partition of boot ``boot_id`` at ``version``
        or newer (a snapshot of it would change nothing)."""
        part = self.partitions.get(node)
        return part is not None and part.boot_id == boot_id and part.version >= version

    def load(self, snapshot: Snapshot) -> list[Change]:
        """Replace a peer's partition with ``snapshot`` (if it is newer or a new boot)."""
        if snapshot.node == self.node or self.holds(
            snapshot.node, snapshot.boot_id, snapshot.version
        ):
            return []
        return self._load(snapshot.node, snapshot.boot_id, snapshot.version, snapshot.entries)

    def _load(
        self, node: str, boot_id: str, version: int, entries: Iterable[Entry]
    ) -> list[Change]:
        old = self.partitions.get(node)
        new = Partition(node, boot_id)
        new.version = version
        new.entries = {e.spec.id: e for e in entries}
        self.partitions[node] = new
        changes: list[Change] = []
        old_entries = old.entries if old is not None else {}
        for cid in old_entries:
            if cid not in new.entries:
                changes.append(Change("removed", cid, node, None))
        for cid, entry in new.entries.items():
            previous = old_entries.get(cid)
            if previous is None:
                changes.append(Change("inserted", cid, node, entry.pid))
            elif previous.pid != entry.pid:
                changes.append(Change("replaced", cid, node, entry.pid))
        return changes

    def drop(self, node: str) -> list[Change]:
        """Forget a node's partition (the node left or died)."""
        if node == self.node:
            raise ValueError("cannot drop the local partition")
        part = self.partitions.pop(node, None)
        if part is None:
            return []
        return [Change("removed", cid, node, None) for cid in part.entries]

    def digest(self) -> dict[str, tuple[str, int]]:
        """``{node: (boot_id, version)}`` for anti-entropy: equal digests, equal registries."""
        return {n: (p.boot_id, p.version) for n, p in self.partitions.items()}

    def running_on(self, child_id: str) -> list[tuple[str, int]]:
        """``(node, epoch)`` of every partition that lists ``child_id``."""
        found = []
        for node, part in self.partitions.items():
            entry = part.entries.get(child_id)
            if entry is not None:
                found.append((node, entry.epoch))
        return found

    # -- reads ---------------------------------------------------------------------------------

    def lookup(self, child_id: str) -> list[tuple[str, Pid]]:
        """``[(node, pid)]`` for every node that runs ``child_id``, sorted by node."""
        found = []
        for node, part in self.partitions.items():
            entry = part.entries.get(child_id)
            if entry is not None:
                found.append((node, entry.pid))
        if len(found) > 1:
            found.sort()
        return found

    def __contains__(self, child_id: object) -> bool:
        return any(child_id in part.entries for part in self.partitions.values())

    def __len__(self) -> int:
        """Number of distinct children."""
        if len(self.partitions) == 1:
            return len(self.local.entries)
        return len(self.child_ids())

    def child_ids(self) -> set[str]:
        ids: set[str] = set()
        for part in self.partitions.values():
            ids.update(part.entries)
        return ids

    def by_child(self) -> dict[str, list[tuple[str, Entry]]]:
        """Every child with its ``(node, entry)`` list, sorted by child id then node."""
        merged: dict[str, list[tuple[str, Entry]]] = {}
        for node in sorted(self.partitions):
            for cid, entry in self.partitions[node].entries.items():
                merged.setdefault(cid, []).append((node, entry))
        return dict(sorted(merged.items()))


def _net(changes: list[Change]) -> list[Change]:
    """Collapse several changes of one child within one delta into the last one."""
    if len(changes) < 2:
        return changes
    last: dict[str, Change] = {}
    for change in changes:
        last.pop(change.child_id, None)
        last[change.child_id] = change
    return list(last.values())
