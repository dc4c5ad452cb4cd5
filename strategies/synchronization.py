"""Synchronization strategies: how registry changes travel between nodes.

A configuration object; the hub implements the transport, keeping the registry's rules
(single-writer partitions, deltas applied in version order, a gap answered by a snapshot).

There is no gossip relaying: every node sends its own deltas to every peer over the persistent
peer links, so a delta takes one hop, and anti-entropy repairs what a lost frame left behind.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import check_float, check_int

__all__ = ["PubSub"]


def _check(owner: str, batch_window: object, max_batch: object, interval: object) -> float:
    check_float(owner, "batch_window", batch_window, minimum=0.0)
    check_int(owner, "max_batch", max_batch, 1)
    return check_float(owner, "anti_entropy_interval", interval, minimum=0.0, strict=True)


@dataclass(frozen=True, slots=True)
class PubSub:
    """Each node broadcasts its own registry deltas straight to every peer over the
    persistent peer links (the default). Deltas are coalesced for ``batch_window`` seconds
    (0: sent at once) or until ``max_batch`` of them are waiting; every
    ``anti_entropy_interval`` seconds nodes compare version digests and repair what a lost
    message left behind."""

    batch_window: float = 0.005
    max_batch: int = 1000
    anti_entropy_interval: float = 5.0

    def __post_init__(self) -> None:
        _check("PubSub", self.batch_window, self.max_batch, self.anti_entropy_interval)
        object.__setattr__(self, "batch_window", float(self.batch_window))
        object.__setattr__(self, "anti_entropy_interval", float(self.anti_entropy_interval))

    @property
    def kind(self) -> str:
        return "pubsub"
