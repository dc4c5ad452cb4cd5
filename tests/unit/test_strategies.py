"""Unit tests of the strategies package: placement (ring determinism, movement, hooks), guided
placement, redundancy modes, migration and synchronization settings, quorum truth tables and
argument validation."""

from __future__ import annotations

import logging
import time
from bisect import bisect
from collections.abc import Callable
from hashlib import md5
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from uhashring import HashRing  # type: ignore[import-untyped]

import strategies
from hub import ChildSpec, Hook, HookHandler, HookIdConflict, HookManager, InvalidSpec, ReservedHook
from strategies import (
    ColdSwap,
    ConsistentHashing,
    DistributionStrategy,
    Divergence,
    DynamicQuorum,
    Guided,
    HotSwap,
    MajorityQuorum,
    MigrationStrategy,
    PartitionStrategy,
    PubSub,
    RedundancyStrategy,
    Replication,
    Singularity,
    SpecAware,
    StaticQuorum,
    SynchronizationStrategy,
)

IDS = [f"child-{i}" for i in range(10_000)]
START = "tests.procs:Counter"


def ring(*nodes: str, **kwargs: Any) -> ConsistentHashing:
    return ConsistentHashing(nodes=nodes, **kwargs)


def attached(local: str = "n1", **kwargs: Any) -> tuple[HookManager, ConsistentHashing]:
    hooks = HookManager()
    strategy = ConsistentHashing(**kwargs)
    strategy.attach(hooks, local)
    return hooks, strategy


def reference_owners(nodes: list[str], child_id: str, rf: int, vnodes: int = 160) -> list[str]:
    """An independent md5 ring (no uhashring): node N's points are md5("N-0") ...
    md5("N-{vnodes-1}") as integers; a key belongs to the first distinct nodes clockwise from
    md5(key)."""
    points = sorted(
        (int(md5(f"{node}-{w}".encode()).hexdigest(), 16), node)
        for node in nodes
        for w in range(vnodes)
    )
    positions = [p for p, _ in points]
    start = bisect(positions, int(md5(child_id.encode()).hexdigest(), 16)) % len(points)
    found: list[str] = []
    for step in range(len(points)):
        node = points[(start + step) % len(points)][1]
        if node not in found:
            found.append(node)
        if len(found) == min(rf, len(nodes)):
            break
    return found


# -- ConsistentHashing: determinism ------------------------------------------------------------


@pytest.mark.parametrize("hash_fn", ["md5", "ketama"])
async def test_same_joins_in_any_order_give_the_same_placement(hash_fn: str) -> None:
    names = ["n1", "n2", "n3", "n4", "n5"]
    hooks_a, a = attached("n1", hash_fn=hash_fn)
    hooks_b, b = attached("n3", hash_fn=hash_fn)
    for name in ["n2", "n3", "n4", "n5"]:
        await hooks_a.dispatch(Hook.PRE_CLUSTER_JOIN, name)
    for name in ["n5", "n1", "n4", "n2"]:
        await hooks_b.dispatch(Hook.PRE_CLUSTER_JOIN, name)
    assert a.nodes() == b.nodes() == names
    for rf in (1, 3):
        many_a = a.belongs_to_many(IDS, rf)
        assert many_a == b.belongs_to_many(IDS, rf)
        assert all(a.belongs_to(cid, rf) == many_a[cid] for cid in IDS[:2000])
    # and every node is used
    assert {owners[0] for owners in a.belongs_to_many(IDS).values()} == set(names)


@settings(max_examples=30, deadline=None)
@given(
    ops=st.lists(st.tuples(st.booleans(), st.sampled_from("abcdefgh")), max_size=30),
    order=st.randoms(use_true_random=False),
)
def test_ring_depends_only_on_the_member_set(ops: list[tuple[bool, str]], order: Any) -> None:
    churned = ConsistentHashing()
    for join, name in ops:
        (churned.add_node if join else churned.remove_node)(name)
    members = churned.nodes()
    shuffled = list(members)
    order.shuffle(shuffled)
    fresh = ring(*shuffled)
    ids = IDS[:500]
    assert churned.belongs_to_many(ids, 2) == fresh.belongs_to_many(ids, 2)


