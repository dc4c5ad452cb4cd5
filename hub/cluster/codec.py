"""Msgpack encoding of membership messages, with strict validation on decode.

Wire shape (all msgpack arrays; no maps except ``meta``, no ext types, no pickle)::

    envelope   [PROTOCOL_VERSION, sender, address, message]
    sender     [name, boot_id]                      address   [host, port]
    message    [PING, seq, target, gossip]          [ACK, seq, gossip]      [NACK, seq, gossip]
               [PING_REQ, seq, target, gossip]      [PUSH_PULL, join, reply, members]
               [BROADCAST, gossip]
    gossip     [item, ...] with item one of
               [ALIVE, node, incarnation, address, meta]   [SUSPECT, node, incarnation, by]
               [DEAD, node, incarnation, by, left]
    members    [[node, address, incarnation, state, meta], ...]

:func:`decode` and :func:`decode_envelope` refuse anything else with :class:`CodecError` (a
:class:`ValueError`): input larger than :data:`MAX_MESSAGE_BYTES` (aiohttp's default
``client_max_size``), truncated or trailing bytes, invalid UTF-8, an unknown tag or protocol
version, a wrong number of fields, a wrong type (``True`` is not an int), a negative incarnation,
a port outside 1..65535, names longer than :data:`MAX_NAME_LENGTH`, more than
:data:`MAX_GOSSIP_ITEMS` gossip items or :data:`MAX_MEMBERS` members, a ``meta`` that is not a
map of str keys, nests containers deeper than :data:`MAX_META_DEPTH` or holds non-plain values.
Arrays inside ``meta`` decode as lists. :func:`encode` raises :class:`CodecError` for a message
it cannot represent or one larger than :data:`MAX_MESSAGE_BYTES`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import msgpack  # type: ignore[import-untyped]

from .messages import (
    Ack,
    Address,
    Alive,
    Broadcast,
    Dead,
    Gossip,
    MemberState,
    Message,
    Nack,
    NodeId,
    Ping,
    PingReq,
    PushPull,
    State,
    Suspect,
)

__all__ = [
    "MAX_GOSSIP_ITEMS",
    "MAX_MEMBERS",
    "MAX_MESSAGE_BYTES",
    "MAX_META_DEPTH",
    "MAX_NAME_LENGTH",
    "PROTOCOL_VERSION",
    "CodecError",
    "Envelope",
    "decode",
    "decode_envelope",
    "encode",
    "encode_envelope",
    "meta_size",
    "normalize_meta",
]

PROTOCOL_VERSION = 1
MAX_MESSAGE_BYTES = 1024 * 1024  # aiohttp's default client_max_size
MAX_NAME_LENGTH = 255  # node names, boot ids, hosts (a DNS name is at most 253 characters)
MAX_GOSSIP_ITEMS = 256
MAX_MEMBERS = 4096
MAX_META_DEPTH = 8
MAX_SEQ = 2**32 - 1
MAX_INCARNATION = 2**63 - 1

# message tags
PING, ACK, NACK, PING_REQ, PUSH_PULL, BROADCAST = 1, 2, 3, 4, 5, 6
# gossip item tags
ALIVE, SUSPECT, DEAD = 1, 2, 3


class CodecError(ValueError):
    """A message could not be encoded, or bytes are not a valid message."""


class Envelope(NamedTuple):
    """A decoded request body: who sent it, where it listens, and the message."""

    sender: NodeId
    address: Address
    message: Message


# -- encoding ----------------------------------------------------------------------------------


def _node(n: NodeId) -> list[Any]:
    return [n.name, n.boot_id]


def _addr(a: Address) -> list[Any]:
    return [a.host, a.port]


def _gossip(items: tuple[Gossip, ...]) -> list[Any]:
    out: list[Any] = []
    for g in items:
        if isinstance(g, Alive):
            out.append([ALIVE, _node(g.node), g.incarnation, _addr(g.address), dict(g.meta)])
        elif isinstance(g, Suspect):
            out.append([SUSPECT, _node(g.node), g.incarnation, g.by])
        elif isinstance(g, Dead):
            out.append([DEAD, _node(g.node), g.incarnation, g.by, g.left])
        else:
            raise CodecError(f"not a gossip item: {type(g).__name__}")
    return out


def _message(m: Message) -> list[Any]:
    if isinstance(m, Ping):
        return [PING, m.seq, _node(m.target), _gossip(m.gossip)]
    if isinstance(m, Ack):
        return [ACK, m.seq, _gossip(m.gossip)]
    if isinstance(m, Nack):
        return [NACK, m.seq, _gossip(m.gossip)]
    if isinstance(m, PingReq):
        return [PING_REQ, m.seq, _node(m.target), _gossip(m.gossip)]
    if isinstance(m, PushPull):
        members = [
            [_node(s.node), _addr(s.address), s.incarnation, int(s.state), dict(s.meta)]
            for s in m.members
        ]
        return [PUSH_PULL, m.join, m.reply, members]
    if isinstance(m, Broadcast):
        return [BROADCAST, _gossip(m.gossip)]
    raise CodecError(f"not a message: {type(m).__name__}")


def _pack(obj: Any) -> bytes:
    try:
        data: bytes = msgpack.packb(obj, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"cannot encode: {exc}") from None
    if len(data) > MAX_MESSAGE_BYTES:
        raise CodecError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    return data


def encode(message: Message) -> bytes:
    """The msgpack bytes of one message (no envelope)."""
    return _pack(_message(message))


def encode_envelope(sender: NodeId, address: Address, message: Message) -> bytes:
    """One self-contained request body: the sender's identity and address, and the message."""
    return _pack([PROTOCOL_VERSION, _node(sender), _addr(address), _message(message)])


