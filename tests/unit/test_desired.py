"""The desired-state CRDT: merge order, tombstones, digests."""

from __future__ import annotations

import random
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from hub.desired import BUCKETS, BURIED, LIVE, STOPPED, DesiredTable, Record
from hub.errors import InvalidSpec
from hub.spec import ChildSpec


def rec(cid: str, epoch: int, origin: str = "a", status: int = LIVE, at: float = 0.0) -> Record:
    return Record(ChildSpec(cid, "tests.procs:Counter"), {}, epoch, origin, status, "", at)


def test_the_greatest_epoch_status_origin_wins_in_any_order() -> None:
    records = [
        rec("c", 1, "a"),
        rec("c", 1, "b"),
        rec("c", 2, "a", STOPPED),
        rec("c", 2, "b", LIVE),
        rec("c", 2, "a", BURIED),
    ]
    winners = []
    for seed in range(30):
        shuffled = records[:]
        random.Random(seed).shuffle(shuffled)
        t = DesiredTable()
        for r in shuffled + shuffled:  # twice: idempotent
            t.merge(r)
        winners.append(t.get("c"))
    assert all(w == rec("c", 2, "a", BURIED) for w in winners)


def test_a_stop_beats_the_start_it_replaces_and_a_stale_start_cannot_undo_it() -> None:
    t = DesiredTable()
    start = rec("c", 1)
    assert t.merge(start)
    assert t.merge(start.successor("b", STOPPED))
    assert not t.merge(start)  # a copy of the old start reappearing after a partition
    assert t.live("c") is None
    assert t.live_count == 0


def test_equal_tables_have_equal_digests_and_differences_are_found_by_bucket() -> None:
    one, two = DesiredTable(), DesiredTable()
    for i in range(300):
        one.merge(rec(f"c{i}", 1))
    for i in reversed(range(300)):
        two.merge(rec(f"c{i}", 1))
    assert one.digests() == two.digests()
    assert one.digest() == two.digest()
    two.merge(rec("c7", 2, "b", STOPPED))
    buckets = one.differing(two.digests())
    assert len(buckets) == 1
    assert {r.child_id for r in two.bucket_records(buckets)} >= {"c7"}
    for r in two.bucket_records(buckets):
        one.merge(r)
    assert one.digests() == two.digests()
    assert len(one.digests()) == BUCKETS


def test_tombstones_expire_and_expired_ones_are_not_learned_again() -> None:
    t = DesiredTable(tombstone_ttl=10.0)
    t.merge(rec("c", 1))
    t.merge(rec("c", 2, status=STOPPED, at=100.0))
    assert t.collect(105.0) == []
    assert t.collect(111.0) == ["c"]
    assert "c" not in t
    assert t.digests() == DesiredTable().digests()
    assert not t.merge(rec("c", 2, status=STOPPED, at=100.0), now=120.0)


def test_records_survive_the_wire() -> None:
    original = Record(
        ChildSpec("c", "tests.procs:Counter", args=[1]),
        {"tag": "x"},
        3,
        "n1",
        BURIED,
        "2:boom",
        5.0,
    )
    assert Record.from_wire(original.to_wire()) == original
    with pytest.raises(ValueError, match="malformed"):
        Record.from_wire([1, 2, 3])


def test_a_record_the_table_holds_is_not_decoded_again() -> None:
    from hub.wire import record_from_wire

    held = Record(ChildSpec("c", "tests.procs:Counter"), {}, 3, "a#1")
    table = DesiredTable()
    table.merge(held)
    assert record_from_wire(held.to_wire(), table.get) is held  # the same version: shared
    newer = held.pinned("b#2", "b")
    got = record_from_wire(newer.to_wire(), table.get)
    assert got is not held
    assert got == newer  # another version: decoded
    assert record_from_wire(held.to_wire()) == held  # no table: decoded


def test_a_wire_record_tells_its_identity_without_being_decoded() -> None:
    live = Record(ChildSpec("c", "tests.procs:Counter"), {}, 3, "a#1")
    for record in (live, live.pinned("b#2", "b"), live.successor("c#3", STOPPED, "why", 5.0)):
        assert Record.wire_identity(record.to_wire()) == (record.child_id, record.key())
    for junk in ([1, 2, 3], None, [{"id": 7}, *range(8)], [[], *range(8)]):
        assert Record.wire_identity(junk) is None


