"""Migration strategies: how a child moves to its new owner (a node joined or drains)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from .base import check_bool, check_float, check_int

__all__ = ["MAX_STATE_BYTES", "ColdSwap", "HotSwap"]

#: The largest ``HotSwap.max_state_bytes`` (a state travels in one frame of at most 16 MiB).
MAX_STATE_BYTES = 8 * 1024 * 1024


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

    @property
    def max_state_bytes(self) -> int:
        return 0


@dataclass(frozen=True, slots=True)
class HotSwap:
    """Start the child on the new node first (its ``init`` runs, its mailbox is held), then
    stop the old copy and hand its state over (``handover=True``: the old instance's
    ``handover_state()`` goes to the new one's ``receive_handover(state)``); the messages
    still queued in the old mailbox go first to the new copy. The old copy waits at most
    ``retention`` seconds for the new one to be ready; past it, the move goes ahead cold
    (``HANDOVER_SKIPPED``), as it does for a state larger than ``max_state_bytes`` encoded.
    At most ``max_concurrent`` migrations are in flight per node."""

    handover: bool = True
    max_concurrent: int = 64
    retention: float = 5.0
    max_state_bytes: int = 4 * 1024 * 1024

    def __post_init__(self) -> None:
        check_bool("HotSwap", "handover", self.handover)
        check_int("HotSwap", "max_concurrent", self.max_concurrent, 1)
        check_int("HotSwap", "max_state_bytes", self.max_state_bytes, 1, MAX_STATE_BYTES)
        retention = check_float("HotSwap", "retention", self.retention, minimum=0.0)
        object.__setattr__(self, "retention", retention)

    @property
    def kind(self) -> Literal["cold", "hot"]:
        return "hot"
