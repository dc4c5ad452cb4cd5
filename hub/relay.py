"""Messages for children that are not on this node: held while they move, then forwarded.

When a child leaves this node (a move, or it is expected but not running anywhere yet), a cast
sent to it by child id must not be lost. The relay keeps a *stub* per such child:

* **held**: messages queue here, in arrival order (bounded by ``limit``: past it a local sender
  gets :class:`hub.MailboxFull`), until the child's new place is known;
* **forwarding**: messages go on to the node the child moved to, for ``forward_for`` seconds
  (until every sender's registry names the new place).

A held stub that nothing resolves within ``hold_for`` seconds is dropped, and the count of
messages it lost is reported (a child that never came back). The relay does no I/O: it returns
what the caller must send, and the caller sends it in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from .errors import MailboxFull

__all__ = ["Relay"]


class _Stub:
    __slots__ = ("messages", "moving", "settled", "target", "until")

    def __init__(self, messages: list[Any], until: float, moving: bool) -> None:
        self.messages = messages
        self.target: str | None = None
        self.until = until
        self.moving = moving  # a move of this node is in flight (it resolves the stub)
        self.settled: asyncio.Future[None] | None = None


class Relay:
    """The stubs of one hub on this node."""

    def __init__(self, *, limit: int, hold_for: float, forward_for: float) -> None:
        self.limit = limit
        self.hold_for = hold_for
        self.forward_for = forward_for
        self._stubs: dict[str, _Stub] = {}

    def __contains__(self, child_id: str) -> bool:
        return child_id in self._stubs

    def __len__(self) -> int:
        return len(self._stubs)

    def hold(self, child_id: str, messages: list[Any], now: float, *, moving: bool) -> None:
        """Start holding messages for ``child_id`` (``messages`` first). A stub that forwards
        becomes held again (the child moves on, or is gone)."""
        stub = self._stubs.get(child_id)
        if stub is None or stub.target is not None:
            self._settle(stub)
            self._stubs[child_id] = _Stub(list(messages), now + self.hold_for, moving)
        else:
            stub.messages.extend(messages)
            stub.moving = stub.moving or moving
            stub.until = max(stub.until, now + self.hold_for)

    def prepend(self, child_id: str, messages: list[Any]) -> None:
        """Put ``messages`` before what the stub holds (the old mailbox's leftovers)."""
        stub = self._stubs.get(child_id)
        if stub is not None and messages:
            stub.messages[:0] = messages

    def offer(self, child_id: str, message: Any) -> str | None:
        """Where ``message`` goes: a node name to forward it to, ``""`` when it is held here,
        ``None`` when there is no stub. Raises :class:`MailboxFull` when the stub is full."""
        stub = self._stubs.get(child_id)
        if stub is None:
            return None
        if stub.target is not None:
            return stub.target
        if len(stub.messages) >= self.limit:
            raise MailboxFull(child_id, self.limit)
        stub.messages.append(message)
        return ""

    def target(self, child_id: str) -> str | None:
        stub = self._stubs.get(child_id)
        return stub.target if stub is not None else None

    def moving(self, child_id: str) -> bool:
        stub = self._stubs.get(child_id)
        return stub is not None and stub.moving

    def forward(self, child_id: str, target: str, now: float, *, skip: int = 0) -> list[Any]:
        """The child runs on ``target`` now: returns the held messages to send there (after
        the first ``skip``, which went with the move), in order; later ones are forwarded."""
        stub = self._stubs.get(child_id)
        if stub is None:
            return []
        messages, stub.messages = stub.messages[skip:], []
        stub.target = target
        stub.moving = False
        stub.until = now + self.forward_for
        self._settle(stub)
        return messages

    def busy(self, child_id: str) -> None:
        """Something resolves the stub of ``child_id`` (a fence on its way): keep holding."""
        stub = self._stubs.get(child_id)
        if stub is not None:
            stub.moving = True

    def give_up(self, child_id: str) -> None:
        """The move of ``child_id`` failed: its stub stays held until the child shows up."""
        stub = self._stubs.get(child_id)
        if stub is not None:
            stub.moving = False
            self._settle(stub)

    def release(self, child_id: str) -> list[Any]:
        """Remove the stub; returns its held messages (the child runs here again)."""
        stub = self._stubs.pop(child_id, None)
        if stub is None:
            return []
        self._settle(stub)
        return stub.messages

    def waiting(self) -> list[str]:
        """The held stubs that no move of this node resolves (the child must show up)."""
        return [cid for cid, s in self._stubs.items() if s.target is None and not s.moving]

    def expire(self, now: float) -> list[tuple[str, int]]:
        """Drop the stubs past their time; returns ``(child_id, lost messages)`` of the held
        ones that lost messages."""
        lost = []
        for cid in [cid for cid, s in self._stubs.items() if s.until <= now and not s.moving]:
            stub = self._stubs.pop(cid)
            self._settle(stub)
            if stub.target is None and stub.messages:
                lost.append((cid, len(stub.messages)))
        return lost

    async def settled(self, child_id: str, timeout: float) -> None:
        """Wait (at most ``timeout``) until the move of ``child_id`` in flight from this node,
        if any, has an outcome."""
        stub = self._stubs.get(child_id)
        if stub is None or stub.target is not None or not stub.moving:
            return
        if stub.settled is None:
            stub.settled = asyncio.get_running_loop().create_future()
        try:
            async with asyncio.timeout(timeout):
                await asyncio.shield(stub.settled)
        except TimeoutError:
            return

    @staticmethod
    def _settle(stub: _Stub | None) -> None:
        if stub is not None and stub.settled is not None and not stub.settled.done():
            stub.settled.set_result(None)