def test_the_wire_form_drops_the_trailing_defaults_and_keeps_every_field() -> None:
    spec = ChildSpec("c", "tests.procs:Counter")
    live = Record(spec, {}, 3, "a#1")
    assert live.to_wire() == ["c", "tests.procs:Counter", 3, "a#1"]  # most records
    variants = [
        live,
        live.pinned("b#2", "b"),
        live.successor("c#3", STOPPED, "why", 5.0),
        Record(spec, {"tag": "x"}, 1, "a#1"),
        Record(ChildSpec("c", "tests.procs:Counter", restart="transient"), {}, 1, "a#1"),
        Record(ChildSpec("c", "tests.procs:Counter", args=[1], kwargs={"k": 2}), {}, 1, "a#1"),
        Record(spec, {}, 2, "a#1", LIVE, "restarted", 0.0),
    ]
    for record in variants:
        wire = msgpack.unpackb(msgpack.packb(record.to_wire()), raw=False)
        assert Record.from_wire(wire) == record
        assert Record.wire_identity(wire) == (record.child_id, record.key())
    assert len(variants[1].to_wire()) == 9  # up to the pin
    assert len(variants[3].to_wire()) == 6  # up to the metadata
    assert variants[5].to_wire() == [  # arguments: the common live record with options
        "c", "tests.procs:Counter", 1, "a#1", {"args": [1], "kwargs": {"k": 2}}
    ]  # fmt: skip
    assert len(variants[4].to_wire()) == 5  # the spec's options come first


@pytest.mark.parametrize(
    "wire",
    [
        ["c", "m:f", 0, "a#1"],  # epoch below 1
        ["c", "m:f", 1, 7],  # origin not a string
        ["", "m:f", 1, "a#1"],  # empty id
        ["c", "nocolon", 1, "a#1"],
        ["c", "m:f", 1, "a#1", 9],  # unknown status
        ["c", "m:f", 1, "a#1", 0, 0, "", "", 0.0, None, {"id": "d"}],  # options rename it
        ["c", "m:f", 1, "a#1", 0, 0, "", "", 0.0, None, {"restart": "sometimes"}],
        ["c", "m:f", 1, "a#1", 0, 0, "", "", 0.0, None, None, "extra"],
    ],
)
def test_malformed_wire_records_are_refused(wire: list[Any]) -> None:
    with pytest.raises((ValueError, InvalidSpec)):
        Record.from_wire(wire)


def test_a_wire_entry_takes_its_node_and_boot_from_the_partition_frame() -> None:
    from hub.pid import Pid
    from hub.registry import Entry
    from hub.wire import entry_from_wire, entry_to_wire

    record = Record(ChildSpec("c", "tests.procs:Counter"), {}, 3, "a#1")
    entry = Entry.of(record.spec, Pid("b", "boot-b", 12), {}, 3)
    wire = msgpack.unpackb(msgpack.packb(entry_to_wire(entry, record)), raw=False)
    assert wire == [12, record.to_wire(), 3]
    decoded_record, decoded = entry_from_wire(wire, DesiredTable().get, "b", "boot-b")
    assert (decoded_record, decoded) == (record, entry)
    with pytest.raises(ValueError, match="malformed"):
        entry_from_wire(["12", record.to_wire(), 3], DesiredTable().get, "b", "boot-b")


def test_a_live_record_keeps_no_tail_and_a_tombstone_keeps_its_reason() -> None:
    import copy

    live = Record(ChildSpec("c", "tests.procs:Counter"), {}, 3, "a#1")
    assert live.extra is None
    assert (live.info, live.at, live.rev, live.pin) == ("", 0.0, 0, "")
    ended = live.successor("b#2", STOPPED, "why", 5.0)
    assert (ended.info, ended.at, ended.rev, ended.pin) == ("why", 5.0, 0, "")
    moved = live.pinned("b#2", "b")
    assert (moved.epoch, moved.rev, moved.pin, moved.origin) == (3, 1, "b", "b#2")
    assert copy.copy(ended) == ended