# -- decoding ----------------------------------------------------------------------------------


def _unpack(data: bytes | bytearray | memoryview) -> Any:
    if not isinstance(data, bytes | bytearray | memoryview):
        raise CodecError(f"expected bytes, got {type(data).__name__}")
    if len(data) > MAX_MESSAGE_BYTES:
        raise CodecError(f"message of {len(data)} bytes exceeds {MAX_MESSAGE_BYTES}")
    if not data:
        raise CodecError("empty message")
    try:
        return msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_array_len=MAX_MEMBERS,
            max_map_len=MAX_MEMBERS,
        )  # string, binary and ext lengths are capped by len(data) <= MAX_MESSAGE_BYTES
    except Exception as exc:  # msgpack raises many unrelated types on bad input
        raise CodecError(f"malformed msgpack: {type(exc).__name__}: {exc}") from None


def _array(obj: Any, what: str, n: int | None = None) -> list[Any]:
    if not isinstance(obj, list):
        raise CodecError(f"{what}: expected an array, got {type(obj).__name__}")
    if n is not None and len(obj) != n:
        raise CodecError(f"{what}: expected {n} fields, got {len(obj)}")
    return obj


def _int(obj: Any, what: str, lo: int, hi: int) -> int:
    if not isinstance(obj, int) or isinstance(obj, bool):
        raise CodecError(f"{what}: expected an integer, got {type(obj).__name__}")
    if not lo <= obj <= hi:
        raise CodecError(f"{what}: {obj} is outside {lo}..{hi}")
    return obj


def _bool(obj: Any, what: str) -> bool:
    if not isinstance(obj, bool):
        raise CodecError(f"{what}: expected a boolean, got {type(obj).__name__}")
    return obj


def _str(obj: Any, what: str) -> str:
    if not isinstance(obj, str):
        raise CodecError(f"{what}: expected a string, got {type(obj).__name__}")
    if not 0 < len(obj) <= MAX_NAME_LENGTH:
        raise CodecError(f"{what}: length {len(obj)} is outside 1..{MAX_NAME_LENGTH}")
    return obj


def _dec_node(obj: Any, what: str) -> NodeId:
    name, boot = _array(obj, what, 2)
    return NodeId(_str(name, f"{what}.name"), _str(boot, f"{what}.boot_id"))


def _dec_addr(obj: Any, what: str) -> Address:
    host, port = _array(obj, what, 2)
    return Address(_str(host, f"{what}.host"), _int(port, f"{what}.port", 1, 65535))


def _plain(obj: Any, what: str, depth: int) -> None:
    """Check that ``obj`` (inside ``depth`` containers) is plain data."""
    if obj is None or isinstance(obj, bool | int | float | str | bytes):
        return
    if depth >= MAX_META_DEPTH:
        raise CodecError(f"{what}: containers nested deeper than {MAX_META_DEPTH}")
    if isinstance(obj, list):
        for item in obj:
            _plain(item, what, depth + 1)
    elif isinstance(obj, dict):
        for key, value in obj.items():
            if not isinstance(key, str):
                raise CodecError(f"{what}: map keys must be strings")
            _plain(value, what, depth + 1)
    else:
        raise CodecError(f"{what}: unsupported value of type {type(obj).__name__}")


def _dec_meta(obj: Any, what: str) -> Mapping[str, Any]:
    if not isinstance(obj, dict):
        raise CodecError(f"{what}: expected a map, got {type(obj).__name__}")
    _plain(obj, what, 0)
    return obj


def _dec_gossip(obj: Any, what: str) -> tuple[Gossip, ...]:
    items = _array(obj, what)
    if len(items) > MAX_GOSSIP_ITEMS:
        raise CodecError(f"{what}: {len(items)} items exceed {MAX_GOSSIP_ITEMS}")
    out: list[Gossip] = []
    for i, raw in enumerate(items):
        w = f"{what}[{i}]"
        item = _array(raw, w)
        if not item:
            raise CodecError(f"{w}: empty gossip item")
        tag = item[0] if type(item[0]) is int else None
        if tag == ALIVE:
            _, node, inc, addr, meta = _array(item, w, 5)
            out.append(
                Alive(
                    _dec_node(node, f"{w}.node"),
                    _int(inc, f"{w}.incarnation", 0, MAX_INCARNATION),
                    _dec_addr(addr, f"{w}.address"),
                    _dec_meta(meta, f"{w}.meta"),
                )
            )
        elif tag == SUSPECT:
            _, node, inc, by = _array(item, w, 4)
            out.append(
                Suspect(
                    _dec_node(node, f"{w}.node"),
                    _int(inc, f"{w}.incarnation", 0, MAX_INCARNATION),
                    _str(by, f"{w}.by"),
                )
            )
        elif tag == DEAD:
            _, node, inc, by, left = _array(item, w, 5)
            out.append(
                Dead(
                    _dec_node(node, f"{w}.node"),
                    _int(inc, f"{w}.incarnation", 0, MAX_INCARNATION),
                    _str(by, f"{w}.by"),
                    _bool(left, f"{w}.left"),
                )
            )
        else:
            raise CodecError(f"{w}: unknown gossip tag {item[0]!r}")
    return tuple(out)


