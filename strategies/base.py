"""The strategy protocols (defined on the hub side, in :mod:`hub.policies`, and re-exported
here) and the argument checks the strategies share."""

from __future__ import annotations

import math
from collections.abc import Collection

from hub.errors import InvalidSpec
from hub.policies import (
    DistributionStrategy,
    MigrationStrategy,
    Mode,
    PartitionStrategy,
    RedundancyStrategy,
    SpecAware,
    SynchronizationStrategy,
)

__all__ = [
    "DistributionStrategy",
    "MigrationStrategy",
    "Mode",
    "PartitionStrategy",
    "RedundancyStrategy",
    "SpecAware",
    "SynchronizationStrategy",
]

# -- argument checks (shared by the strategies; every failure is an InvalidSpec) ---------------


def check_int(
    owner: str, name: str, value: object, minimum: int, maximum: int | None = None
) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidSpec(f"{owner}: {name} must be an int, got {value!r}")
    if value < minimum:
        raise InvalidSpec(f"{owner}: {name} must be >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise InvalidSpec(f"{owner}: {name} must be <= {maximum}, got {value}")
    return value


def check_float(
    owner: str, name: str, value: object, *, minimum: float = 0.0, strict: bool = False
) -> float:
    """A finite number ``>= minimum`` (``> minimum`` if ``strict``), as a float."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidSpec(f"{owner}: {name} must be a number of seconds, got {value!r}")
    number = float(value)
    if not math.isfinite(number):
        raise InvalidSpec(f"{owner}: {name} must be finite, got {value!r}")
    if number < minimum or (strict and number == minimum):
        relation = ">" if strict else ">="
        raise InvalidSpec(f"{owner}: {name} must be {relation} {minimum:g}, got {value!r}")
    return number


def check_bool(owner: str, name: str, value: object) -> bool:
    if not isinstance(value, bool):
        raise InvalidSpec(f"{owner}: {name} must be a bool, got {value!r}")
    return value


def check_choice(owner: str, name: str, value: object, choices: Collection[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        allowed = ", ".join(repr(c) for c in sorted(choices))
        raise InvalidSpec(f"{owner}: {name} must be one of {allowed}, got {value!r}")
    return value


def check_node(owner: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise InvalidSpec(f"{owner}: a node name must be a non-empty str, got {value!r}")
    return value
