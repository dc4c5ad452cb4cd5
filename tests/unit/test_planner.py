"""The pure planner: one rule per test, inputs built by hand, exact actions asserted."""

from __future__ import annotations

import random
from collections.abc import Sequence

from hub.desired import BURIED, LIVE, STOPPED, DesiredTable, Record
from hub.planner import (
    Bury,
    Conflict,
    Failures,
    LocalChild,
    Move,
    Planner,
    Start,
    Stop,
    View,
    catching_up,
    foreign_starts,
    owned_elsewhere,
    start_target,
    strays,
    synchronized,
)
from hub.spec import ChildSpec


def record(cid: str, epoch: int = 1, status: int = LIVE, max_restarts: int = 3) -> Record:
    spec = ChildSpec(cid, "tests.procs:Counter", max_restarts=max_restarts)
    return Record(spec, {}, epoch, "a", status)


class Running:
    def __init__(self, where: dict[str, list[tuple[str, int]]]) -> None:
        self.where = where

    def running_on(self, child_id: str) -> Sequence[tuple[str, int]]:
        return self.where.get(child_id, [])


def table(*records: Record) -> DesiredTable:
    t = DesiredTable()
    for r in records:
        t.merge(r)
    return t


def owners(mapping: dict[str, list[str]]):  # type: ignore[no-untyped-def]
    return lambda cid: mapping[cid]


def view(me: str, *live: str, **kw: frozenset[str]) -> View:
    return View(me, frozenset([me, *live]), **kw)


def test_an_orphan_is_started_by_its_owner_only() -> None:
    desired = table(record("c"))
    where = owners({"c": ["b"]})
    plan_b = Planner().plan(view("b", "a"), where, desired, Running({}), {}, ["c"])
    plan_a = Planner().plan(view("a", "b"), where, desired, Running({}), {}, ["c"])
    assert plan_b.actions == [Start("c", record("c"), "failover")]
    assert plan_a.actions == []
    assert plan_a.orphans == ["c"]  # kept: its owner may be a node not yet detected dead


def test_a_child_running_on_a_live_node_is_not_started_again() -> None:
    plan = Planner().plan(
        view("b", "a"),
        owners({"c": ["b"]}),
        table(record("c")),
        Running({"c": [("a", 1)]}),
        {},
        ["c"],
    )
    assert plan.actions == []  # a moves it here; b does not start a second copy


def test_a_copy_on_a_dead_node_does_not_count() -> None:
    plan = Planner().plan(
        view("b", "a"),
        owners({"c": ["b"]}),
        table(record("c")),
        Running({"c": [("x", 1)]}),
        {},
        ["c"],
    )
    assert plan.actions == [Start("c", record("c"), "failover")]


def test_a_local_copy_off_its_owner_moves_there() -> None:
    plan = Planner().plan(
        view("a", "b"),
        owners({"c": ["b"]}),
        table(record("c")),
        Running({"c": [("a", 1)]}),
        {"c": LocalChild(1, "running")},
        ["c"],
    )
    assert plan.actions == [Move("c", "b", False)]


def test_hot_moves_are_planned_as_hot() -> None:
    plan = Planner(hot_moves=True).plan(
        view("a", "b"), owners({"c": ["b"]}), table(record("c")), Running({}),
        {"c": LocalChild(1, "running")}, ["c"],
    )  # fmt: skip
    assert plan.actions == [Move("c", "b", True)]


def test_a_surplus_copy_stops_in_favour_of_the_owner() -> None:
    plan = Planner().plan(
        view("a", "b"),
        owners({"c": ["b"]}),
        table(record("c")),
        Running({"c": [("b", 1)]}),
        {"c": LocalChild(1, "running")},
        ["c"],
    )
    assert plan.actions == [Conflict("c", "b", "a"), Stop("c", "conflict")]


