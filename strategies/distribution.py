"""Distribution strategies: which nodes own a child.

:class:`ConsistentHashing` places every child on a consistent-hash ring (uhashring) over the
hub's live member names and keeps that ring current through its own internal hook handlers.
:class:`Guided` places children whose spec names nodes on those nodes and the rest by a fallback
strategy.

Placement is deterministic: it uses md5 (never Python's per-process randomized ``hash``), and the
ring is a function of the member *set* alone, not of the order members joined in. Two nodes with
the same view of the membership compute the same owners for every child.
"""

from __future__ import annotations

import logging
from bisect import bisect
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Final

from uhashring import HashRing  # type: ignore[import-untyped]

from hub import HookIdConflict, InvalidSpec
from hub.events import Hook
from hub.hooks import HookHandler, HookManager

from .base import DistributionStrategy, check_choice, check_int, check_node

try:  # CPython's own md5: half of OpenSSL's per-call cost on a short key (the same digest)
    from _md5 import md5  # type: ignore[import-not-found,unused-ignore]
except ImportError:  # a build without it (some distributions' FIPS builds)
    from hashlib import md5

__all__ = ["ConsistentHashing", "Guided"]

logger = logging.getLogger(__name__)

#: Priority of the strategies' internal handlers: above every user handler at the default
#: priority 0, so the ring has changed before anything else (redistribution planning included)
#: looks at it.
HOOK_PRIORITY: Final = 100

_Owners = tuple[str, ...]


def _check_factor(owner: str, replication_factor: object) -> int:
    return check_int(owner, "replication_factor", replication_factor, 1)


def _attach_once(
    strategy: object,
    hooks: object,
    attached: HookManager | None,
    handlers: Sequence[tuple[Hook, HookHandler]],
) -> bool:
    """Checks before registering ``handlers``: False if they are already registered on this
    manager (a repeated attach is a no-op); raises on another manager or a conflicting id."""
    name = type(strategy).__name__
    if not isinstance(hooks, HookManager):
        raise InvalidSpec(f"{name}.attach: hooks must be a HookManager, got {hooks!r}")
    if attached is not None:
        if attached is hooks:
            return False
        raise InvalidSpec(
            f"{name} is already attached to another HookManager: use one strategy instance per hub"
        )
    for event, handler in handlers:
        if any(h.id == handler.id for h in hooks.registered(event)):
            raise HookIdConflict(f"hook {event}: handler id {handler.id!r} is already registered")
    return True


def _md5_position(key: str) -> int:
    """uhashring's md5 ring position of ``key`` (its ``hashi``: the md5 as an int), computed
    without its hex round trip: every placement of every child hashes its id."""
    return int.from_bytes(md5(key.encode()).digest(), "big")


