"""A virtual network of :class:`~hub.cluster.membership.Membership` machines, in virtual time.

Deliveries and timers sit in one priority queue; time jumps to the next of them. Every random
choice (latency, loss, each machine's own ``random.Random``) derives from the seed, so a run is
reproducible. Knobs: ``latency`` (uniform range), ``loss`` (probability a message is dropped),
:meth:`Sim.partition` / :meth:`Sim.heal`, :meth:`Sim.kill`, :meth:`Sim.restart`,
:meth:`Sim.pause` (no calls into the node; messages to it wait and arrive when it resumes, after
its first tick, like a stopped process whose timer fires first), and ``SimNode.slow`` (extra delay
on every message delivered to that node). With ``codec=True`` every message goes through
:func:`~hub.cluster.codec.encode_envelope` / :func:`~hub.cluster.codec.decode_envelope`.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hub.cluster.codec import decode_envelope, encode_envelope
from hub.cluster.membership import (
    LOCAL,
    Config,
    Member,
    MemberEvent,
    Membership,
    NameConflict,
    Output,
    Send,
)
from hub.cluster.messages import Address, Message, NodeId, State

Observed = MemberEvent | NameConflict
_TICK, _DELIVER, _RESUME = 0, 1, 2


@dataclass(eq=False)
class SimNode:
    """One machine on the virtual network."""

    name: str
    machine: Membership
    address: Address
    running: bool = True
    paused_until: float = 0.0
    slow: float = 0.0
    tick_at: float = math.inf
    buffered: list[tuple[NodeId, Address, Message]] = field(default_factory=list)
    events: list[tuple[float, Observed]] = field(default_factory=list)
    sent: dict[str, int] = field(default_factory=dict)
    max_health: int = 0

    @property
    def id(self) -> NodeId:
        return self.machine.me

    def view(self) -> dict[str, State]:
        return {m.node.name: m.state for m in self.machine.members()}

    def member(self, name: str) -> Member | None:
        return self.machine.get(name)

    def timeline(self) -> list[tuple[float, str]]:
        """``(time, kind)`` of every member event seen."""
        return [(t, e.kind) for t, e in self.events if isinstance(e, MemberEvent)]

    def kinds(self, about: str | None = None) -> list[str]:
        """The kinds of member events seen, optionally only those about member ``about``."""
        return [
            e.kind
            for _, e in self.events
            if isinstance(e, MemberEvent) and (about is None or e.member.node.name == about)
        ]


class Sim:
    """The network, the clock and the nodes."""

    def __init__(
        self,
        *,
        seed: int = 0,
        config: Config = LOCAL,
        latency: tuple[float, float] = (0.001, 0.005),
        loss: float = 0.0,
        codec: bool = False,
    ) -> None:
        self.now = 0.0
        self.config = config
        self.latency = latency
        self.loss = loss
        self.codec = codec
        self.rng = random.Random(seed)
        self.nodes: dict[str, SimNode] = {}
        self.by_address: dict[Address, SimNode] = {}
        self.groups: list[frozenset[str]] | None = None
        self.on_send: list[Callable[[float, SimNode, Send], None]] = []
        self.messages = 0
        self._heap: list[tuple[float, int, int, SimNode | Address, Any]] = []
        self._counter = 0
        self._boots = 0

    # -- building the cluster ------------------------------------------------------------------

    def add(
        self,
        name: str,
        *,
        seeds: Sequence[str | Address] = (),
        address: Address | None = None,
        meta: Mapping[str, Any] | None = None,
        config: Config | None = None,
    ) -> SimNode:
        """Start a node (a new boot) and join it through ``seeds`` (names or addresses)."""
        self._boots += 1
        address = address or Address(f"{name}.sim", 7000)
        machine = Membership(
            NodeId(name, f"boot{self._boots}"),
            address,
            meta=meta,
            config=config or self.config,
            rng=random.Random(self.rng.getrandbits(64)),
            now=self.now,
        )
        node = SimNode(name, machine, address)
        self.nodes[name] = node
        self.by_address[address] = node
        seed_addresses = [s if isinstance(s, Address) else self.nodes[s].address for s in seeds]
        if seed_addresses:
            self._handle(node, machine.join(seed_addresses, self.now))
        self._reschedule(node)
        return node

    def cluster(self, n: int, *, prefix: str = "n", settle: float = 10.0) -> list[SimNode]:
        """``n`` nodes, each joining through the first; runs ``settle`` seconds."""
        nodes = [self.add(f"{prefix}{0:02d}")]
        for i in range(1, n):
            nodes.append(self.add(f"{prefix}{i:02d}", seeds=[nodes[0].name]))
        self.run_for(settle)
        return nodes

    def kill(self, name: str) -> None:
        """Stop a node abruptly (no leave): it neither sends nor receives any more."""
        node = self.nodes[name]
        node.running = False
        if self.by_address.get(node.address) is node:
            del self.by_address[node.address]

    def restart(
        self, name: str, *, address: Address | None = None, seeds: Sequence[str] = ()
    ) -> SimNode:
        """Kill ``name`` (if running) and start a new boot with that name."""
        old = self.nodes[name]
        if old.running:
            self.kill(name)
        return self.add(name, seeds=seeds, address=address or old.address)

    def leave(self, name: str) -> None:
        """Graceful leave: the leave sends go out, then the node stops after a short drain."""
        node = self.nodes[name]
        self._handle(node, node.machine.leave(self.now))
        drain = 4 * self.config.gossip_interval
        self.run_for(drain)
        self.kill(name)

    def pause(self, name: str, duration: float) -> None:
        node = self.nodes[name]
        node.paused_until = self.now + duration
        self._push(node.paused_until, _RESUME, node, None)

    def partition(self, *groups: Iterable[str]) -> None:
        self.groups = [frozenset(g) for g in groups]

    def heal(self) -> None:
        self.groups = None

    def reachable(self, a: str, b: str) -> bool:
        if self.groups is None:
            return True
        return any(a in g and b in g for g in self.groups)

    # -- running -------------------------------------------------------------------------------

    def run_until(self, until: float) -> None:
        heap = self._heap
        while heap and heap[0][0] <= until:
            when, _, kind, where, payload = heapq.heappop(heap)
            self.now = when
            if kind == _TICK:
                assert isinstance(where, SimNode)
                self._on_tick(where, when)
            elif kind == _DELIVER:
                assert isinstance(where, Address)
                self._on_deliver(where, payload)
            else:
                assert isinstance(where, SimNode)
                self._on_resume(where)
        self.now = max(self.now, until)

    def run_for(self, duration: float) -> None:
        self.run_until(self.now + duration)

    def wait_for(
        self, predicate: Callable[[], bool], timeout: float, step: float | None = None
    ) -> float:
        """Run until ``predicate()`` holds (checked every ``step``); returns the virtual time it
        took. Fails the test after ``timeout`` virtual seconds."""
        step = step or self.config.gossip_interval
        start = self.now
        while not predicate():
            if self.now - start > timeout:
                raise AssertionError(f"condition not met within {timeout} virtual seconds")
            self.run_for(step)
        return self.now - start

    # -- views ---------------------------------------------------------------------------------

    def running(self) -> list[SimNode]:
        return [n for n in self.nodes.values() if n.running]

    def all_see(self, about: Iterable[str], state: State, observers: Iterable[SimNode]) -> bool:
        about = list(about)
        return all(
            (m := o.machine.get(name)) is not None and m.state == state
            for o in observers
            for name in about
        )

    def converged(self, observers: Sequence[SimNode] | None = None) -> bool:
        """Every running node sees exactly the running nodes as ALIVE (and no one suspect)."""
        observers = list(observers) if observers is not None else self.running()
        names = {o.name for o in observers}
        for o in observers:
            if {m.node.name for m in o.machine.alive()} != names:
                return False
            for name in names:
                m = o.machine.get(name)
                if m is None or m.state != State.ALIVE or m.node != self.nodes[name].id:
                    return False
        return True

    # -- internals -----------------------------------------------------------------------------

    def _push(self, when: float, kind: int, where: SimNode | Address, payload: Any) -> None:
        self._counter += 1
        heapq.heappush(self._heap, (when, self._counter, kind, where, payload))

    def _reschedule(self, node: SimNode) -> None:
        if not node.running:
            return
        deadline = max(node.machine.next_deadline(), self.now)
        if deadline < node.tick_at:
            node.tick_at = deadline
            self._push(deadline, _TICK, node, None)

    def _on_tick(self, node: SimNode, when: float) -> None:
        if not node.running or when != node.tick_at or node.paused_until > when:
            return
        node.tick_at = math.inf
        self._handle(node, node.machine.tick(self.now))
        self._reschedule(node)

    def _on_resume(self, node: SimNode) -> None:
        if not node.running or node.paused_until > self.now:
            return
        node.tick_at = math.inf
        self._handle(node, node.machine.tick(self.now))
        buffered, node.buffered = node.buffered, []
        for sender, address, message in buffered:
            self._handle(node, node.machine.receive(sender, address, message, self.now))
        self._reschedule(node)

    def _on_deliver(self, address: Address, payload: Any) -> None:
        node = self.by_address.get(address)
        if node is None or not node.running:
            return
        if self.codec:
            sender, sender_address, message = decode_envelope(payload)
        else:
            sender, sender_address, message = payload
        if not self.reachable(sender.name, node.name):
            return
        if node.paused_until > self.now:
            node.buffered.append((sender, sender_address, message))
            return
        self._handle(node, node.machine.receive(sender, sender_address, message, self.now))
        self._reschedule(node)

    def _handle(self, node: SimNode, outputs: list[Output]) -> None:
        health = node.machine.health
        if health > node.max_health:
            node.max_health = health
        for output in outputs:
            if isinstance(output, Send):
                self._transmit(node, output)
            else:
                node.events.append((self.now, output))

    def _transmit(self, node: SimNode, send: Send) -> None:
        self.messages += 1
        kind = type(send.message).__name__
        node.sent[kind] = node.sent.get(kind, 0) + 1
        for hook in self.on_send:
            hook(self.now, node, send)
        dst = self.by_address.get(send.to)
        if dst is None or not self.reachable(node.name, dst.name):
            return
        if self.loss and self.rng.random() < self.loss:
            return
        delay = self.rng.uniform(*self.latency) + dst.slow
        payload: Any
        if self.codec:
            payload = encode_envelope(node.id, node.address, send.message)
        else:
            payload = (node.id, node.address, send.message)
        self._push(self.now + delay, _DELIVER, send.to, payload)