def test_two_stray_copies_one_moves_the_other_stops() -> None:
    desired = table(record("c"))
    running = Running({"c": [("a", 1), ("b", 1)]})
    where = owners({"c": ["x"]})
    local = {"c": LocalChild(1, "running")}
    plan_a = Planner().plan(view("a", "b", "x"), where, desired, running, local, ["c"])
    plan_b = Planner().plan(view("b", "a", "x"), where, desired, running, local, ["c"])
    assert plan_a.actions == [Move("c", "x", False)]  # the lowest name moves
    assert plan_b.actions == [Conflict("c", "a", "b"), Stop("c", "conflict")]


def test_no_move_toward_a_peer_whose_registry_is_not_synced() -> None:
    plan = Planner().plan(
        view("a", "b", unsynced=frozenset({"b"})),
        owners({"c": ["b"]}),
        table(record("c")),
        Running({}),
        {"c": LocalChild(1, "running")},
        ["c"],
    )
    assert plan.actions == []


def test_no_move_toward_a_joiner_still_loading_the_registry_but_its_orphans_start() -> None:
    local = {"c": LocalChild(1, "running")}
    held = Planner().plan(
        view("a", "b", loading=frozenset({"b"})),
        owners({"c": ["b"], "d": ["a"]}),
        table(record("c"), record("d")),
        Running({}),
        local,
        ["c", "d"],
    )
    assert held.actions == [Start("d", record("d"), "failover", "active")]
    moved = Planner().plan(
        view("a", "b"), owners({"c": ["b"]}), table(record("c")), Running({}), local, ["c"]
    )
    assert moved.actions == [Move("c", "b", False)]
    leaving = Planner().plan(
        view("a", "b", loading=frozenset({"b"}), draining=frozenset({"a"})),
        owners({"c": ["b"]}),
        table(record("c")),
        Running({}),
        local,
        ["c"],
    )
    assert leaving.actions == [Move("c", "b", False)]  # a draining node does not wait


def test_no_orphan_start_while_a_peer_is_unsynced() -> None:
    plan = Planner().plan(
        view("b", "a", unsynced=frozenset({"a"})),
        owners({"c": ["b"]}), table(record("c")), Running({}), {}, ["c"],
    )  # fmt: skip
    assert plan.actions == []
    assert plan.orphans == ["c"]


def test_a_stopped_or_buried_record_stops_the_local_copy() -> None:
    for status in (STOPPED, BURIED):
        plan = Planner().plan(
            view("a"), owners({"c": ["a"]}), table(record("c", 2, status)), Running({}),
            {"c": LocalChild(1, "running")}, ["c"],
        )  # fmt: skip
        assert plan.actions == [Stop("c", "stopped")]


def test_a_copy_older_than_its_record_is_stale() -> None:
    plan = Planner().plan(
        view("a"), owners({"c": ["a"]}), table(record("c", 3)), Running({}),
        {"c": LocalChild(1, "running")}, ["c"],
    )  # fmt: skip
    assert plan.actions == [Stop("c", "stale")]


def test_a_failed_start_waits_for_its_backoff_then_retries_then_is_buried() -> None:
    desired = table(record("c", max_restarts=2))
    args = (view("a"), owners({"c": ["a"]}), desired, Running({}), {}, ["c"])
    waiting = Planner().plan(*args, failures={"c": Failures(1, 5.0, "boom")}, now=1.0)
    assert waiting.actions == []
    assert waiting.wake_at == 5.0
    retry = Planner().plan(*args, failures={"c": Failures(2, 5.0, "boom")}, now=5.0)
    assert retry.actions == [Start("c", record("c", max_restarts=2), "failover")]
    given_up = Planner().plan(*args, failures={"c": Failures(3, 9.0, "boom")}, now=9.0)
    assert given_up.actions == [Bury("c", record("c", max_restarts=2), 3, "boom")]