def test_placement_matches_an_independent_md5_ring_and_uhashring() -> None:
    nodes = ["alpha", "beta", "gamma", "delta"]
    strategy = ring(*reversed(nodes))
    plain = HashRing(nodes, vnodes=160)
    for cid in IDS[:400]:
        for rf in (1, 2, 4):
            expected = reference_owners(nodes, cid, rf)
            assert strategy.belongs_to(cid, rf) == expected
            assert [n["nodename"] for n in plain.range(cid, size=rf)] == expected


def test_golden_placements() -> None:
    """Pinned answers: a change of hashing (a bug, or a uhashring release) breaks mixed-version
    clusters, so it must be deliberate."""
    strategy = ring("node-a", "node-b", "node-c", "node-d")
    assert {cid: strategy.belongs_to(cid, 2) for cid in GOLDEN_MD5} == GOLDEN_MD5
    ketama = ring("node-a", "node-b", "node-c", "node-d", hash_fn="ketama")
    assert {cid: ketama.belongs_to(cid, 2) for cid in GOLDEN_KETAMA} == GOLDEN_KETAMA


GOLDEN_MD5 = {
    "c1": ["node-c", "node-a"],
    "orders:42": ["node-b", "node-d"],
    "user/7": ["node-b", "node-d"],
    "session-0001": ["node-a", "node-b"],
    "é-unicode": ["node-d", "node-b"],
}
GOLDEN_KETAMA = {
    "c1": ["node-c", "node-b"],
    "orders:42": ["node-b", "node-d"],
    "user/7": ["node-d", "node-a"],
    "session-0001": ["node-b", "node-a"],
    "é-unicode": ["node-a", "node-b"],
}


# -- ConsistentHashing: owners -----------------------------------------------------------------


def test_owners_are_distinct_primary_first_and_bounded_by_the_node_count() -> None:
    strategy = ring("n1", "n2", "n3", "n4")
    primaries = strategy.belongs_to_many(IDS[:3000])
    for rf in range(1, 7):
        many = strategy.belongs_to_many(IDS[:3000], rf)
        for cid, owners in many.items():
            assert len(owners) == min(rf, 4)
            assert len(set(owners)) == len(owners)
            assert owners[0] == primaries[cid][0]
            assert set(owners) <= {"n1", "n2", "n3", "n4"}
    assert ConsistentHashing().belongs_to("x", 3) == []
    assert ConsistentHashing().belongs_to_many(["x", "y"]) == {"x": [], "y": []}
    assert ring("solo").belongs_to("x", 5) == ["solo"]


def test_replicas_are_the_successors_when_the_primary_leaves() -> None:
    strategy = ring("n1", "n2", "n3", "n4")
    before = strategy.belongs_to_many(IDS[:2000], 3)
    strategy.remove_node("n2")
    after = strategy.belongs_to_many(IDS[:2000], 3)
    for cid, owners in before.items():
        assert after[cid][: len(owners) - ("n2" in owners)] == [n for n in owners if n != "n2"]


@pytest.mark.parametrize("existing", [1, 3, 4, 9])
def test_a_join_moves_about_one_nth_and_only_to_the_new_node(existing: int) -> None:
    strategy = ring(*[f"node-{i}" for i in range(existing)])
    before = strategy.belongs_to_many(IDS)
    strategy.add_node("newcomer")
    after = strategy.belongs_to_many(IDS)
    moved = [cid for cid in IDS if before[cid] != after[cid]]
    assert all(after[cid] == ["newcomer"] for cid in moved)
    assert {cid for cid in IDS if after[cid] == ["newcomer"]} == set(moved)
    size = existing + 1
    # measured ratios moved / (len(IDS) / size) lie in 0.80-1.24 over 450 configurations
    assert 0.5 / size * len(IDS) <= len(moved) <= 1.6 / size * len(IDS)


