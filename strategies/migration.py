"""Migration strategies: how a child moves to its new owner (a node joined or drains)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import check_bool, check_float, check_int

__all__ = ["ColdSwap", "HotSwap"]


@dataclass(frozen=True, slots=True)
class ColdSwap:
    """Stop the child on the old node, then start it on the new one (the default). No two
    copies ever run; the child is down for the length of a stop plus a start, and its state
    is not carried over. At most ``max_concurrent`` migrations are in flight per node."""

    max_concurrent: int = 64

    def __post_init__(self) -> None:
        check_int("ColdSwap", "max_concurrent", self.max_concurrent, 1)

    @property
    def kind(self) -> Literal["cold", "hot"]:
        return "cold"

    @property
    def handover(self) -> bool:
        return False

    @property
    def retention(self) -> float:
        return 0.0


@dataclass(frozen=True, slots=True)
class HotSwap:
    """Start the child on the new node first, hand its state over (``handover=True``: the old
    instance's ``handover_state()`` goes to the new one's ``receive_handover(state)``), then
    stop the old copy. The old copy waits at most ``retention`` seconds for the new one to be
    up; past it, it stops anyway (the state is then lost). At most ``max_concurrent``
    migrations are in flight per node."""

    handover: bool = True
    max_concurrent: int = 64
    retention: float = 5.0

    def __post_init__(self) -> None:
        check_bool("HotSwap", "handover", self.handover)
        check_int("HotSwap", "max_concurrent", self.max_concurrent, 1)
        retention = check_float("HotSwap", "retention", self.retention, minimum=0.0)
        object.__setattr__(self, "retention", retention)

    @property
    def kind(self) -> Literal["cold", "hot"]:
        return "hot"