class ConsistentHashing:
    """Consistent hashing on a uhashring ring: each node gets ``vnodes`` points on the ring,
    a child belongs to the first ``replication_factor`` distinct nodes clockwise from the md5 of
    its id.

    ``hash_fn``: ``"md5"`` (the default: uhashring's ring with full 128-bit md5 positions) or
    ``"ketama"`` (uhashring's libketama-compatible ring: 32-bit positions, 4 points per vnode;
    for interoperability with ketama clients). Arbitrary callables are refused: placement must
    be identical on every node, so the hash is part of the cluster's configuration.

    The ring starts with the ``nodes`` given (none by default). :meth:`attach` adds the local
    node and registers the internal handlers that keep the ring current, at priority 100:
    ``ch_join`` (:attr:`~hub.Hook.PRE_CLUSTER_JOIN`: add the node), ``ch_leave``
    (:attr:`~hub.Hook.PRE_CLUSTER_LEAVE`: remove it) and ``ch_shutdown``
    (:attr:`~hub.Hook.COORDINATOR_SHUTDOWN`: back to the local node alone). All are idempotent.
    One instance serves one hub.
    """

    HOOK_PRIORITY: Final = HOOK_PRIORITY
    HASH_FUNCTIONS: Final = ("md5", "ketama")

    def __init__(self, vnodes: int = 160, hash_fn: str = "md5", *, nodes: Iterable[str] = ()):
        self.vnodes: Final = check_int("ConsistentHashing", "vnodes", vnodes, 1)
        self.hash_fn: Final = check_choice(
            "ConsistentHashing", "hash_fn", hash_fn, self.HASH_FUNCTIONS
        )
        if isinstance(nodes, str):
            raise InvalidSpec("ConsistentHashing: nodes must be an iterable of node names")
        self._members: set[str] = set()
        self._ring: Any = self._new_ring(())
        self._version = 0
        self._local: str | None = None
        self._hooks: HookManager | None = None
        # Lookup table of the current version, built lazily: sorted ring positions, the node at
        # each position, and per replication factor the owners starting at each position.
        self._table_version = -1
        self._positions: list[int] = []
        self._point_nodes: list[str] = []
        self._owners_at: dict[int, list[_Owners | None]] = {}
        self._position: Callable[[str], int] = _md5_position  # ring position of an id (per table)
        for node in nodes:
            self.add_node(node)

    def __repr__(self) -> str:
        return (
            f"ConsistentHashing(vnodes={self.vnodes}, hash_fn={self.hash_fn!r}, "
            f"nodes={self.nodes()!r})"
        )

    # -- membership --------------------------------------------------------------------------

    @property
    def version(self) -> int:
        """Bumped by every change of the ring: a cache of placements is valid while it holds."""
        return self._version

    @property
    def local_node(self) -> str | None:
        """The node given to :meth:`attach` (None before)."""
        return self._local

    def nodes(self) -> list[str]:
        return sorted(self._members)

    def add_node(self, node: str) -> bool:
        """Put ``node`` on the ring; False (a no-op) if it is there already."""
        check_node("ConsistentHashing", node)
        if node in self._members:
            return False
        self._members.add(node)
        if self.hash_fn == "md5":
            # Incremental: a node's points depend on its name only. Positions are 128-bit, so
            # two nodes never share a point in practice and the ring does not depend on order.
            self._ring.add_node(node)
        else:
            self._ring = self._new_ring(self._members)
        self._version += 1
        return True

    def remove_node(self, node: str) -> bool:
        """Take ``node`` off the ring; False (a no-op) if it is not on it. The local node may
        be removed too (e.g. to plan where a draining node's children go)."""
        if node not in self._members:
            return False
        self._members.discard(node)
        if self.hash_fn == "md5":
            self._ring.remove_node(node)
        else:
            self._ring = self._new_ring(self._members)
        self._version += 1
        return True

    def reset(self) -> None:
        """Back to the local node alone (an empty ring before :meth:`attach`)."""
        keep = {self._local} if self._local is not None else set()
        if self._members == keep:
            return
        self._members = keep
        self._ring = self._new_ring(keep)
        self._version += 1

    def _new_ring(self, nodes: Iterable[str]) -> Any:
        # Sorted, so that even a ketama ring (32-bit points, where two nodes can collide on a
        # point and the later one wins) depends only on the set of names.
        hash_fn = "ketama" if self.hash_fn == "ketama" else None
        return HashRing(sorted(nodes), vnodes=self.vnodes, hash_fn=hash_fn)

    # -- hooks -------------------------------------------------------------------------------

    def attach(self, hooks: HookManager, local_node: str) -> None:
        check_node("ConsistentHashing.attach", local_node)
        handlers = [
            (Hook.PRE_CLUSTER_JOIN, HookHandler("ch_join", self._on_join, priority=HOOK_PRIORITY)),
            (
                Hook.PRE_CLUSTER_LEAVE,
                HookHandler("ch_leave", self._on_leave, priority=HOOK_PRIORITY),
            ),
            (
                Hook.COORDINATOR_SHUTDOWN,
                HookHandler("ch_shutdown", self._on_shutdown, priority=HOOK_PRIORITY),
            ),
        ]
        if not _attach_once(self, hooks, self._hooks, handlers):
            if local_node != self._local:
                raise InvalidSpec(
                    f"ConsistentHashing is attached as node {self._local!r}, not {local_node!r}"
                )
            return
        for event, handler in handlers:
            hooks.register(event, handler, internal=True)
        self._hooks = hooks
        self._local = local_node
        self.add_node(local_node)

    def _on_join(self, node: str) -> None:
        self.add_node(node)

    def _on_leave(self, node: str) -> None:
        self.remove_node(node)

    def _on_shutdown(self, _reason: object) -> None:
        self.reset()

    # -- placement ---------------------------------------------------------------------------

    def belongs_to(self, child_id: str, replication_factor: int = 1) -> list[str]:
        rf = _check_factor("ConsistentHashing.belongs_to", replication_factor)
        if not isinstance(child_id, str):
            raise InvalidSpec(f"ConsistentHashing.belongs_to: child id must be a str: {child_id!r}")
        if not self._members:
            return []
        return list(self._owners(child_id, rf))

    def belongs_to_many(
        self, child_ids: Iterable[str], replication_factor: int = 1
    ) -> dict[str, list[str]]:
        rf = _check_factor("ConsistentHashing.belongs_to_many", replication_factor)
        if isinstance(child_ids, str):
            raise InvalidSpec("ConsistentHashing.belongs_to_many takes an iterable of ids")
        if not self._members:
            return {cid: [] for cid in child_ids}
        self._refresh_table()
        rf = min(rf, len(self._members))
        memo = self._owners_at.get(rf)
        if memo is None:
            memo = self._owners_at[rf] = [None] * len(self._positions)
        positions, hashi, size = self._positions, self._position, len(self._positions)
        out: dict[str, list[str]] = {}
        for cid in child_ids:
            if not isinstance(cid, str):
                raise InvalidSpec(f"ConsistentHashing.belongs_to_many: child id {cid!r} is no str")
            index = bisect(positions, hashi(cid))
            if index == size:
                index = 0
            owners = memo[index]
            if owners is None:
                owners = memo[index] = self._walk(index, rf)
            out[cid] = list(owners)
        return out

    def _owners(self, child_id: str, rf: int) -> _Owners:
        self._refresh_table()
        rf = min(rf, len(self._members))
        memo = self._owners_at.get(rf)
        if memo is None:
            memo = self._owners_at[rf] = [None] * len(self._positions)
        index = bisect(self._positions, self._position(child_id))
        if index == len(self._positions):
            index = 0
        owners = memo[index]
        if owners is None:
            owners = memo[index] = self._walk(index, rf)
        return owners

    def _refresh_table(self) -> None:
        """Rebuild the lookup table if the ring changed since it was built (same positions and
        owners as uhashring's ``get_node`` / ``range``, without a generator per lookup)."""
        if self._table_version == self._version:
            return
        points = self._ring.get_points()  # [(position, node)], sorted by position
        self._positions = [position for position, _ in points]
        self._point_nodes = [node for _, node in points]
        self._owners_at = {}
        self._position = _md5_position if self.hash_fn == "md5" else self._ring.hashi
        self._table_version = self._version

    def _walk(self, index: int, rf: int) -> _Owners:
        """The first ``rf`` distinct nodes clockwise from point ``index`` (``rf`` is at most
        the number of nodes, so the walk ends within one turn)."""
        nodes = self._point_nodes
        size = len(nodes)
        found: list[str] = []
        for step in range(size):
            node = nodes[(index + step) % size]
            if node not in found:
                found.append(node)
                if len(found) == rf:
                    break
        return tuple(found)