def test_an_announced_move_is_waited_for() -> None:
    args = (view("b", "a"), owners({"c": ["b"]}), table(record("c")), Running({}), {}, ["c"])
    plan = Planner().plan(*args, in_transit={"c": 7.0}, now=2.0)
    assert plan.actions == []
    assert plan.wake_at == 7.0
    assert Planner().plan(*args, in_transit={"c": 7.0}, now=7.5).actions[0].child_id == "c"


def test_busy_children_are_skipped_until_their_deadline() -> None:
    args = (view("b"), owners({"c": ["b"]}), table(record("c")), Running({}), {}, ["c"])
    busy = Planner().plan(*args, busy={"c": 3.0}, now=1.0)
    assert busy.actions == []
    assert busy.deferred == []  # the shell plans it again when its operation ends
    assert len(Planner().plan(*args, busy={"c": 3.0}, now=3.0).actions) == 1


def test_a_draining_node_owns_nothing_but_its_copies_still_count() -> None:
    # the shell passes owners over the non-draining members; a copy on the draining node
    # counts as running (it moves the child itself), so the owner does not start another
    plan = Planner().plan(
        view("b", "d", draining=frozenset({"d"})),
        owners({"c": ["b"]}), table(record("c")), Running({"c": [("d", 1)]}), {}, ["c"],
    )  # fmt: skip
    assert plan.actions == []


def test_replicas_fill_missing_owners_once_no_stray_copy_is_left() -> None:
    planner = Planner(replication_factor=2, replica_mode="passive")
    where = owners({"c": ["a", "b"]})
    with_stray = planner.plan(
        view("b", "a", "x"), where, table(record("c")), Running({"c": [("a", 1), ("x", 1)]}), {},
        ["c"],
    )  # fmt: skip
    assert with_stray.actions == []  # x moves its copy to b
    plan = planner.plan(
        view("b", "a"), where, table(record("c")), Running({"c": [("a", 1)]}), {}, ["c"]
    )
    assert plan.actions == [Start("c", record("c"), "replica", "passive")]


def test_locked_starts_and_moves_nothing_and_stops_every_local_copy() -> None:
    locked = View("a", frozenset({"a", "b"}), locked=True)
    orphan = Planner().plan(
        locked, owners({"c": ["a"]}), table(record("c")), Running({}), {}, ["c"]
    )
    stray = Planner().plan(
        locked, owners({"c": ["b"]}), table(record("c")), Running({}),
        {"c": LocalChild(1, "running")}, ["c"],
    )  # fmt: skip
    owned = Planner().plan(
        locked, owners({"c": ["a"]}), table(record("c")), Running({}),
        {"c": LocalChild(1, "running")}, ["c"],
    )  # fmt: skip
    assert orphan.actions == []
    assert stray.actions == [Stop("c", "locked")]  # not moved: stopped
    assert owned.actions == [Stop("c", "locked")]  # even on its owner


def test_planning_is_deterministic_and_idempotent() -> None:
    desired = table(*(record(f"c{i}") for i in range(50)))
    where = owners({f"c{i}": [("a", "b", "c")[i % 3]] for i in range(50)})
    ids = [f"c{i}" for i in range(50)]
    first = Planner().plan(view("a", "b", "c"), where, desired, Running({}), {}, ids)
    again = Planner().plan(view("a", "b", "c"), where, desired, Running({}), {}, reversed(ids))
    assert sorted(first.actions) == sorted(again.actions)
    started = {a.child_id: LocalChild(1, "starting") for a in first.actions}
    after = Planner().plan(view("a", "b", "c"), where, desired, Running({}), started, ids)
    assert [a for a in after.actions if a.child_id in started] == []


def test_start_requests_are_forwarded_a_bounded_number_of_times() -> None:
    assert start_target("a", ["b"], 0, 2) == "b"
    assert start_target("a", ["b"], 2, 2) == "a"  # past the bound: start where it is
    assert start_target("a", ["a", "b"], 0, 2) == "a"
    assert start_target("a", [], 0, 2) == "a"