def _dec_members(obj: Any, what: str) -> tuple[MemberState, ...]:
    items = _array(obj, what)
    if len(items) > MAX_MEMBERS:
        raise CodecError(f"{what}: {len(items)} members exceed {MAX_MEMBERS}")
    out: list[MemberState] = []
    for i, raw in enumerate(items):
        w = f"{what}[{i}]"
        node, addr, inc, state, meta = _array(raw, w, 5)
        out.append(
            MemberState(
                _dec_node(node, f"{w}.node"),
                _dec_addr(addr, f"{w}.address"),
                _int(inc, f"{w}.incarnation", 0, MAX_INCARNATION),
                State(_int(state, f"{w}.state", min(State), max(State))),
                _dec_meta(meta, f"{w}.meta"),
            )
        )
    return tuple(out)


def _dec_message(obj: Any) -> Message:
    fields = _array(obj, "message")
    if not fields:
        raise CodecError("message: empty array")
    tag = fields[0]
    if type(tag) is not int:
        raise CodecError(f"message: unknown tag {tag!r}")
    if tag == PING:
        _, seq, target, gossip = _array(fields, "ping", 4)
        return Ping(
            _int(seq, "ping.seq", 0, MAX_SEQ),
            _dec_node(target, "ping.target"),
            _dec_gossip(gossip, "ping.gossip"),
        )
    if tag in (ACK, NACK):
        kind = "ack" if tag == ACK else "nack"
        _, seq, gossip = _array(fields, kind, 3)
        cls = Ack if tag == ACK else Nack
        return cls(_int(seq, f"{kind}.seq", 0, MAX_SEQ), _dec_gossip(gossip, f"{kind}.gossip"))
    if tag == PING_REQ:
        _, seq, target, gossip = _array(fields, "ping_req", 4)
        return PingReq(
            _int(seq, "ping_req.seq", 0, MAX_SEQ),
            _dec_node(target, "ping_req.target"),
            _dec_gossip(gossip, "ping_req.gossip"),
        )
    if tag == PUSH_PULL:
        _, join, reply, members = _array(fields, "push_pull", 4)
        return PushPull(
            _bool(join, "push_pull.join"),
            _bool(reply, "push_pull.reply"),
            _dec_members(members, "push_pull.members"),
        )
    if tag == BROADCAST:
        _, gossip = _array(fields, "broadcast", 2)
        return Broadcast(_dec_gossip(gossip, "broadcast.gossip"))
    raise CodecError(f"message: unknown tag {tag!r}")


def meta_size(meta: Mapping[str, Any]) -> int:
    """The msgpack size of a ``meta`` mapping, in bytes."""
    try:
        return len(msgpack.packb(dict(meta), use_bin_type=True))
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"meta cannot be encoded: {exc}") from None


def normalize_meta(meta: Mapping[str, Any], limit: int) -> dict[str, Any]:
    """``meta`` as it will look after a trip over the wire (tuples become lists), checked to be
    plain data of at most ``limit`` bytes; raises :class:`CodecError` (a ``ValueError``)."""
    if not isinstance(meta, Mapping):
        raise CodecError(f"meta must be a mapping, got {type(meta).__name__}")
    try:
        raw = msgpack.packb(dict(meta), use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise CodecError(f"meta cannot be encoded: {exc}") from None
    if len(raw) > limit:
        raise CodecError(f"meta takes {len(raw)} bytes, more than the limit of {limit}")
    return dict(_dec_meta(_unpack(raw), "meta"))


def decode(data: bytes | bytearray | memoryview) -> Message:
    """The message encoded by :func:`encode`; anything else raises :class:`CodecError`."""
    return _dec_message(_unpack(data))


def decode_envelope(data: bytes | bytearray | memoryview) -> Envelope:
    """The ``(sender, address, message)`` encoded by :func:`encode_envelope`."""
    fields = _array(_unpack(data), "envelope")
    if not fields or type(fields[0]) is not int or fields[0] != PROTOCOL_VERSION:
        version = fields[0] if fields else None
        raise CodecError(f"envelope: unsupported protocol version {version!r}")
    _, sender, address, message = _array(fields, "envelope", 4)
    return Envelope(
        _dec_node(sender, "envelope.sender"),
        _dec_addr(address, "envelope.address"),
        _dec_message(message),
    )