class Guided:
    """Placement named by the spec: a child whose metadata has ``"nodes": [names]`` (or
    ``"node": name``) runs on those nodes, in that order (the first is the primary); every
    other child is placed by ``fallback`` (a fresh :class:`ConsistentHashing` by default).

    ``belongs_to`` takes only an id, so the guidance is learnt separately: :meth:`guide` with
    specs (the internal handler ``dg_pre_start_handler`` on :attr:`~hub.Hook.PRE_CHILDREN_START`
    does it for local start requests; the hub must call it for specs it learns from peers),
    :meth:`set_guidance` with explicit names, :meth:`forget` when a child is gone.

    Owners of a guided child: its named nodes that are alive (members of the fallback's view),
    up to ``replication_factor``; if fewer than that are alive but at least one is, the rest
    is filled with the fallback's owners (so a child always has ``min(rf, nodes)`` owners); if
    none is alive, the fallback's owners.
    """

    def __init__(self, fallback: DistributionStrategy | None = None) -> None:
        if fallback is None:
            fallback = ConsistentHashing()
        elif not isinstance(fallback, DistributionStrategy):
            raise InvalidSpec(f"Guided: fallback must be a distribution strategy, got {fallback!r}")
        self.fallback: Final[DistributionStrategy] = fallback
        self._guidance: dict[str, tuple[str, ...]] = {}
        self._hooks: HookManager | None = None

    def __repr__(self) -> str:
        return f"Guided(fallback={self.fallback!r}, guided={len(self._guidance)})"

    # -- guidance ----------------------------------------------------------------------------

    def set_guidance(self, child_id: str, nodes: str | Sequence[str]) -> None:
        """Place ``child_id`` on ``nodes`` (a name or a non-empty list of distinct names)."""
        if not isinstance(child_id, str) or not child_id:
            raise InvalidSpec(f"Guided: child id must be a non-empty str, got {child_id!r}")
        self._guidance[child_id] = _guided_nodes(child_id, nodes)

    def forget(self, child_ids: str | Iterable[str]) -> None:
        """Drop the guidance of a child id (or of each id of an iterable); unknown ids are
        ignored."""
        for cid in (child_ids,) if isinstance(child_ids, str) else child_ids:
            self._guidance.pop(cid, None)

    def guidance(self, child_id: str) -> tuple[str, ...] | None:
        """The nodes ``child_id`` is guided to, or None."""
        return self._guidance.get(child_id)

    def guide(self, specs: Iterable[Any]) -> None:
        """Learn the guidance of each spec (anything with ``id`` and ``metadata``, such as a
        :class:`~hub.ChildSpec`): set it from ``metadata["nodes"]`` or ``metadata["node"]``,
        or clear it if the metadata names none. All specs are checked first; an invalid one
        raises :class:`~hub.InvalidSpec` and nothing changes."""
        learnt: list[tuple[str, tuple[str, ...] | None]] = []
        for spec in specs:
            cid = getattr(spec, "id", None)
            if not isinstance(cid, str) or not cid:
                raise InvalidSpec(f"Guided.guide: {spec!r} has no child id")
            learnt.append((cid, _spec_guidance(cid, getattr(spec, "metadata", None))))
        for cid, nodes in learnt:
            if nodes is None:
                self._guidance.pop(cid, None)
            else:
                self._guidance[cid] = nodes

    # -- DistributionStrategy ----------------------------------------------------------------

    def attach(self, hooks: HookManager, local_node: str) -> None:
        handler = HookHandler("dg_pre_start_handler", self._on_pre_start, priority=HOOK_PRIORITY)
        if not _attach_once(self, hooks, self._hooks, [(Hook.PRE_CHILDREN_START, handler)]):
            self.fallback.attach(hooks, local_node)  # checks the local node; a no-op
            return
        self.fallback.attach(hooks, local_node)
        hooks.register(Hook.PRE_CHILDREN_START, handler, internal=True)
        self._hooks = hooks

    def _on_pre_start(self, specs: Iterable[Any]) -> None:
        for spec in specs:
            try:
                self.guide((spec,))
            except InvalidSpec as exc:
                logger.warning("Guided: ignoring the placement guidance of a spec: %s", exc)

    def nodes(self) -> list[str]:
        return self.fallback.nodes()

    def belongs_to(self, child_id: str, replication_factor: int = 1) -> list[str]:
        rf = _check_factor("Guided.belongs_to", replication_factor)
        named = self._guidance.get(child_id)
        if named is None:
            return self.fallback.belongs_to(child_id, rf)
        return self._place(child_id, named, rf, set(self.fallback.nodes()))

    def belongs_to_many(
        self, child_ids: Iterable[str], replication_factor: int = 1
    ) -> dict[str, list[str]]:
        rf = _check_factor("Guided.belongs_to_many", replication_factor)
        if isinstance(child_ids, str):
            raise InvalidSpec("Guided.belongs_to_many takes an iterable of ids")
        ids = list(child_ids)
        guidance = self._guidance
        out = self.fallback.belongs_to_many([c for c in ids if c not in guidance], rf)
        alive: set[str] | None = None
        for cid in ids:
            named = guidance.get(cid)
            if named is not None:
                if alive is None:
                    alive = set(self.fallback.nodes())
                out[cid] = self._place(cid, named, rf, alive)
        return out

    def _place(self, child_id: str, named: tuple[str, ...], rf: int, alive: set[str]) -> list[str]:
        owners = [node for node in named if node in alive][:rf]
        if not owners:
            return self.fallback.belongs_to(child_id, rf)
        if len(owners) < rf:
            for node in self.fallback.belongs_to(child_id, rf + len(owners)):
                if node not in owners:
                    owners.append(node)
                    if len(owners) == rf:
                        break
        return owners