def test_synchronized_compares_every_live_peer() -> None:
    assert synchronized(1, {"b": 1, "c": 1}, ["a", "b", "c"], "a")
    assert not synchronized(1, {"b": 1}, ["a", "b", "c"], "a")
    assert not synchronized(1, {"b": 2, "c": 1}, ["a", "b", "c"], "a")


def test_moves_stops_of_surplus_and_replicas_wait_for_the_membership_to_settle() -> None:
    unsettled = View("a", frozenset({"a", "b"}), settle_at=10.0)
    args = (owners({"c": ["b"]}), table(record("c")), Running({}), {"c": LocalChild(1, "running")})
    early = Planner().plan(unsettled, *args, ["c"], now=9.0)
    assert early.actions == []
    assert early.wake_at == 10.0
    assert Planner().plan(unsettled, *args, ["c"], now=10.0).actions == [Move("c", "b", False)]
    # a failover start does not wait
    orphan = Planner().plan(
        View("b", frozenset({"a", "b"}), settle_at=10.0),
        owners({"c": ["b"]}), table(record("c")), Running({}), {}, ["c"], now=9.0,
    )  # fmt: skip
    assert orphan.actions == [Start("c", record("c"), "failover")]


def test_a_copy_that_just_moved_in_does_not_lose_a_conflict_until_its_deadline() -> None:
    args = (
        view("t", "s", "o"), owners({"c": ["o"]}), table(record("c")),
        Running({"c": [("o", 1)]}), {"c": LocalChild(1, "running")}, ["c"],
    )  # fmt: skip
    early = Planner().plan(*args, arrived={"c": 5.0}, now=1.0)
    assert early.actions == []
    assert early.deferred == [(5.0, "c")]
    assert Planner().plan(*args, arrived={"c": 5.0}, now=5.0).actions == [
        Conflict("c", "o", "t"),
        Stop("c", "conflict"),
    ]


def test_a_replica_that_cannot_start_buries_nothing() -> None:
    planner = Planner(replication_factor=2)
    plan = planner.plan(
        view("b", "a"), owners({"c": ["a", "b"]}), table(record("c", max_restarts=1)),
        Running({"c": [("a", 1)]}), {}, ["c"], failures={"c": Failures(2, 0.0, "boom")},
    )  # fmt: skip
    assert plan.actions == []


def test_failover_starts_wait_for_starts_after_and_are_planned_again_then() -> None:
    view = View("a", frozenset({"a", "b"}), starts_after=5.0)
    plan = Planner().plan(
        view, owners({"c": ["a"]}), table(record("c")), Running({}), {}, ["c"], now=1.0
    )
    assert plan.actions == []
    assert plan.orphans == ["c"]
    assert plan.deferred == [(5.0, "c")]
    later = Planner().plan(
        view, owners({"c": ["a"]}), table(record("c")), Running({}), {}, ["c"], now=5.0
    )
    assert later.actions == [Start("c", record("c"), "failover")]


def test_without_replication_a_child_running_elsewhere_needs_no_placement_here() -> None:
    """One copy runs on a live peer and none here: nothing to do, and the ring is not even
    asked (a node holds registry entries for every child of the cluster). Under replication
    the placement still decides (a missing replica starts here)."""
    asked: list[str] = []

    def ring(cid: str) -> list[str]:
        asked.append(cid)
        return ["b", "a"]

    desired = table(record("c"))
    running = Running({"c": [("a", 1)]})
    plan = Planner().plan(view("b", "a"), ring, desired, running, {}, ["c"])
    assert (plan.actions, plan.orphans, asked) == ([], [], [])
    replicated = Planner(replication_factor=2).plan(
        view("b", "a"), ring, desired, running, {}, ["c"], now=10.0
    )
    assert asked == ["c"]
    assert replicated.actions == [Start("c", record("c"), "replica", "active")]