def test_a_leave_moves_exactly_the_leavers_children() -> None:
    strategy = ring("n1", "n2", "n3", "n4", "n5")
    before = strategy.belongs_to_many(IDS)
    strategy.remove_node("n3")
    after = strategy.belongs_to_many(IDS)
    moved = {cid for cid in IDS if before[cid] != after[cid]}
    assert moved == {cid for cid in IDS if before[cid] == ["n3"]}
    assert moved  # n3 owned some
    strategy.add_node("n3")
    assert strategy.belongs_to_many(IDS) == before


def test_belongs_to_many_is_fast_and_follows_ring_changes() -> None:
    strategy = ring(*[f"n{i}" for i in range(10)])
    began = time.perf_counter()
    many = strategy.belongs_to_many(IDS, 2)
    elapsed = time.perf_counter() - began
    assert elapsed < 0.5, f"belongs_to_many(10,000 ids) took {elapsed:.3f}s"  # ~15 ms measured
    assert len(many) == len(IDS)
    version = strategy.version
    strategy.add_node("n99")
    assert strategy.version == version + 1
    fresh = ring(*strategy.nodes()).belongs_to_many(IDS, 2)
    assert strategy.belongs_to_many(IDS, 2) == fresh != many
    strategy.remove_node("n99")
    assert strategy.belongs_to_many(IDS, 2) == many


def test_the_result_lists_are_the_callers_own() -> None:
    strategy = ring("n1", "n2")
    strategy.belongs_to("c1", 2).append("junk")
    strategy.belongs_to_many(["c1"], 2)["c1"].clear()
    assert len(strategy.belongs_to("c1", 2)) == 2


# -- ConsistentHashing: hooks ------------------------------------------------------------------


async def test_the_ring_follows_join_and_leave_hooks() -> None:
    hooks, strategy = attached("n1")
    assert strategy.nodes() == ["n1"]
    assert all(o == ["n1"] for o in strategy.belongs_to_many(IDS[:100], 3).values())
    await hooks.dispatch(Hook.PRE_CLUSTER_JOIN, "n2")
    assert strategy.nodes() == ["n1", "n2"]
    owners = strategy.belongs_to_many(IDS[:1000])
    assert {o[0] for o in owners.values()} == {"n1", "n2"}
    await hooks.dispatch(Hook.PRE_CLUSTER_LEAVE, "n2")
    assert strategy.nodes() == ["n1"]
    assert all(o == ["n1"] for o in strategy.belongs_to_many(IDS[:1000]).values())


async def test_handlers_are_idempotent() -> None:
    hooks, strategy = attached("n1")
    await hooks.dispatch(Hook.PRE_CLUSTER_JOIN, "n2")
    version = strategy.version
    await hooks.dispatch(Hook.PRE_CLUSTER_JOIN, "n2")
    await hooks.dispatch(Hook.PRE_CLUSTER_LEAVE, "unknown")
    await hooks.dispatch(Hook.PRE_CLUSTER_JOIN, "n1")
    assert strategy.version == version
    assert strategy.nodes() == ["n1", "n2"]


async def test_shutdown_resets_to_the_local_node() -> None:
    hooks, strategy = attached("n2")
    for name in ("n1", "n3", "n4"):
        await hooks.dispatch(Hook.PRE_CLUSTER_JOIN, name)
    await hooks.dispatch(Hook.COORDINATOR_SHUTDOWN, "shutdown")
    assert strategy.nodes() == ["n2"]
    assert strategy.belongs_to("c1", 3) == ["n2"]
    version = strategy.version
    await hooks.dispatch(Hook.COORDINATOR_SHUTDOWN, "again")
    assert strategy.version == version


async def test_ring_handlers_are_internal_at_priority_100() -> None:
    hooks, _ = attached("n1")
    for event, hid in [
        (Hook.PRE_CLUSTER_JOIN, "ch_join"),
        (Hook.PRE_CLUSTER_LEAVE, "ch_leave"),
        (Hook.COORDINATOR_SHUTDOWN, "ch_shutdown"),
    ]:
        [handler] = hooks.registered(event)
        assert (handler.id, handler.priority) == (hid, 100)
        with pytest.raises(ReservedHook):
            hooks.cancel(event, hid)
        with pytest.raises(ReservedHook):
            hooks.disable(event, hid)
        assert hooks.cancel(event, hid, force=True)
        assert hooks.registered(event) == []