def _guided_nodes(child_id: str, nodes: object) -> tuple[str, ...]:
    names = (nodes,) if isinstance(nodes, str) else nodes
    if not isinstance(names, Sequence) or isinstance(names, bytes) or not names:
        raise InvalidSpec(
            f"Guided: {child_id!r}: nodes must be a node name or a non-empty list of names, "
            f"got {nodes!r}"
        )
    for name in names:
        check_node(f"Guided: {child_id!r}", name)
    if len(set(names)) != len(names):
        raise InvalidSpec(f"Guided: {child_id!r}: nodes must be distinct, got {list(names)!r}")
    return tuple(names)


def _spec_guidance(child_id: str, metadata: object) -> tuple[str, ...] | None:
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping):
        raise InvalidSpec(f"Guided: {child_id!r}: metadata must be a mapping")
    if "nodes" in metadata and "node" in metadata:
        raise InvalidSpec(f"Guided: {child_id!r}: metadata has both 'nodes' and 'node'")
    if "nodes" in metadata:
        return _guided_nodes(child_id, metadata["nodes"])
    if "node" in metadata:
        node = metadata["node"]
        if not isinstance(node, str):
            raise InvalidSpec(f"Guided: {child_id!r}: metadata 'node' must be a str: {node!r}")
        return _guided_nodes(child_id, node)
    return None