def test_a_local_copy_on_its_owner_stays_without_a_look_at_the_other_copies() -> None:
    class Unasked:
        def running_on(self, child_id: str) -> list[tuple[str, int]]:
            raise AssertionError("copies looked up")

    local = {"c": LocalChild(1, "running")}
    plan = Planner().plan(
        view("a", "b"), lambda cid: ["a"], table(record("c")), Unasked(), local, ["c"]
    )
    assert (plan.actions, plan.orphans) == ([], [])


def test_the_planned_starts_to_cancel_are_those_of_children_owned_elsewhere_now() -> None:
    owners = {"x": ["a"], "y": ["b"], "z": ["b", "a"], "w": []}
    assert foreign_starts("a", {"w", "z", "y", "x"}, lambda cid: owners[cid]) == ["y"]


def test_a_copy_is_owned_elsewhere_only_when_an_owner_exists_and_is_another_node() -> None:
    assert owned_elsewhere("a", ["b"])
    assert not owned_elsewhere("a", ["b", "a"])
    assert not owned_elsewhere("a", [])  # every live node drains: a local copy stays


def test_the_strays_are_the_local_copies_owned_elsewhere() -> None:
    owners = {"x": ["a"], "y": ["b"], "z": ["b", "a"], "w": []}
    assert strays("a", ["x", "y", "z", "w"], lambda cid: owners[cid]) == ["y"]


def test_a_local_copy_that_is_no_stray_gets_the_same_actions_whatever_the_view() -> None:
    """Why the shell replans only :func:`strays` after a view change: for the other local
    copies the plan reads the record, the local state and the lock, never the members,
    draining, unsynced peers, settle time or the copies elsewhere."""
    rng = random.Random(7)
    peers = ["b", "c", "d"]
    for _ in range(500):
        cid = "x"
        own = rng.choice([["a"], ["a", "b"], ["b", "a"], []])
        mine = {
            cid: LocalChild(rng.choice([1, 2]), rng.choice(["running", "starting", "stopping"]))
        }
        desired = table(record(cid, epoch=rng.choice([1, 2]), status=rng.choice([LIVE, STOPPED])))
        planner = Planner(replication_factor=rng.choice([1, 2]), hot_moves=rng.random() < 0.5)
        placed = owners({cid: own})
        assert strays("a", [cid], placed) == []
        base = planner.plan(view("a"), placed, desired, Running({}), mine, [cid], now=1.0)
        live = rng.sample(peers, rng.randint(0, 3))
        other = View(
            "a",
            frozenset(["a", *live]),
            draining=frozenset(rng.sample(live, rng.randint(0, len(live)))),
            unsynced=frozenset(rng.sample(live, rng.randint(0, len(live)))),
            settle_at=rng.choice([0.0, 5.0]),
            starts_after=rng.choice([0.0, 5.0]),
            loading=frozenset(rng.sample(live, rng.randint(0, len(live)))),
        )
        running = Running({cid: [(n, rng.choice([1, 2])) for n in rng.sample(live, len(live))]})
        plan = planner.plan(other, placed, desired, running, mine, [cid], now=1.0)
        assert (plan.actions, plan.orphans, plan.deferred) == (
            base.actions,
            base.orphans,
            base.deferred,
        )


def test_catching_up_until_both_hold_the_same_partitions_by_node_and_boot() -> None:
    own = [("a", "b1", 7), ("b", "b2", 3)]
    assert not catching_up([("a", "b1", 5), ("b", "b2", 3)], own)  # versions may lag
    assert catching_up([("a", "b1", 7)], own)  # it lacks b's partition
    assert catching_up([("a", "b1", 7), ("b", "old", 9)], own)  # an old boot of b
    assert catching_up([("a", "b1", 7), ("b", "b2", 3), ("c", "b3", 1)], own)  # we lack c's
