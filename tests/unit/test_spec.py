from __future__ import annotations

from types import MappingProxyType
from typing import Any

import msgpack
import pytest

from hub import Backoff, ChildSpec, InvalidSpec, Pid
from hub.spec import check_travels
from tests import procs


def test_callable_start_becomes_an_importable_reference() -> None:
    spec = ChildSpec("c", procs.Counter, args=[1], metadata={"tag": "t"})
    assert spec.start == "tests.procs:Counter"
    assert spec.args == (1,)
    wire = msgpack.unpackb(msgpack.packb(spec.to_wire()))
    assert ChildSpec.from_wire(wire) == spec


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"id": "", "start": "m:f"}, "non-empty string"),
        ({"id": 5, "start": "m:f"}, "non-empty string"),
        ({"id": "c", "start": "nocolon"}, "package.module:Name"),
        ({"id": "c", "start": lambda ctx: None}, "not importable by name"),
        ({"id": "c", "start": 42}, "callable"),
        ({"id": "c", "start": "m:f", "restart": "sometimes"}, "restart must be"),
        ({"id": "c", "start": "m:f", "args": "abc"}, "args must be"),
        ({"id": "c", "start": "m:f", "shutdown_timeout": 0}, "shutdown_timeout"),
        ({"id": "c", "start": "m:f", "max_restarts": -1}, "max_restarts"),
        ({"id": "c", "start": "m:f", "metadata": [1]}, "metadata must be"),
        ({"id": "x" * 600, "start": "m:f"}, "longer than"),
    ],
)
def test_malformed_specs_are_refused_with_a_clear_message(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidSpec, match=message):
        ChildSpec(**kwargs)


def test_from_wire_refuses_unknown_fields_and_non_maps() -> None:
    with pytest.raises(InvalidSpec, match="unknown fields"):
        ChildSpec.from_wire({"id": "c", "start": "m:f", "evil": 1})
    with pytest.raises(InvalidSpec, match="must be a map"):
        ChildSpec.from_wire([1, 2])
    with pytest.raises(InvalidSpec, match="malformed"):
        ChildSpec.from_wire({"id": "c"})


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"args": [object()]}, r"'c': args cannot travel between nodes \(msgpack\): object is not"),
        ({"args": [1, {2, 3}]}, r"args cannot travel .*: set is not serializable \(at \[1\]\)"),
        ({"kwargs": {"k": {1}}}, r"kwargs cannot travel .*: set is not serializable"),
        ({"metadata": {"tags": {"x"}}}, r"metadata cannot travel .*: set is not serializable"),
        ({"metadata": {"deep": [{"a": object()}]}}, r"object is not serializable \(at \['deep'\]"),
        ({"metadata": {(1, 2): "v"}}, r"metadata cannot travel .*: map key \(1, 2\) is a tuple"),
        ({"args": [2**64]}, r"args cannot travel .*: int .* is out of range"),
        ({"args": ["\ud800"]}, r"args cannot travel .*: str .* is not valid UTF-8"),
        ({"kwargs": {1: "v"}}, r"kwargs keys must be strings"),
    ],
    ids=[
        "object-arg",
        "set-arg",
        "set-kwarg",
        "set-metadata",
        "nested-object",
        "tuple-key",
        "int-too-big",
        "lone-surrogate",
        "non-str-kwarg",
    ],
)
def test_args_kwargs_and_metadata_that_cannot_travel_are_refused(
    fields: dict, message: str
) -> None:
    with pytest.raises(InvalidSpec, match=message):
        ChildSpec("c", "tests.procs:Counter", **fields)


