"""The five strategy protocols the hub runtime is typed against (``strategies`` implements
them; a user-written strategy only has to provide the same members).

Each protocol is ``runtime_checkable``, so the hub checks what it was given with
``isinstance(obj, DistributionStrategy)`` (which checks that the members exist, not their
signatures) and refuses anything else with :class:`~hub.InvalidSpec` at construction.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any, Literal, NamedTuple, Protocol, TypeAlias, runtime_checkable

from .errors import InvalidSpec
from .hooks import HookManager

__all__ = [
    "DistributionStrategy",
    "MigrationStrategy",
    "Mode",
    "PartitionStrategy",
    "RedundancyStrategy",
    "SpecAware",
    "Strategies",
    "SynchronizationStrategy",
    "is_spec_aware",
]

#: How a copy of a child runs: the primary is always ``"active"``; replicas follow the
#: redundancy strategy's model.
Mode: TypeAlias = Literal["active", "passive"]


@runtime_checkable
class DistributionStrategy(Protocol):
    """Where children run: ``belongs_to(child_id)`` names their owner nodes.

    The answer must be a pure function of the strategy's membership view (and, for
    :class:`SpecAware` strategies, of the specs it was told about), so that every node with the
    same view computes the same owners (DESIGN principle 2).
    """

    def attach(self, hooks: HookManager, local_node: str) -> None:
        """Register the strategy's internal hook handlers on the hub's ``hooks`` (with
        ``internal=True``) and put ``local_node`` in the membership view."""
        ...

    def belongs_to(self, child_id: str, replication_factor: int = 1) -> list[str]:
        """Distinct owner node names of ``child_id``, the primary first:
        ``min(replication_factor, len(nodes()))`` of them (empty if no node is known)."""
        ...

    def belongs_to_many(
        self, child_ids: Iterable[str], replication_factor: int = 1
    ) -> dict[str, list[str]]:
        """:meth:`belongs_to` for many ids at once (the fast form)."""
        ...

    def nodes(self) -> list[str]:
        """The sorted names of the nodes placement currently uses."""
        ...


@runtime_checkable
class SpecAware(Protocol):
    """A distribution strategy that also looks at child specs (e.g. :class:`~strategies.Guided`).

    The hub calls :meth:`guide` with every spec it learns (requested locally *or* read from a
    peer's registry partition) before it plans placement for it, and :meth:`forget` when a child
    is gone for good, on every node, so that all nodes hold the same guidance.
    """

    def guide(self, specs: Iterable[Any]) -> None:
        """Learn (or replace, or clear) the placement guidance of each spec."""
        ...

    def forget(self, child_ids: Iterable[str]) -> None:
        """Drop the guidance of these children (unknown ids are ignored)."""
        ...


@runtime_checkable
class RedundancyStrategy(Protocol):
    """How many copies of each child run, and in which mode."""

    @property
    def replication_factor(self) -> int:
        """Copies of each child (1 = no replicas)."""
        ...

    def mode(self, node: str, owners: list[str]) -> Mode:
        """The mode of the copy on ``node``, given the child's ``owners`` (primary first)."""
        ...


@runtime_checkable
class MigrationStrategy(Protocol):
    """How a child moves when its owner changes (a node joined, or is draining)."""

    @property
    def kind(self) -> Literal["cold", "hot"]:
        """``"cold"``: stop the old copy, then start the new one. ``"hot"``: start the new
        one first, then stop the old one."""
        ...

    @property
    def handover(self) -> bool:
        """Whether the old instance's state is handed to the new one (``handover_state`` /
        ``receive_handover``)."""
        ...

    @property
    def max_concurrent(self) -> int:
        """At most this many migrations in flight per node."""
        ...

    @property
    def retention(self) -> float:
        """Seconds the old copy may wait for the new one to be up (``"hot"`` only; 0 for
        ``"cold"``). Past it, the old copy stops anyway."""
        ...

    @property
    def max_state_bytes(self) -> int:
        """The largest encoded handover state that is sent (``"hot"`` with ``handover``; 0
        otherwise). A larger state is not sent: the move goes ahead cold."""
        ...


@runtime_checkable
class SynchronizationStrategy(Protocol):
    """How registry changes travel between nodes (the hub implements the transport)."""

    @property
    def kind(self) -> str:
        """``"pubsub"`` or ``"gossip"``."""
        ...

    @property
    def batch_window(self) -> float:
        """Seconds local registry deltas are coalesced before they are sent."""
        ...

    @property
    def max_batch(self) -> int:
        """At most this many deltas in one message; a full batch is sent at once."""
        ...

    @property
    def anti_entropy_interval(self) -> float:
        """Seconds between two anti-entropy rounds (version digests compared with peers)."""
        ...


@runtime_checkable
class PartitionStrategy(Protocol):
    """Whether the hub must lock itself (refuse changes) because quorum is lost."""

    def attach(self, hooks: HookManager, local_node: str) -> None:
        """Learn the local node's name (always counted alive); may register internal
        handlers."""
        ...

    def evaluate(self, live_nodes: Collection[str], known_nodes: Collection[str]) -> bool:
        """``True`` if the hub must be LOCKED. ``live_nodes``: the hub's live members;
        ``known_nodes``: the live ones plus those that failed (not those that left
        gracefully). The local node counts as live whether or not it is listed."""
        ...

    def describe(self) -> dict[str, Any]:
        """The strategy's configuration and last evaluation, for
        :attr:`~hub.Hook.PRIORITY_STATE_UPDATED` info."""
        ...


class Strategies(NamedTuple):
    """The five strategies of one hub."""

    distribution: DistributionStrategy
    redundancy: RedundancyStrategy
    migration: MigrationStrategy
    synchronization: SynchronizationStrategy
    partition: PartitionStrategy

    @classmethod
    def checked(cls, **given: Any) -> Strategies:
        """Check that each strategy implements its protocol (``InvalidSpec`` otherwise)."""
        protocols = dict(zip(cls._fields, _PROTOCOLS, strict=True))
        for name, value in given.items():
            if not isinstance(value, protocols[name]):
                raise InvalidSpec(
                    f"{name} must implement {protocols[name].__name__}, got {type(value).__name__}"
                )
        return cls(**given)


_PROTOCOLS = (
    DistributionStrategy,
    RedundancyStrategy,
    MigrationStrategy,
    SynchronizationStrategy,
    PartitionStrategy,
)


def is_spec_aware(strategy: object) -> bool:
    """Whether a distribution strategy wants to see child specs (:class:`SpecAware`)."""
    return isinstance(strategy, SpecAware)
