"""The messages of the membership protocol (SWIM with Lifeguard), as plain data.

Every message is a frozen dataclass of plain values (str, int, bool, tuples, and a ``meta``
mapping of str to msgpack-able values), so :mod:`hub.cluster.codec` maps it to msgpack and back.
The transport wraps each message in an envelope that names (and authenticates) the sender's
:class:`NodeId` and :class:`Address`, so no message repeats its sender.

Identities
    :class:`NodeId` ``(name, boot_id)``: a restarted node keeps its name and gets a new boot id.
    :class:`Address` ``(host, port)``: where a node's HTTP endpoint listens.

Gossip items (piggybacked on the messages below, and merged with the same rules everywhere)
    :class:`Alive` ``(node, incarnation, address, meta)``: ``node`` lives at ``incarnation``.
    :class:`Suspect` ``(node, incarnation, by)``: member ``by`` suspects ``node``.
    :class:`Dead` ``(node, incarnation, by, left)``: ``by`` declared ``node`` dead; ``left=True``
    (sent by the node itself, ``by == node.name``) is a graceful leave, so the member becomes
    ``LEFT``, not ``DEAD``.

Messages
    :class:`Ping` ``(seq, target, gossip)``: a probe of exactly ``target`` (name and boot); a node
    whose identity differs (e.g. a later boot at the same address) does not answer it.
    :class:`Ack` ``(seq, gossip)``: the answer to a ping, or an ack forwarded by an intermediary.
    :class:`Nack` ``(seq, gossip)``: an intermediary's "I am here, but the target did not answer".
    :class:`PingReq` ``(seq, target, gossip)``: indirect probe: ping ``target`` for me. The target
    is named by identity only; the intermediary resolves its address by name from its own table.
    :class:`PushPull` ``(join, reply, members)``: full state (one :class:`MemberState` per known
    member, self included). ``reply=False`` asks for the receiver's state back; ``join=True``
    marks the first exchange of a joining node.
    :class:`Broadcast` ``(gossip,)``: gossip only (periodic dissemination, and a graceful leave).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from typing import Any, TypeAlias

__all__ = [
    "Ack",
    "Address",
    "Alive",
    "Broadcast",
    "Dead",
    "Gossip",
    "MemberState",
    "Message",
    "Nack",
    "NodeId",
    "Ping",
    "PingReq",
    "PushPull",
    "State",
    "Suspect",
]


class State(IntEnum):
    """A member's state, as seen by one node."""

    ALIVE = 0
    SUSPECT = 1
    DEAD = 2
    LEFT = 3


@dataclass(frozen=True, slots=True)
class Address:
    """Where a node's HTTP endpoint listens."""

    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class NodeId:
    """A node's identity: its name and the id of this boot (a restart gets a new ``boot_id``)."""

    name: str
    boot_id: str

    def __str__(self) -> str:
        return f"{self.name}/{self.boot_id}"


# -- gossip items ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Alive:
    """``node`` is alive at ``incarnation``, listening at ``address``, with ``meta``."""

    node: NodeId
    incarnation: int
    address: Address
    meta: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class Suspect:
    """Member ``by`` (a name) suspects ``node`` at ``incarnation``."""

    node: NodeId
    incarnation: int
    by: str


@dataclass(frozen=True, slots=True)
class Dead:
    """``by`` declared ``node`` dead at ``incarnation``; ``left`` marks a graceful leave."""

    node: NodeId
    incarnation: int
    by: str
    left: bool = False


Gossip: TypeAlias = Alive | Suspect | Dead


@dataclass(frozen=True, slots=True)
class MemberState:
    """One member in a push-pull state exchange."""

    node: NodeId
    address: Address
    incarnation: int
    state: State
    meta: Mapping[str, Any]


# -- messages ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Ping:
    """Direct probe of exactly ``target``; answered with an :class:`Ack` carrying ``seq``."""

    seq: int
    target: NodeId
    gossip: tuple[Gossip, ...] = ()


@dataclass(frozen=True, slots=True)
class Ack:
    """Answer to a :class:`Ping` (or one forwarded by a :class:`PingReq` intermediary)."""

    seq: int
    gossip: tuple[Gossip, ...] = ()


@dataclass(frozen=True, slots=True)
class Nack:
    """A :class:`PingReq` intermediary is alive but the target did not answer in time."""

    seq: int
    gossip: tuple[Gossip, ...] = ()


@dataclass(frozen=True, slots=True)
class PingReq:
    """Ask the receiver to ping ``target`` (resolved by name) and forward its ack to me."""

    seq: int
    target: NodeId
    gossip: tuple[Gossip, ...] = ()


@dataclass(frozen=True, slots=True)
class PushPull:
    """Full state exchange; ``reply=False`` asks for the receiver's state in return."""

    join: bool
    reply: bool
    members: tuple[MemberState, ...]


@dataclass(frozen=True, slots=True)
class Broadcast:
    """Gossip items only."""

    gossip: tuple[Gossip, ...]


Message: TypeAlias = Ping | Ack | Nack | PingReq | PushPull | Broadcast
