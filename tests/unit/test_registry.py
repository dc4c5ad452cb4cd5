from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from hub import ChildSpec, Pid
from hub.registry import Change, Entry, Registry, Snapshot


def entry(node: str, cid: str, local_id: int, boot: str = "b1") -> Entry:
    return Entry.of(ChildSpec(cid, "tests.procs:idle"), Pid(node, boot, local_id), {})


def test_local_writes_bump_the_version_and_are_readable() -> None:
    reg = Registry("a", "b1")
    assert reg.put(entry("a", "c1", 1)) == 1
    assert reg.put(entry("a", "c2", 2)) == 2
    assert reg.lookup("c1") == [("a", Pid("a", "b1", 1))]
    assert reg.delete("c1") == 3
    assert reg.delete("c1") is None
    assert reg.lookup("c1") == []
    assert "c2" in reg
    assert len(reg) == 1


def test_changes_since_replays_in_order_and_refuses_what_the_log_lost() -> None:
    writer = Registry("a", "b1", log_size=3)
    for i in range(5):
        writer.put(entry("a", f"c{i}", i))
    delta = writer.local.changes_since(3)
    assert delta is not None
    assert (delta.base, delta.version) == (3, 5)
    assert [cid for cid, _ in delta.ops] == ["c3", "c4"]
    assert writer.local.changes_since(1) is None  # log holds versions 3..5 only
    assert writer.local.changes_since(2) is not None
    assert writer.local.changes_since(9) is None
    empty = writer.local.changes_since(5)
    assert empty is not None
    assert empty.ops == ()


def test_replica_applies_deltas_in_order_and_asks_for_a_snapshot_on_a_gap() -> None:
    writer = Registry("a", "b1")
    replica = Registry("b", "b2")
    writer.put(entry("a", "c1", 1))
    first = writer.local.changes_since(0)
    writer.put(entry("a", "c2", 2))
    writer.delete("c1")
    second = writer.local.changes_since(1)
    assert first is not None
    assert second is not None
    assert replica.fits(second) == "gap"  # replica has nothing yet and base is 1
    assert replica.apply(second) is None
    assert replica.fits(first) == "next"
    assert replica.apply(first) == [Change("inserted", "c1", "a", Pid("a", "b1", 1))]
    assert replica.fits(first) == "stale"  # duplicate
    assert replica.apply(first) == []
    overlapping = writer.local.changes_since(0)  # 0 -> 3 while 1 is held: not its next
    assert overlapping is not None
    assert replica.fits(overlapping) == "gap"
    assert replica.apply(overlapping) is None
    assert writer.fits(first) == "stale"  # its own partition
    assert replica.fits(second) == "next"
    assert replica.apply(second) == [
        Change("inserted", "c2", "a", Pid("a", "b1", 2)),
        Change("removed", "c1", "a", None),
    ]
    assert replica.digest()["a"] == writer.digest()["a"]
    assert replica.lookup("c2") == writer.lookup("c2")


def test_snapshot_replaces_a_partition_and_reports_the_difference() -> None:
    replica = Registry("b", "b2")
    replica.load(Snapshot("a", "boot1", 2, (entry("a", "c1", 1, "boot1"), entry("a", "c2", 2))))
    changes = replica.load(Snapshot("a", "boot2", 1, (entry("a", "c2", 7, "boot2"),)))
    assert sorted(changes) == [
        Change("removed", "c1", "a", None),
        Change("replaced", "c2", "a", Pid("a", "boot2", 7)),
    ]
    stale = Snapshot("a", "boot2", 0, ())
    assert replica.load(stale) == []
    assert replica.lookup("c2") == [("a", Pid("a", "boot2", 7))]
    assert replica.holds("a", "boot2", 1)
    assert replica.holds("a", "boot2", 0)
    assert not replica.holds("a", "boot2", 2)  # newer
    assert not replica.holds("a", "boot1", 0)  # another boot
    assert not replica.holds("x", "boot2", 0)  # never held


def test_a_new_boot_of_a_writer_needs_a_snapshot_unless_it_starts_from_zero() -> None:
    replica = Registry("b", "b2")
    replica.load(Snapshot("a", "boot1", 5, (entry("a", "c1", 1, "boot1"),)))
    fresh = Registry("a", "boot2")
    fresh.put(entry("a", "c9", 1, "boot2"))
    delta = fresh.local.changes_since(0)
    assert delta is not None
    assert replica.fits(delta) == "next"
    changes = replica.apply(delta)
    assert changes is not None
    assert sorted(changes) == [
        Change("inserted", "c9", "a", Pid("a", "boot2", 1)),
        Change("removed", "c1", "a", None),
    ]
    fresh.put(entry("a", "c10", 2, "boot2"))
    later = fresh.local.changes_since(1)
    assert later is not None
    other = Registry("c", "b3")
    assert other.fits(later) == "gap"
    assert other.apply(later) is None


def test_union_over_partitions_and_drop() -> None:
    reg = Registry("a", "b1")
    reg.put(entry("a", "x", 1))
    reg.load(Snapshot("b", "bb", 1, (Entry.of(ChildSpec("x", "m:f"), Pid("b", "bb", 4), {}),)))
    assert reg.lookup("x") == [("a", Pid("a", "b1", 1)), ("b", Pid("b", "bb", 4))]
    assert list(reg.by_child()) == ["x"]
    assert reg.drop("b") == [Change("removed", "x", "b", None)]
    assert reg.lookup("x") == [("a", Pid("a", "b1", 1))]


ops = st.lists(
    st.tuples(st.sampled_from(["put", "del"]), st.integers(min_value=0, max_value=9)),
    max_size=60,
)


@settings(max_examples=200, deadline=None)
@given(ops=ops, log_size=st.integers(min_value=1, max_value=8), data=st.data())
def test_replica_converges_to_the_writer_under_any_delivery(
    ops: list[tuple[str, int]], log_size: int, data: st.DataObject
) -> None:
    """Deltas delivered late, duplicated or out of order, with snapshot fallback on a gap,
    always end with the replica equal to the writer."""
    writer = Registry("a", "b1", log_size=log_size)
    replica = Registry("r", "b2")
    sent: list[int] = [0]
    for i, (op, n) in enumerate(ops):
        if op == "put":
            writer.put(entry("a", f"c{n}", i))
        else:
            writer.delete(f"c{n}")
        sent.append(writer.local.version)
        base = data.draw(st.sampled_from(sent))  # a delta from any earlier point
        delta = writer.local.changes_since(base)
        if delta is None or replica.apply(delta) is None:
            replica.load(writer.local.snapshot())
    final = writer.local.changes_since(replica.digest().get("a", ("", 0))[1])
    if final is None or replica.apply(final) is None:
        replica.load(writer.local.snapshot())
    assert replica.partitions["a"].entries == writer.local.entries
    assert replica.digest()["a"] == writer.digest()["a"]
