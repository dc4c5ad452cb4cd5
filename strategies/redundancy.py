"""Redundancy strategies: how many copies of each child run, and in which mode."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .base import Mode, check_choice, check_int

__all__ = ["Replication", "Singularity"]


def _mode(node: str, owners: list[str], replicas: Mode) -> Mode:
    if owners and node == owners[0]:
        return "active"
    if node in owners:
        return replicas
    return "passive"  # not an owner: never the active copy


@dataclass(frozen=True, slots=True)
class Singularity:
    """One copy of each child (the default): it runs on the primary owner, ``"active"``."""

    replication_factor: int = field(default=1, init=False)

    def mode(self, node: str, owners: list[str]) -> Mode:
        """``"active"`` on the primary (``owners[0]``), else ``"passive"``."""
        return _mode(node, owners, "passive")


@dataclass(frozen=True, slots=True)
class Replication:
    """``factor`` copies of each child, on its first ``factor`` ring owners (fewer if the hub
    has fewer nodes). The primary is ``"active"``; the replicas are ``"active"`` too under
    ``replication_model="active"`` (the default: every copy does the work, e.g. a cache), or
    ``"passive"`` (standbys that a process can tell from ``ctx.mode``). Messages by child id go
    to the primary."""

    factor: int = 2
    replication_model: Literal["active", "passive"] = "active"

    def __post_init__(self) -> None:
        check_int("Replication", "factor", self.factor, 1)
        check_choice("Replication", "replication_model", self.replication_model, _MODELS)

    @property
    def replication_factor(self) -> int:
        return self.factor

    def mode(self, node: str, owners: list[str]) -> Mode:
        """``"active"`` on the primary; the replication model on the other owners;
        ``"passive"`` on a node that is not an owner."""
        return _mode(node, owners, self.replication_model)


_MODELS = ("active", "passive")