async def test_a_user_handler_at_priority_0_sees_the_ring_already_updated() -> None:
    hooks = HookManager()
    seen: list[tuple[str, list[str], list[str]]] = []
    strategy = ConsistentHashing()

    def user(node: str) -> None:
        seen.append((node, strategy.nodes(), strategy.belongs_to("some-child", 2)))

    # registered before the strategy: priority, not registration order, puts the ring first
    hooks.register(Hook.PRE_CLUSTER_JOIN, HookHandler("user", user, priority=0))
    hooks.register(Hook.PRE_CLUSTER_LEAVE, HookHandler("user", user, priority=0))
    strategy.attach(hooks, "n1")
    await hooks.dispatch(Hook.PRE_CLUSTER_JOIN, "n2")
    await hooks.dispatch(Hook.PRE_CLUSTER_LEAVE, "n1")
    assert seen == [
        ("n2", ["n1", "n2"], ring("n1", "n2").belongs_to("some-child", 2)),
        ("n1", ["n2"], ["n2"]),
    ]


async def test_attach_is_idempotent_per_manager_and_refuses_a_second_one() -> None:
    hooks, strategy = attached("n1")
    strategy.attach(hooks, "n1")
    assert [h.id for h in hooks.registered(Hook.PRE_CLUSTER_JOIN)] == ["ch_join"]
    with pytest.raises(InvalidSpec, match="attached as node"):
        strategy.attach(hooks, "n9")
    with pytest.raises(InvalidSpec, match="another HookManager"):
        strategy.attach(HookManager(), "n1")


async def test_attach_with_a_taken_id_registers_nothing() -> None:
    hooks = HookManager()
    hooks.register(Hook.COORDINATOR_SHUTDOWN, HookHandler("ch_shutdown", print))
    strategy = ConsistentHashing()
    with pytest.raises(HookIdConflict):
        strategy.attach(hooks, "n1")
    assert hooks.registered(Hook.PRE_CLUSTER_JOIN) == []
    assert strategy.nodes() == []