def test_values_that_travel_are_accepted_and_survive_the_wire() -> None:
    spec = ChildSpec(
        "c",
        "tests.procs:Counter",
        args=[(1, 2), b"raw", None, 2**63, -(2**63), 1.5, "\u00e9"],
        kwargs={"start": 1},
        metadata={"tags": ["x"], "nested": {"k": [True]}, 1: "int keys decode on the wire"},
    )
    wire = msgpack.unpackb(
        msgpack.packb(spec.to_wire(), use_bin_type=True), raw=False, strict_map_key=False
    )
    back = ChildSpec.from_wire(wire)
    assert back.args == ([1, 2], b"raw", None, 2**63, -(2**63), 1.5, "\u00e9")  # tuples: lists
    assert back.kwargs == spec.kwargs
    assert back.metadata == spec.metadata


def test_replace_refuses_what_cannot_travel() -> None:
    spec = ChildSpec("c", "m:f", args=[1])
    with pytest.raises(InvalidSpec, match="args cannot travel"):
        spec.replace(args=[{1}])
    with pytest.raises(InvalidSpec, match="metadata cannot travel"):
        spec.replace(metadata={"when": object()})


def test_check_travels_names_what_and_why() -> None:
    check_travels({"a": [1, "b", None]}, "metadata")
    with pytest.raises(
        InvalidSpec,
        match=r"^start_children metadata cannot travel between nodes \(msgpack\): "
        r"set is not serializable \(at \['a'\]\)$",
    ):
        check_travels({"a": set()}, "start_children metadata")
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(InvalidSpec, match="nested deeper than"):
        check_travels(loop, "args")


def test_replace_validates() -> None:
    spec = ChildSpec("c", "m:f")
    assert spec.replace(args=[2]).args == (2,)
    with pytest.raises(InvalidSpec):
        spec.replace(restart="never")


def test_pid_round_trips_and_prints() -> None:
    pid = Pid("n1", "abcdef0123456789", 7)
    assert Pid.from_wire(msgpack.unpackb(msgpack.packb(pid.to_wire()))) == pid
    assert str(pid) == "<n1.abcdef01.7>"
    with pytest.raises(ValueError, match="malformed pid"):
        Pid.from_wire(["n1", "b", "7"])


def test_backoff_grows_exponentially_with_bounded_jitter() -> None:
    b = Backoff(base=0.1, cap=1.0)
    assert b.delay(1, 0.0) == pytest.approx(0.05)
    assert b.delay(1, 1.0) == pytest.approx(0.1)
    assert b.delay(3, 1.0) == pytest.approx(0.4)
    assert b.delay(50, 1.0) == pytest.approx(1.0)
    assert b.delay(50, 0.0) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="base"):
        Backoff(base=0, cap=1)


def _wire_variants() -> list[dict[str, Any]]:
    base = ChildSpec(
        "c1", "tests.procs:Counter", args=[5], kwargs={"k": 1}, metadata={"tag": "a"}
    ).to_wire()
    changes: list[dict[str, Any]] = [
        {},
        {"args": []},
        {"args": (1, 2)},
        {"kwargs": {}},
        {"kwargs": None},
        {"metadata": {}},
        {"restart": "transient"},
        {"shutdown_timeout": 1},
        {"max_seconds": 0.5, "max_restarts": 0},
        # refused, or taken by the full constructor (each outcome must be the same)
        {"id": ""},
        {"id": 7},
        {"id": "x" * 513},
        {"start": "nomodule"},
        {"start": ":Name"},
        {"start": 3},
        {"args": "abc"},
        {"args": {"a": 1}},
        {"kwargs": {1: 2}},
        {"kwargs": []},
        {"metadata": [1]},
        {"restart": "sometimes"},
        {"restart": ["permanent"]},
        {"shutdown_timeout": 0},
        {"shutdown_timeout": True},
        {"shutdown_timeout": float("inf")},
        {"shutdown_timeout": "5"},
        {"max_restarts": -1},
        {"max_restarts": True},
        {"max_restarts": 1.0},
        {"max_seconds": float("nan")},
        {"extra": 1},
    ]
    return [{**base, **change} for change in changes] + [
        {k: v for k, v in base.items() if k not in ("kwargs", "metadata", "restart")}
    ]


