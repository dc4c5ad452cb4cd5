"""The membership wire codec: exact round trips, and strict refusal of anything else."""

from __future__ import annotations

import contextlib
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from hub.cluster.codec import (
    MAX_GOSSIP_ITEMS,
    MAX_MESSAGE_BYTES,
    MAX_META_DEPTH,
    MAX_NAME_LENGTH,
    PROTOCOL_VERSION,
    CodecError,
    decode,
    decode_envelope,
    encode,
    encode_envelope,
    normalize_meta,
)
from hub.cluster.messages import (
    Ack,
    Address,
    Alive,
    Broadcast,
    Dead,
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

A = NodeId("a", "boot-a")
B = NodeId("b", "boot-b")
ADDR = Address("10.0.0.1", 7001)


def pack(obj: Any) -> bytes:
    data: bytes = msgpack.packb(obj, use_bin_type=True)
    return data


# -- strategies --------------------------------------------------------------------------------

names = st.text(min_size=1, max_size=24)
nodes = st.builds(NodeId, names, names)
addresses = st.builds(Address, names, st.integers(1, 65535))
incarnations = st.integers(0, 2**63 - 1)
seqs = st.integers(0, 2**32 - 1)
scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.floats(allow_nan=False)
    | st.text(max_size=16)
    | st.binary(max_size=16)
)


def nested(depth: int) -> st.SearchStrategy[Any]:
    if depth == 0:
        return scalars
    inner = nested(depth - 1)
    return scalars | st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner)


metas = st.dictionaries(st.text(max_size=8), nested(3), max_size=4)
gossip_items = st.one_of(
    st.builds(Alive, nodes, incarnations, addresses, metas),
    st.builds(Suspect, nodes, incarnations, names),
    st.builds(Dead, nodes, incarnations, names, st.booleans()),
)
gossips = st.lists(gossip_items, max_size=5).map(tuple)
member_states = st.builds(
    MemberState, nodes, addresses, incarnations, st.sampled_from(State), metas
)
messages: st.SearchStrategy[Message] = st.one_of(
    st.builds(Ping, seqs, nodes, gossips),
    st.builds(Ack, seqs, gossips),
    st.builds(Nack, seqs, gossips),
    st.builds(PingReq, seqs, nodes, gossips),
    st.builds(
        PushPull, st.booleans(), st.booleans(), st.lists(member_states, max_size=5).map(tuple)
    ),
    st.builds(Broadcast, gossips),
)

EXAMPLES: list[Message] = [
    Ping(1, B, (Suspect(B, 3, "a"),)),
    Ack(2, (Alive(A, 1, ADDR, {"hubs": ["orders", "billing"]}),)),
    Nack(3),
    PingReq(4, B, (Dead(B, 2, "a"),)),
    PushPull(True, False, (MemberState(A, ADDR, 0, State.ALIVE, {}),)),
    PushPull(False, True, (MemberState(B, ADDR, 9, State.LEFT, {"x": 1}),)),
    Broadcast((Dead(A, 5, "a", left=True),)),
]


# -- round trips -------------------------------------------------------------------------------


@pytest.mark.parametrize("message", EXAMPLES, ids=lambda m: type(m).__name__)
def test_examples_round_trip(message: Message) -> None:
    assert decode(encode(message)) == message
    assert decode_envelope(encode_envelope(A, ADDR, message)) == (A, ADDR, message)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(messages, nodes, addresses)
def test_every_valid_message_round_trips(message: Message, sender: NodeId, addr: Address) -> None:
    assert decode(encode(message)) == message
    envelope = decode_envelope(encode_envelope(sender, addr, message))
    assert envelope.sender == sender
    assert envelope.address == addr
    assert envelope.message == message


def test_envelope_unpacks_as_a_triple() -> None:
    sender, address, message = decode_envelope(encode_envelope(A, ADDR, Nack(7)))
    assert (sender, address, message) == (A, ADDR, Nack(7))


# -- refusals ----------------------------------------------------------------------------------


@settings(max_examples=500)
@given(st.binary(max_size=256))
@example(b"")
@example(b"\xc1")  # never used in msgpack
@example(b"\x94\x01")  # truncated array
@example(b"\xdd\xff\xff\xff\xff")  # array header claiming 2**32 - 1 items
@example(b"\xc7\x01\x05x")  # ext type
def test_random_bytes_raise_only_codec_errors(data: bytes) -> None:
    for fn in (decode, decode_envelope):
        with contextlib.suppress(CodecError):
            fn(data)


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(messages, st.data())
def test_corrupted_messages_raise_only_codec_errors(message: Message, data: st.DataObject) -> None:
    raw = bytearray(encode_envelope(A, ADDR, message))
    if data.draw(st.booleans()):
        cut = data.draw(st.integers(0, len(raw) - 1))
        corrupted = bytes(raw[:cut])
    else:
        i = data.draw(st.integers(0, len(raw) - 1))
        raw[i] = data.draw(st.integers(0, 255))
        corrupted = bytes(raw)
    with contextlib.suppress(CodecError):
        decode_envelope(corrupted)


def envelope_with(message: Any) -> bytes:
    return pack([PROTOCOL_VERSION, ["a", "boot-a"], ["10.0.0.1", 7001], message])


