"""Pluggable policies for a processhub hub: distribution, redundancy, migration,
synchronization and partition handling. Each depends only on ``hub``'s public interfaces.

See ``docs/strategies.md`` for what each strategy does and its parameters.
"""

from __future__ import annotations

from typing import Any

from .base import (
    DistributionStrategy,
    MigrationStrategy,
    Mode,
    PartitionStrategy,
    RedundancyStrategy,
    SpecAware,
    SynchronizationStrategy,
)
from .distribution import ConsistentHashing, Guided
from .migration import ColdSwap, HotSwap
from .partition import Divergence, DynamicQuorum, MajorityQuorum, StaticQuorum
from .redundancy import Replication, Singularity
from .synchronization import PubSub

__all__ = [
    "ColdSwap",
    "ConsistentHashing",
    "DistributionStrategy",
    "Divergence",
    "DynamicQuorum",
    "Guided",
    "HotSwap",
    "MajorityQuorum",
    "MigrationStrategy",
    "Mode",
    "PartitionStrategy",
    "PubSub",
    "RedundancyStrategy",
    "Replication",
    "Singularity",
    "SpecAware",
    "StaticQuorum",
    "SynchronizationStrategy",
    "defaults",
]


def defaults() -> dict[str, Any]:
    """Fresh default strategies, keyed by the ``Hub`` argument each one is for:
    ``distribution`` ConsistentHashing(), ``redundancy`` Singularity(), ``migration``
    ColdSwap(), ``synchronization`` PubSub(), ``partition`` Divergence(). New instances on
    every call (a distribution or partition strategy holds one hub's state)."""
    return {
        "distribution": ConsistentHashing(),
        "redundancy": Singularity(),
        "migration": ColdSwap(),
        "synchronization": PubSub(),
        "partition": Divergence(),
    }
