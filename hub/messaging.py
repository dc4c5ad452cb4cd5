"""Messages by child id across nodes: exactly once and in order per sender through moves.

A message for a child is sent to the node the registry names. Three things keep it from being
lost, doubled or reordered while the child moves:

* **Relay** (:mod:`hub.relay`): a node the child left holds the messages that still reach it,
  then forwards them (in order, through one queue per target) to where it went; a node that
  never had it forwards by its own registry (at most :data:`MAX_FORWARDS` hops) or holds the
  message until the child shows up. The old copy's mailbox goes with the move itself.
* **Fence**: when a sender's route for a child changes from node L to node X, it first asks L
  to pass a fence on to X along the path its earlier messages took (L forwards after them), and
  sends to X only once the fence came back: a message sent to X cannot overtake one sent to L.
* **Calls** are never forwarded: a call that meets no copy fails with
  :class:`~hub.errors.NotDelivered` (it was not handled), and the caller sends it again to
  where the child went; a call is answered by one copy only.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import Any

from .errors import HubError, InvalidSpec, NotFound
from .local import LocalRuntime
from .relay import Relay
from .wire import dumps

__all__ = ["FENCE_TIMEOUT", "MAX_FORWARDS", "Messenger"]

logger = logging.getLogger(__name__)

MAX_FORWARDS = 3  # a message is forwarded at most this often, then dropped (logged)
FENCE_TIMEOUT = 5.0  # at most this long for a fence to come back (a dead node never answers)
FORWARD_BATCH = 1_000  # forwarded messages in one frame
MAX_HOPS_TRACKED = 100_000  # senders remember the last node of at most this many children

Send = Callable[[str, str, Any], Awaitable[bool]]
Request = Callable[[str, str, Any, float], Awaitable[Any]]


class Messenger:
    """The message paths of one hub on this node (the coordinator feeds it)."""

    def __init__(
        self,
        hub_id: str,
        runtime: LocalRuntime,
        *,
        send: Send,
        request: Request,
        route: Callable[[str], str],
        expects: Callable[[str], bool],
        hold_for: float,
        forward_for: float,
    ) -> None:
        self.hub_id = hub_id
        self.runtime = runtime
        self.relay = Relay(limit=runtime.mailbox_limit, hold_for=hold_for, forward_for=forward_for)
        self._send = send
        self._request = request
        self._route = route
        self._expects = expects
        self._hops: dict[str, str] = {}  # child id -> node this node last sent it a message to
        self._fences: dict[str, asyncio.Task[None]] = {}
        self._outbox: dict[str, deque[list[Any]]] = {}
        self._senders: dict[str, asyncio.Task[None]] = {}
        self.lost = 0  # messages dropped: no copy came back, unencodable, a link failed

    @property
    def node(self) -> str:
        return self.runtime.node

    # -- the sender side -----------------------------------------------------------------------

    def relayed(self, child_id: str, message: Any) -> bool:
        """A local cast to a child that left this node: held or forwarded here (True), or not
        this relay's (False). Raises :class:`~hub.errors.MailboxFull` when the stub is full."""
        where = self.relay.offer(child_id, message)
        if where is None:
            return False
        if where:
            self.forward(where, child_id, [message], 0)
        return True

    def switched(self, child_id: str, node: str) -> bool:
        """Record that a message for ``child_id`` goes to ``node``; True when the previous one
        went to another peer (or its fence is still out): :meth:`fence` first."""
        if child_id in self._fences:
            return True
        hops = self._hops
        last = hops.get(child_id)
        if last == node:
            return False
        if last is not None:
            del hops[child_id]
        elif len(hops) >= MAX_HOPS_TRACKED:
            del hops[next(iter(hops))]
        hops[child_id] = node
        if last is None or last == self.node:
            # this node's own messages to it went into the old mailbox or the relay, both of
            # which reach the new place before anything sent after them from here
            return False
        self._fences[child_id] = self.runtime.own(self._fence(child_id, last), f"fence:{child_id}")
        return True

    async def fence(self, child_id: str) -> None:
        task = self._fences.get(child_id)
        if task is not None:
            await asyncio.shield(task)

    async def _fence(self, child_id: str, last: str) -> None:
        try:
            await self._request(last, "fence", [child_id, 0], FENCE_TIMEOUT)
        except HubError as exc:  # it died or cannot be reached: nothing of ours is on its way
            logger.debug("hub %s: fence for %s via %s: %s", self.hub_id, child_id, last, exc)
        finally:
            self._fences.pop(child_id, None)

    # -- the receiving side --------------------------------------------------------------------

    def on_cast(self, target: Any, message: Any, hops: int) -> None:
        """A cast from a peer for a child id (a pid names one instance: not forwarded)."""
        if not isinstance(target, str):
            self.runtime.target(target).deliver(message)
            return
        where = self.relay.offer(target, message)  # held or forwarded, behind earlier ones
        if where is None:
            child = self.runtime.get(target)
            if child is not None and child.ctx is not None:
                self.runtime.target(target).deliver(message)
                return
            where = self._place(target, message, hops)
        if where:
            self.forward(where, target, [message], hops + 1)

    def _place(self, child_id: str, message: Any, hops: int) -> str:
        """A cast for a child that is not here and has no stub: where it goes ("" held)."""
        try:
            where = self._route(child_id)
        except NotFound:
            where = ""
        if where and where != self.node and hops < MAX_FORWARDS:
            return where
        if self._expects(child_id):  # it should run: hold it until it shows up
            self.relay.hold(child_id, [message], self._now(), moving=False)
            return ""
        self.lost += 1
        logger.info(
            "hub %s: a cast to %s was dropped: it runs nowhere (after %d forwards)",
            self.hub_id,
            child_id,
            hops,
        )
        return ""

    async def on_fence(self, child_id: str, hops: int) -> None:
        """Answer a fence once every message for ``child_id`` that reached this node before it
        went on to where the child is (and the fence behind them)."""
        relay = self.relay
        if child_id not in relay or self.runtime.get(child_id) is not None:
            return
        await relay.settled(child_id, FENCE_TIMEOUT)
        target = relay.target(child_id)
        if target is None or hops >= MAX_FORWARDS:
            return
        await self.flushed(target)
        try:
            await self._request(target, "fence", [child_id, hops + 1], FENCE_TIMEOUT)
        except HubError as exc:
            logger.debug("hub %s: fence for %s via %s: %s", self.hub_id, child_id, target, exc)

    # -- held messages -------------------------------------------------------------------------

    def resolve(self, child_ids: Iterable[str]) -> None:
        """Held stubs of children that may have shown up somewhere: deliver or forward what
        they hold (after a fence, when this node's earlier messages went another way)."""
        relay = self.relay
        for cid in child_ids:
            if cid not in relay or relay.moving(cid):
                continue
            child = self.runtime.get(cid)
            if child is not None and child.ctx is not None and child.state == "running":
                where = self.node  # it runs here (again)
            elif relay.target(cid) is not None:
                continue
            else:
                try:
                    where = self._route(cid)
                except NotFound:
                    continue
                if where == self.node:
                    continue
            if self.switched(cid, where):
                relay.busy(cid)  # new messages stay behind the held ones meanwhile
                self.runtime.own(self._settle_after_fence(cid, where), f"fenced:{cid}")
            else:
                self._settle(cid, where)

    async def _settle_after_fence(self, child_id: str, where: str) -> None:
        await self.fence(child_id)
        self._settle(child_id, where)

    def _settle(self, child_id: str, where: str) -> None:
        relay = self.relay
        if where != self.node:
            self.forward(where, child_id, relay.forward(child_id, where, self._now()), 1)
            return
        child = self.runtime.get(child_id)
        if child is None or child.ctx is None:  # gone meanwhile: it shows up again later
            relay.give_up(child_id)
            return
        for message in relay.release(child_id):
            child.ctx.deliver(message)

    def tick(self) -> None:
        """Resolve what can be, expire what is past its time (called periodically)."""
        relay = self.relay
        self.resolve(relay.waiting())
        for cid, count in relay.expire(self._now()):
            self.lost += count
            logger.warning(
                "hub %s: %d messages to %s were dropped: it did not come back within %.0fs",
                self.hub_id,
                count,
                cid,
                relay.hold_for,
            )

    # -- forwarding ----------------------------------------------------------------------------

    def forward(self, node: str, child_id: str, messages: Sequence[Any], hops: int) -> None:
        """Queue ``messages`` for ``child_id`` to ``node``, after everything queued before."""
        if not messages:
            return
        queue = self._outbox.get(node)
        if queue is None:
            queue = self._outbox[node] = deque()
        queue.extend([child_id, m, hops] for m in messages)
        if node not in self._senders:
            self._senders[node] = self.runtime.own(self._drain(node), f"forward:{node}")

    async def flushed(self, node: str) -> None:
        """Wait until what was queued for ``node`` so far has been handed to its link."""
        task = self._senders.get(node)
        if task is not None:
            with_timeout = asyncio.wait_for(asyncio.shield(task), FENCE_TIMEOUT)
            try:
                await with_timeout
            except TimeoutError:
                return

    async def _drain(self, node: str) -> None:
        queue = self._outbox[node]
        try:
            while queue:
                batch = [queue.popleft() for _ in range(min(len(queue), FORWARD_BATCH))]
                if not await self._send_batch(node, batch):
                    self.lost += len(batch) + len(queue)
                    logger.warning(
                        "hub %s: %d forwarded messages to %s were lost: the link failed",
                        self.hub_id,
                        len(batch) + len(queue),
                        node,
                    )
                    queue.clear()
        finally:
            self._senders.pop(node, None)
            if not queue:
                self._outbox.pop(node, None)

    async def _send_batch(self, node: str, batch: list[list[Any]]) -> bool:
        try:
            dumps(batch)
        except InvalidSpec:  # a local sender's message that cannot travel: drop it alone
            kept = []
            for item in batch:
                try:
                    dumps(item)
                except InvalidSpec as exc:
                    self.lost += 1
                    logger.warning(
                        "hub %s: a message to %s could not follow it to %s: %s",
                        self.hub_id,
                        item[0],
                        node,
                        exc,
                    )
                else:
                    kept.append(item)
            batch = kept
        return not batch or await self._send(node, "casts", batch)

    @staticmethod
    def _now() -> float:
        return asyncio.get_running_loop().time()