GOOD_PING = [1, 5, ["b", "boot-b"], []]
BAD_INPUTS = {
    "unknown message tag": envelope_with([99, 5, []]),
    "float message tag": envelope_with([1.0, 5, ["b", "x"], []]),
    "bool message tag": envelope_with([True, 5, []]),
    "wrong arity": envelope_with([1, 5, ["b", "boot-b"]]),
    "too many fields": envelope_with([1, 5, ["b", "boot-b"], [], 0]),
    "str for int": envelope_with([1, "5", ["b", "boot-b"], []]),
    "bool for int": envelope_with([1, True, ["b", "boot-b"], []]),
    "negative seq": envelope_with([1, -1, ["b", "boot-b"], []]),
    "seq too large": envelope_with([1, 2**32, ["b", "boot-b"], []]),
    "negative incarnation": envelope_with([6, [[2, ["b", "x"], -1, "a"]]]),
    "bool incarnation": envelope_with([6, [[2, ["b", "x"], False, "a"]]]),
    "unknown gossip tag": envelope_with([6, [[9, ["b", "x"], 1, "a"]]]),
    "int for left flag": envelope_with([6, [[3, ["b", "x"], 1, "a", 1]]]),
    "empty name": envelope_with([1, 5, ["", "boot-b"], []]),
    "huge name": envelope_with([1, 5, ["b" * (MAX_NAME_LENGTH + 1), "x"], []]),
    "node not an array": envelope_with([1, 5, "b", []]),
    "port 0": pack([PROTOCOL_VERSION, ["a", "x"], ["h", 0], GOOD_PING]),
    "port too large": pack([PROTOCOL_VERSION, ["a", "x"], ["h", 65536], GOOD_PING]),
    "bad version": pack([PROTOCOL_VERSION + 1, ["a", "x"], ["h", 1], GOOD_PING]),
    "bool version": pack([True, ["a", "x"], ["h", 1], GOOD_PING]),
    "envelope arity": pack([PROTOCOL_VERSION, ["a", "x"], ["h", 1]]),
    "not an array": pack({"type": "ping"}),
    "trailing bytes": envelope_with(GOOD_PING) + b"\x00",
    "truncated": envelope_with(GOOD_PING)[:-3],
    "invalid utf-8": envelope_with(GOOD_PING).replace(b"boot-b", b"boot\xff\xfe"),
    "unknown state": envelope_with([5, False, False, [[["b", "x"], ["h", 1], 0, 7, {}]]]),
    "meta not a map": envelope_with([6, [[1, ["b", "x"], 0, ["h", 1], [1, 2]]]]),
    "meta int key": envelope_with([6, [[1, ["b", "x"], 0, ["h", 1], {"k": {1: 2}}]]]),
    "meta too deep": envelope_with([6, [[1, ["b", "x"], 0, ["h", 1], {"k": [[[[[[[[[1]]]]]]]]]}]]]),
    "ext value in meta": envelope_with([6, [[1, ["b", "x"], 0, ["h", 1], {"k": 0}]]]).replace(
        b"\xa1k\x00", b"\xa1k\xd4\x05\x00"
    ),
    "too many gossip items": envelope_with([6, [[2, ["b", "x"], 1, "a"]] * (MAX_GOSSIP_ITEMS + 1)]),
    "deep nesting": b"\x91" * 100_000,
    "oversized": b"\x00" * (MAX_MESSAGE_BYTES + 1),
}


@pytest.mark.parametrize("data", BAD_INPUTS.values(), ids=BAD_INPUTS.keys())
def test_malformed_input_is_refused_with_a_codec_error(data: bytes) -> None:
    with pytest.raises(CodecError):
        decode_envelope(data)


def test_the_good_template_decodes() -> None:
    # the refusals above are one change away from this valid message
    assert decode_envelope(envelope_with(GOOD_PING)) == (
        A,
        ADDR,
        Ping(5, B, ()),
    )


def test_meta_depth_limit_is_exact() -> None:
    meta: Any = 1
    for _ in range(MAX_META_DEPTH - 1):
        meta = [meta]
    ok = Broadcast((Alive(A, 0, ADDR, {"k": meta}),))
    assert decode(encode(ok)) == ok
    too_deep = Broadcast((Alive(A, 0, ADDR, {"k": [meta]}),))
    with pytest.raises(CodecError, match="deeper"):
        decode(encode(too_deep))


def test_codec_error_is_a_value_error() -> None:
    assert issubclass(CodecError, ValueError)


def test_encode_refuses_oversized_and_unencodable_messages() -> None:
    huge = Broadcast((Alive(A, 0, ADDR, {"blob": b"x" * MAX_MESSAGE_BYTES}),))
    with pytest.raises(CodecError, match="exceeds"):
        encode(huge)
    with pytest.raises(CodecError):
        encode(Broadcast((Alive(A, 0, ADDR, {"f": object()}),)))
    with pytest.raises(CodecError):
        encode("ping")  # type: ignore[arg-type]


def test_normalize_meta_bounds_and_canonicalises() -> None:
    assert normalize_meta({"hubs": ("a", "b")}, 512) == {"hubs": ["a", "b"]}
    with pytest.raises(CodecError, match="limit"):
        normalize_meta({"blob": "x" * 600}, 512)
    with pytest.raises(CodecError):
        normalize_meta({1: "x"}, 512)  # type: ignore[dict-item]
    with pytest.raises(CodecError):
        normalize_meta({"f": {1, 2}}, 512)