@pytest.mark.parametrize("data", _wire_variants())
def test_from_wire_decodes_plain_data_as_the_full_constructor_does(data: dict[str, Any]) -> None:
    """The exact-type fast path of ``from_wire`` (plain dicts, as msgpack gives them) gives
    the same spec as the full constructor, or leaves the refusal to it."""
    try:
        slow: ChildSpec | str = ChildSpec.from_wire(MappingProxyType(data))  # the full path
    except InvalidSpec as exc:
        slow = str(exc)
    try:
        fast: ChildSpec | str = ChildSpec.from_wire(dict(data))
    except InvalidSpec as exc:
        fast = str(exc)
    assert fast == slow
    if isinstance(fast, ChildSpec):
        assert isinstance(slow, ChildSpec)
        for name in ChildSpec.__slots__:
            assert getattr(fast, name) == getattr(slow, name), name
            assert type(getattr(fast, name)) is type(getattr(slow, name)), name


def test_the_wire_form_carries_only_what_differs_from_the_defaults() -> None:
    assert ChildSpec("c", "m:f").to_wire() == {"id": "c", "start": "m:f"}
    assert ChildSpec("c", "m:f").extras() is None
    spec = ChildSpec("c", "m:f", args=[1], restart="temporary", max_seconds=2)
    assert spec.to_wire() == {
        "id": "c",
        "start": "m:f",
        "args": [1],
        "restart": "temporary",
        "max_seconds": 2.0,
    }


@pytest.mark.parametrize("data", _wire_variants())
def test_from_extras_gives_the_spec_from_wire_gives(data: dict[str, Any]) -> None:
    """A record carries a spec as ``id``, ``start`` and its non-default extras; decoding them
    gives the same spec (or the same refusal) as the map."""
    try:
        expected: ChildSpec | str = ChildSpec.from_wire(data)
    except InvalidSpec as exc:
        expected = str(exc)
    extras = {k: v for k, v in data.items() if k not in ("id", "start")}
    try:
        got: ChildSpec | str = ChildSpec.from_extras(data["id"], data["start"], extras or None)
    except InvalidSpec as exc:
        got = str(exc)
    assert got == expected
    if isinstance(expected, ChildSpec):
        assert ChildSpec.from_extras(expected.id, expected.start, expected.extras()) == expected


def test_from_extras_refuses_extras_that_are_not_a_map_of_options() -> None:
    for extras in ([1], {"id": "d"}, {"start": "m:g"}):
        with pytest.raises(InvalidSpec, match="extras"):
            ChildSpec.from_extras("c", "m:f", extras)
    with pytest.raises(InvalidSpec, match="non-empty string"):
        ChildSpec.from_extras("", "m:f", None)
    with pytest.raises(InvalidSpec, match=r"package\.module:Name"):
        ChildSpec.from_extras("c", "m", None)


def test_specs_with_the_same_restart_policy_share_one_tuple() -> None:
    """A node holds a spec for every child of the cluster: the four policy fields are one
    shared tuple, read through their usual names."""
    plain = ChildSpec("a", "m:f")
    assert plain.policy is ChildSpec("b", "m:f").policy
    assert (plain.restart, plain.shutdown_timeout, plain.max_restarts, plain.max_seconds) == (
        "permanent",
        5.0,
        3,
        5.0,
    )
    one = ChildSpec("c", "m:f", restart="temporary", shutdown_timeout=2, max_restarts=0)
    other = ChildSpec.from_wire(one.to_wire() | {"id": "d"})
    assert one.policy is other.policy
    assert (other.restart, other.shutdown_timeout, other.max_restarts) == ("temporary", 2.0, 0)
    assert one.replace(id="d") == other
    assert one != ChildSpec("c", "m:f", restart="temporary", shutdown_timeout=2)