async def test_a_bad_node_name_in_a_hook_is_logged_not_applied(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks, strategy = attached("n1")
    with caplog.at_level(logging.ERROR):
        await hooks.dispatch(Hook.PRE_CLUSTER_JOIN, "")
    assert strategy.nodes() == ["n1"]
    assert hooks.stats(Hook.PRE_CLUSTER_JOIN).failures == 1


# -- Guided ------------------------------------------------------------------------------------


def guided(*nodes: str) -> Guided:
    return Guided(ring(*nodes))


def test_guided_places_named_children_and_falls_back_for_the_rest() -> None:
    strategy = guided("n1", "n2", "n3", "n4")
    fallback = ring("n1", "n2", "n3", "n4")
    strategy.set_guidance("pinned", ["n3", "n1"])
    strategy.set_guidance("single", "n4")
    assert strategy.belongs_to("pinned") == ["n3"]
    assert strategy.belongs_to("pinned", 2) == ["n3", "n1"]
    assert strategy.belongs_to("single") == ["n4"]
    assert strategy.belongs_to("free", 2) == fallback.belongs_to("free", 2)
    ids = ["pinned", "single", *IDS[:1000]]
    many = strategy.belongs_to_many(ids, 2)
    assert many == {cid: strategy.belongs_to(cid, 2) for cid in ids}
    assert strategy.nodes() == fallback.nodes()


def test_guided_dead_nodes_fall_back_and_missing_replicas_are_filled() -> None:
    strategy = guided("n1", "n2", "n3")
    fallback = ring("n1", "n2", "n3")
    strategy.set_guidance("c", ["n9", "n2"])  # n9 is not alive
    assert strategy.belongs_to("c") == ["n2"]
    filled = strategy.belongs_to("c", 3)
    assert filled[0] == "n2"
    assert sorted(filled) == ["n1", "n2", "n3"]
    assert filled[1:] == [n for n in fallback.belongs_to("c", 3) if n != "n2"]
    strategy.set_guidance("gone", ["n8", "n9"])  # none alive
    assert strategy.belongs_to("gone", 2) == fallback.belongs_to("gone", 2)
    strategy.forget("c")
    strategy.forget(["never-guided"])
    assert strategy.belongs_to("c", 2) == fallback.belongs_to("c", 2)
    assert strategy.guidance("gone") == ("n8", "n9")
    assert strategy.guidance("c") is None


def test_guided_learns_from_spec_metadata() -> None:
    strategy = guided("n1", "n2", "n3")
    strategy.guide(
        [
            ChildSpec("a", START, metadata={"nodes": ["n2", "n3"]}),
            ChildSpec("b", START, metadata={"node": "n3"}),
            ChildSpec("c", START, metadata={"tag": "x"}),
        ]
    )
    assert strategy.belongs_to("a", 2) == ["n2", "n3"]
    assert strategy.belongs_to("b") == ["n3"]
    assert strategy.guidance("c") is None
    strategy.guide([ChildSpec("b", START)])  # re-learnt without guidance: cleared
    assert strategy.guidance("b") is None
    with pytest.raises(InvalidSpec):
        strategy.guide([ChildSpec("d", START), ChildSpec("e", START, metadata={"nodes": []})])
    assert strategy.guidance("a") == ("n2", "n3")  # nothing of the failed call applied


async def test_guided_learns_from_pre_children_start_through_an_internal_handler(
    caplog: pytest.LogCaptureFixture,
) -> None:
    hooks = HookManager()
    strategy = Guided()
    strategy.attach(hooks, "n1")
    await hooks.dispatch(Hook.PRE_CLUSTER_JOIN, "n2")
    assert strategy.nodes() == ["n1", "n2"]
    specs = [
        ChildSpec("bad", START, metadata={"nodes": "n2", "node": "n2"}),
        ChildSpec("good", START, metadata={"node": "n2"}),
    ]
    with caplog.at_level(logging.WARNING):
        await hooks.dispatch(Hook.PRE_CHILDREN_START, specs)
    assert strategy.belongs_to("good") == ["n2"]
    assert strategy.guidance("bad") is None
    assert "both 'nodes' and 'node'" in caplog.text
    [handler] = hooks.registered(Hook.PRE_CHILDREN_START)
    assert (handler.id, handler.priority) == ("dg_pre_start_handler", 100)
    with pytest.raises(ReservedHook):
        hooks.cancel(Hook.PRE_CHILDREN_START, "dg_pre_start_handler")
    strategy.attach(hooks, "n1")  # idempotent
    with pytest.raises(InvalidSpec):
        strategy.attach(HookManager(), "n1")


@pytest.mark.parametrize(
    "nodes", [[], "", [""], ["n1", "n1"], [1], b"n1", None, {"n1": 1}.keys(), 5]
)
def test_guided_refuses_bad_guidance(nodes: Any) -> None:
    with pytest.raises(InvalidSpec):
        guided("n1").set_guidance("c", nodes)


def test_guided_refuses_a_bad_fallback_and_bad_metadata() -> None:
    with pytest.raises(InvalidSpec, match="fallback"):
        Guided(fallback=Singularity())  # type: ignore[arg-type]
    with pytest.raises(InvalidSpec):
        guided("n1").guide([ChildSpec("c", START, metadata={"node": ["n1"]})])
    with pytest.raises(InvalidSpec):
        guided("n1").guide([object()])
    with pytest.raises(InvalidSpec):
        guided("n1").set_guidance("", ["n1"])


def test_guided_instances_do_not_share_a_default_fallback() -> None:
    first, second = Guided(), Guided()
    assert first.fallback is not second.fallback


# -- redundancy --------------------------------------------------------------------------------


def test_singularity() -> None:
    redundancy = Singularity()
    assert redundancy.replication_factor == 1
    assert redundancy.mode("n1", ["n1"]) == "active"
    assert redundancy.mode("n2", ["n1"]) == "passive"
    assert redundancy.mode("n1", []) == "passive"


@pytest.mark.parametrize(
    ("model", "expected"),
    [("active", ["active", "active", "active"]), ("passive", ["active", "passive", "passive"])],
)
def test_replication_modes(model: Any, expected: list[str]) -> None:
    redundancy = Replication(factor=3, replication_model=model)
    assert redundancy.replication_factor == 3
    owners = ["n2", "n1", "n3"]
    assert [redundancy.mode(node, owners) for node in owners] == expected
    assert redundancy.mode("n4", owners) == "passive"
    assert Replication().replication_factor == 2
    assert Replication().replication_model == "active"


# -- migration and synchronization -------------------------------------------------------------


def test_migration_settings() -> None:
    cold = ColdSwap()
    assert (cold.kind, cold.handover, cold.max_concurrent, cold.retention) == (
        "cold",
        False,
        64,
        0.0,
    )
    hot = HotSwap()
    assert (hot.kind, hot.handover, hot.max_concurrent, hot.retention) == ("hot", True, 64, 5.0)
    assert HotSwap(handover=False, max_concurrent=2, retention=0).retention == 0.0


def test_synchronization_settings() -> None:
    pubsub = PubSub()
    assert (pubsub.kind, pubsub.batch_window, pubsub.max_batch) == ("pubsub", 0.005, 1000)
    assert pubsub.anti_entropy_interval == 5.0
    assert not hasattr(strategies, "Gossip")  # no relaying: every delta takes one hop


def test_config_objects_are_frozen() -> None:
    with pytest.raises(AttributeError):
        PubSub().max_batch = 1  # type: ignore[misc]
    with pytest.raises(AttributeError):
        Replication().factor = 3  # type: ignore[misc]


# -- partition ---------------------------------------------------------------------------------


def test_divergence_never_locks() -> None:
    strategy = Divergence()
    strategy.attach(HookManager(), "a")
    for live, known in [([], []), ([], ["a", "b", "c"]), (["b"], ["a", "b", "c", "d", "e"])]:
        assert strategy.evaluate(live, known) is False
    assert strategy.describe() == {
        "strategy": "divergence",
        "locked": False,
        "alive": 2,
        "known": 5,
    }


@pytest.mark.parametrize(
    ("size", "live", "locked"),
    [
        (1, [], False),
        (2, [], True),
        (2, ["b"], False),
        (2, ["a"], True),  # the local node is counted once
        (3, ["b"], True),
        (3, ["b", "c"], False),
        (3, ["a", "b", "c", "d"], False),
    ],
)
def test_static_quorum(size: int, live: list[str], locked: bool) -> None:
    strategy = StaticQuorum(size)
    strategy.attach(HookManager(), "a")
    assert strategy.evaluate(live, ["a", "b", "c", "d"]) is locked
    assert strategy.describe()["size"] == size
    assert strategy.describe()["locked"] is locked


@pytest.mark.parametrize(
    ("live", "known", "locked"),
    [
        ([], [], False),  # alone, and nobody else known
        ([], ["b"], True),  # 1 of 2
        (["b"], ["b"], False),  # 2 of 2
        (["b"], ["b", "c"], False),  # 2 of 3
        ([], ["b", "c"], True),  # 1 of 3
        (["b"], ["b", "c", "d"], True),  # 2 of 4: an even split locks
        (["b", "c"], ["b", "c", "d"], False),  # 3 of 4
        (["b", "c"], ["d", "e"], False),  # live nodes count as known: 3 of 5
        (["b"], ["d", "e"], True),  # 2 of 4
    ],
)
def test_majority_quorum(live: list[str], known: list[str], locked: bool) -> None:
    strategy = MajorityQuorum()
    strategy.attach(HookManager(), "a")
    assert strategy.evaluate(live, known) is locked


def test_dynamic_quorum_locks_on_a_sudden_loss_not_on_a_slow_shrink() -> None:
    strategy = DynamicQuorum(threshold=0.5, window=30.0)
    strategy.attach(HookManager(), "a")
    cluster = ["a", "b", "c", "d"]
    assert strategy.evaluate(cluster, cluster, now=0.0) is False
    assert strategy.evaluate(["a", "b", "c"], cluster, now=10.0) is False  # 1/4 down
    assert strategy.evaluate(["a", "b"], cluster, now=20.0) is False  # 2/4 is not > half
    assert strategy.evaluate(["a"], cluster, now=25.0) is True  # 3/4 down within 30 s
    assert strategy.describe()["down"] == ["b", "c", "d"]
    # locked: nothing expires, however long it lasts
    assert strategy.evaluate(["a"], cluster, now=1000.0) is True
    assert strategy.evaluate(["a", "c"], cluster, now=1001.0) is False  # back to 2/4
    # unlocked again: b and d (down since 10 and 20) expire, the cluster is now {a, c}
    assert strategy.evaluate(["a", "c"], cluster, now=1002.0) is False
    assert strategy.describe()["down"] == []
    assert strategy.describe()["accepted_losses"] == ["b", "d"]
    assert strategy.evaluate(["a"], cluster, now=1003.0) is False  # 1/2 is not > half
    # an accepted loss that comes back is a member again, and counts when it goes down again
    assert strategy.evaluate(["a", "b", "c", "d"], cluster, now=1100.0) is False
    assert strategy.describe()["accepted_losses"] == []
    assert strategy.evaluate(["a"], cluster, now=1101.0) is True


def test_dynamic_quorum_slow_shrink_expires_old_losses() -> None:
    strategy = DynamicQuorum(threshold=0.5, window=30.0)
    strategy.attach(HookManager(), "a")
    cluster = ["a", "b", "c", "d"]
    assert strategy.evaluate(cluster, cluster, now=0.0) is False
    assert strategy.evaluate(["a", "c", "d"], cluster, now=100.0) is False
    assert strategy.evaluate(["a", "d"], cluster, now=140.0) is False  # b expired: 1/3
    assert strategy.evaluate(["a"], cluster, now=180.0) is False  # c expired: 1/2
    assert strategy.describe()["down"] == ["d"]


def test_dynamic_quorum_graceful_leaves_and_reset() -> None:
    strategy = DynamicQuorum(threshold=0.25, window=10.0)
    strategy.attach(HookManager(), "a")
    assert strategy.evaluate(["b", "c", "d"], ["b", "c", "d"], now=0.0) is False
    # b and c left gracefully: they are not known any more, so they do not count as lost
    assert strategy.evaluate(["d"], ["d"], now=1.0) is False
    assert strategy.evaluate([], ["d"], now=2.0) is True  # 1/2 > 0.25
    strategy.reset()
    assert strategy.evaluate([], [], now=3.0) is False
    zero = DynamicQuorum(threshold=0.0)
    assert zero.evaluate(["a", "b"], ["a", "b"], now=0.0) is False
    assert zero.evaluate(["a"], ["a", "b"], now=1.0) is True  # any loss locks
    assert isinstance(DynamicQuorum().evaluate(["a"], ["a"]), bool)  # the monotonic clock


# -- protocols, defaults, validation -----------------------------------------------------------


def test_every_strategy_implements_its_protocol() -> None:
    for obj in (ConsistentHashing(), Guided()):
        assert isinstance(obj, DistributionStrategy)
    assert isinstance(Guided(), SpecAware)
    assert not isinstance(ConsistentHashing(), SpecAware)
    for red in (Singularity(), Replication()):
        assert isinstance(red, RedundancyStrategy)
    for mig in (ColdSwap(), HotSwap()):
        assert isinstance(mig, MigrationStrategy)
    assert isinstance(PubSub(), SynchronizationStrategy)
    for part in (Divergence(), StaticQuorum(2), MajorityQuorum(), DynamicQuorum()):
        assert isinstance(part, PartitionStrategy)


def test_defaults_are_the_five_default_strategies_fresh_each_time() -> None:
    first, second = strategies.defaults(), strategies.defaults()
    assert {k: type(v) for k, v in first.items()} == {
        "distribution": ConsistentHashing,
        "redundancy": Singularity,
        "migration": ColdSwap,
        "synchronization": PubSub,
        "partition": Divergence,
    }
    assert first["distribution"] is not second["distribution"]
    assert set(strategies.__all__) >= {
        "ConsistentHashing",
        "Guided",
        "Singularity",
        "Replication",
        "ColdSwap",
        "HotSwap",
        "PubSub",
        "Divergence",
        "StaticQuorum",
        "MajorityQuorum",
        "DynamicQuorum",
        "defaults",
    }


BAD_ARGUMENTS: list[tuple[str, Callable[[], object]]] = [
    ("vnodes", lambda: ConsistentHashing(vnodes=0)),
    ("vnodes", lambda: ConsistentHashing(vnodes=1.5)),  # type: ignore[arg-type]
    ("vnodes", lambda: ConsistentHashing(vnodes=True)),
    ("hash_fn", lambda: ConsistentHashing(hash_fn="sha1")),
    ("hash_fn", lambda: ConsistentHashing(hash_fn=hash)),  # type: ignore[arg-type]
    ("nodes", lambda: ConsistentHashing(nodes="abc")),
    ("node name", lambda: ConsistentHashing(nodes=[""])),
    ("replication_factor", lambda: ring("a").belongs_to("c", 0)),
    ("replication_factor", lambda: ring("a").belongs_to_many(["c"], 0)),
    ("iterable", lambda: ring("a").belongs_to_many("abc")),
    ("str", lambda: ring("a").belongs_to_many([1])),  # type: ignore[list-item]
    ("factor", lambda: Replication(factor=0)),
    ("factor", lambda: Replication(factor="2")),  # type: ignore[arg-type]
    ("replication_model", lambda: Replication(replication_model="hot")),  # type: ignore[arg-type]
    ("max_concurrent", lambda: ColdSwap(max_concurrent=0)),
    ("max_concurrent", lambda: HotSwap(max_concurrent=-1)),
    ("handover", lambda: HotSwap(handover=1)),  # type: ignore[arg-type]
    ("retention", lambda: HotSwap(retention=-0.1)),
    ("retention", lambda: HotSwap(retention=float("inf"))),
    ("batch_window", lambda: PubSub(batch_window=-1)),
    ("max_batch", lambda: PubSub(max_batch=0)),
    ("anti_entropy_interval", lambda: PubSub(anti_entropy_interval=0)),
    ("anti_entropy_interval", lambda: PubSub(anti_entropy_interval=float("nan"))),
    ("max_state_bytes", lambda: HotSwap(max_state_bytes=0)),
    ("max_state_bytes", lambda: HotSwap(max_state_bytes=9 * 1024 * 1024)),
    ("size", lambda: StaticQuorum(0)),
    ("size", lambda: StaticQuorum(2.0)),  # type: ignore[arg-type]
    ("threshold", lambda: DynamicQuorum(threshold=1.0)),
    ("threshold", lambda: DynamicQuorum(threshold=-0.1)),
    ("window", lambda: DynamicQuorum(window=0)),
    ("now", lambda: DynamicQuorum().evaluate([], [], now=float("nan"))),
    ("collection", lambda: MajorityQuorum().evaluate("abc", [])),
    ("hooks", lambda: ConsistentHashing().attach(object(), "n1")),  # type: ignore[arg-type]
    ("node name", lambda: ConsistentHashing().attach(HookManager(), "")),
    ("hooks", lambda: StaticQuorum(1).attach(None, "n1")),  # type: ignore[arg-type]
]


@pytest.mark.parametrize(
    ("what", "make"), BAD_ARGUMENTS, ids=[f"{i}-{w}" for i, (w, _) in enumerate(BAD_ARGUMENTS)]
)
def test_bad_arguments_raise_invalid_spec(what: str, make: Callable[[], object]) -> None:
    with pytest.raises(InvalidSpec, match=what) as caught:
        make()
    assert isinstance(caught.value, ValueError)


def test_a_partition_strategy_serves_one_node() -> None:
    strategy = MajorityQuorum()
    strategy.attach(HookManager(), "a")
    strategy.attach(HookManager(), "a")  # re-attaching as the same node is fine
    with pytest.raises(InvalidSpec, match="one strategy instance per hub"):
        strategy.attach(HookManager(), "b")
