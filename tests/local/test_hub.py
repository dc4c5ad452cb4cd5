"""Single-node hub: starts, stops, registry, hooks, messaging and lifecycle."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from hub import (
    AlreadyStarted,
    ChildSpec,
    ChildStarted,
    Hook,
    HookHandler,
    Hub,
    HubClosed,
    InvalidSpec,
    NotFound,
    Pid,
    PidInserted,
    PidRemoved,
    StartFailed,
    Timeout,
)
from tests import procs
from tests.conftest import Recorder, wait_until


async def test_started_children_are_registered_and_listed(make_hub: Any) -> None:
    hub = await make_hub()
    res = await hub.start_children(
        [ChildSpec("c1", procs.Counter, args=[5]), ChildSpec("c2", procs.echo)],
        metadata={"tag": "group-a"},
    )
    assert res.status == "ok"
    assert [cid for cid, _ in res.started] == ["c1", "c2"]
    (node, pid) = hub.lookup("c1")[0]
    assert node == "n1"
    assert pid.node == "n1"
    assert pid.boot_id == hub.boot_id
    assert hub.get_pid("c1") == pid
    assert hub.get_pids("c2") == [hub.lookup("c2")[0][1]]
    assert [cid for cid, _ in hub.process_list()] == ["c1", "c2"]
    assert hub.process_list("local") == [("c1", pid), ("c2", hub.get_pid("c2"))]
    dump = hub.registry_dump()
    assert dump["c1"].spec.args == (5,)
    assert dump["c1"].metadata == {"tag": "group-a"}
    assert [cid for cid, _ in hub.tag_query("group-a")] == ["c1", "c2"]
    assert hub.tag_query("other") == []
    assert hub.lookup("nope") == []
    assert hub.get_pid("nope") is None
    assert hub.nodes() == []
    assert hub.nodes(include_local=True) == ["n1"]


async def test_spec_metadata_tags_are_queryable(make_hub: Any) -> None:
    hub = await make_hub()
    await hub.start_children(
        [ChildSpec("t1", procs.idle, metadata={"tags": ["x", "y"]}), ChildSpec("t2", procs.idle)]
    )
    assert [cid for cid, _ in hub.tag_query("y")] == ["t1"]


async def test_already_started_is_detected_and_reported(make_hub: Any, recorder: Recorder) -> None:
    hub = await make_hub()
    await hub.start_child(ChildSpec("c1", procs.idle))
    res = await hub.start_children([ChildSpec("c1", procs.idle), ChildSpec("c2", procs.idle)])
    assert res.status == "error"
    assert [cid for cid, _ in res.started] == ["c2"]
    assert len(res.errors) == 1
    assert isinstance(res.errors[0][1], AlreadyStarted)
    with pytest.raises(AlreadyStarted):
        res.raise_for_errors()
    post = recorder.of(Hook.POST_CHILDREN_START)[-1]
    assert sorted((r.child_id, r.result) for r in post) == [
        ("c1", "already_started"),
        ("c2", "ok"),
    ]


async def test_rollback_stops_the_started_children_when_one_fails(make_hub: Any) -> None:
    hub = await make_hub()
    res = await hub.start_children(
        [ChildSpec("good", procs.Counter), ChildSpec("bad", procs.FailingInit)],
        on_failure="rollback",
    )
    assert res.status == "error"
    assert res.started == []
    assert res.rolled_back == ["good"]
    assert isinstance(res.errors[0][1], StartFailed)
    assert "bad init" in str(res.errors[0][1])
    assert hub.lookup("good") == []
    assert hub.lookup("bad") == []


async def test_continue_keeps_the_children_that_started(make_hub: Any) -> None:
    hub = await make_hub()
    res = await hub.start_children(
        [ChildSpec("good", procs.Counter), ChildSpec("bad", procs.FailingInit)]
    )
    assert [cid for cid, _ in res.started] == ["good"]
    assert [cid for cid, _ in res.errors] == ["bad"]
    assert res.rolled_back == []
    assert len(hub.lookup("good")) == 1


async def test_unresolvable_and_wrong_kind_of_start_fail_cleanly(make_hub: Any) -> None:
    hub = await make_hub()
    res = await hub.start_children(
        [
            ChildSpec("a", "tests.procs:DoesNotExist"),
            ChildSpec("b", "no_such_module_xyz:f"),
            ChildSpec("c", procs.not_async),
        ]
    )
    reasons = {cid: str(err) for cid, err in res.errors}
    assert set(reasons) == {"a", "b", "c"}
    assert "DoesNotExist" in reasons["a"]
    assert "no_such_module_xyz" in reasons["b"]
    assert "neither a Process subclass nor an async function" in reasons["c"]
    assert hub.process_list() == []


async def test_init_that_hangs_past_the_timeout_is_stopped_and_reported(make_hub: Any) -> None:
    hub = await make_hub()
    res = await hub.start_children([ChildSpec("slow", procs.HangingInit)], timeout=0.05)
    assert isinstance(res.errors[0][1], Timeout)
    assert hub.lookup("slow") == []
    assert hub.runtime.supervisor.get("slow") is None


async def test_bad_requests_raise_before_anything_starts(make_hub: Any) -> None:
    hub = await make_hub()
    with pytest.raises(InvalidSpec, match="twice"):
        await hub.start_children([ChildSpec("d", procs.idle), ChildSpec("d", procs.idle)])
    with pytest.raises(InvalidSpec, match="expected ChildSpec"):
        await hub.start_children([{"id": "x"}])  # type: ignore[list-item]
    with pytest.raises(InvalidSpec, match="list of ChildSpec"):
        await hub.start_children(ChildSpec("x", procs.idle))  # type: ignore[arg-type]
    with pytest.raises(InvalidSpec, match="on_failure"):
        await hub.start_children([], on_failure="retry")  # type: ignore[arg-type]
    with pytest.raises(InvalidSpec, match="timeout"):
        await hub.start_children([], timeout=-1)
    with pytest.raises(InvalidSpec, match="list of ids"):
        await hub.stop_children("abc")
    assert hub.process_list() == []


async def test_stop_children_terminates_and_unregisters(make_hub: Any, recorder: Recorder) -> None:
    hub = await make_hub()
    await hub.start_children([ChildSpec("c1", procs.Counter), ChildSpec("c2", procs.echo)])
    res = await hub.stop_children(["c1", "c2", "ghost"])
    assert res.status == "error"
    assert sorted(res.stopped) == [("c1", ["n1"]), ("c2", ["n1"])]
    assert [(cid, type(e)) for cid, e in res.errors] == [("ghost", NotFound)]
    assert procs.TERMINATED == [("c1", "shutdown")]
    assert hub.process_list() == []
    assert sorted(d.child_id for d in recorder.of(Hook.CHILD_STOPPED)) == ["c1", "c2"]
    removed = recorder.of(Hook.REGISTRY_PID_REMOVED)
    assert sorted(removed) == [PidRemoved("c1", ["n1"]), PidRemoved("c2", ["n1"])]


async def test_a_terminate_that_hangs_is_cut_at_shutdown_timeout(
    make_hub: Any, recorder: Recorder
) -> None:
    hub = await make_hub()
    await hub.start_child(ChildSpec("s", procs.StubbornTerminate, shutdown_timeout=0.05))
    res = await hub.stop_child("s")
    assert res.stopped == [("s", ["n1"])]
    assert hub.lookup("s") == []
    assert [d.child_id for d in recorder.of(Hook.CHILD_STOPPED)] == ["s"]


async def test_lifecycle_hooks_fire_in_order_with_their_payloads(
    make_hub: Any, recorder: Recorder
) -> None:
    hub = await make_hub()
    spec = ChildSpec("c1", procs.Counter)
    await hub.start_children([spec])
    pid = hub.get_pid("c1")
    assert recorder.of(Hook.PRE_CHILDREN_START) == [[spec]]
    assert recorder.of(Hook.REGISTRY_PID_INSERTED) == [PidInserted("c1", [("n1", pid)])]
    assert recorder.of(Hook.PROCESS_STARTUPS) == [[("c1", pid)]]
    assert recorder.of(Hook.POST_CHILDREN_START) == [[ChildStarted("c1", "ok", pid, ["n1"])]]
    order = [e for e, _ in recorder.events]
    assert order == [
        Hook.PRE_CHILDREN_START,
        Hook.REGISTRY_PID_INSERTED,
        Hook.PROCESS_STARTUPS,
        Hook.POST_CHILDREN_START,
    ]
    await hub.stop("bye")
    assert recorder.of(Hook.COORDINATOR_SHUTDOWN) == ["bye"]
    assert recorder.of(Hook.REGISTRY_PID_REMOVED) == [PidRemoved("c1", ["n1"])]


async def test_child_data_alter_changes_the_spec_before_start(make_hub: Any) -> None:
    def bump(spec: ChildSpec) -> ChildSpec:
        return spec.replace(args=[spec.args[0] * 10])

    def broken(spec: ChildSpec) -> Any:
        return "not a spec" if spec.id == "odd" else spec

    hub = await make_hub(
        hooks={
            Hook.CHILD_DATA_ALTER: [
                HookHandler("bump", bump, priority=10),
                HookHandler("broken", broken),
            ]
        }
    )
    res = await hub.start_children(
        [ChildSpec("c1", procs.Counter, args=[4]), ChildSpec("odd", procs.Counter, args=[1])]
    )
    assert await hub.call("c1", "get") == 40
    assert [cid for cid, _ in res.errors] == ["odd"]
    assert isinstance(res.errors[0][1], InvalidSpec)
    assert hub.lookup("odd") == []


async def test_cast_and_call_reach_the_process(make_hub: Any) -> None:
    hub = await make_hub()
    await hub.start_children([ChildSpec("c1", procs.Counter, args=[5]), ChildSpec("e", procs.echo)])
    await hub.cast("c1", {"by": 2})
    await hub.cast(hub.get_pid("c1"), {"by": 3})
    assert await hub.call("c1", "get") == 10
    assert await hub.call("e", "hi") == ("echo", "hi", ())
    with pytest.raises(NotFound):
        await hub.call("ghost", "x")
    with pytest.raises(NotFound):
        await hub.cast(Pid("n1", hub.boot_id, 999_999), {"by": 1})
    with pytest.raises(NotFound):
        await hub.cast(Pid("other", "boot", 1), {"by": 1})


async def test_call_times_out_precisely(make_hub: Any) -> None:
    hub = await make_hub()
    await hub.start_child(ChildSpec("s", procs.Silent))
    with pytest.raises(Timeout, match=r"no reply within 0\.05s"):
        await hub.call("s", "anything", timeout=0.05)
    with pytest.raises(TimeoutError):  # hub.Timeout is also a TimeoutError
        await hub.call("s", "anything", timeout=0.01)


async def test_messages_to_a_stopped_hub_are_refused(make_hub: Any) -> None:
    hub = await make_hub()
    await hub.start_child(ChildSpec("c1", procs.Counter))
    await hub.stop()
    with pytest.raises(HubClosed):
        await hub.call("c1", "get")
    with pytest.raises(HubClosed):
        await hub.start_child(ChildSpec("c2", procs.Counter))


async def test_start_without_wait_returns_at_once(make_hub: Any) -> None:
    hub = await make_hub()
    res = await hub.start_children(
        [ChildSpec(f"w{i}", procs.Counter) for i in range(20)], wait=False
    )
    assert res.status == "accepted"
    await wait_until(lambda: len(hub.process_list()) == 20)
    stop = await hub.stop_children([f"w{i}" for i in range(20)], wait=False)
    assert stop.status == "accepted"
    await wait_until(lambda: hub.process_list() == [])


async def test_static_child_specs_start_with_the_hub() -> None:
    async with Hub(
        "static", node="n1", host=None, child_specs=[ChildSpec("s1", procs.Counter, [3])]
    ) as hub:
        assert await hub.call("s1", "get") == 3


async def test_a_failing_static_child_fails_the_hub_start() -> None:
    hub = Hub("static", node="n1", host=None, child_specs=[ChildSpec("bad", procs.FailingInit)])
    with pytest.raises(StartFailed, match="bad init"):
        await hub.start()
    assert not hub.is_alive()
    assert hub.runtime.supervisor.children == {}


async def test_stop_cancels_and_awaits_everything_the_hub_owns() -> None:
    before = asyncio.all_tasks()
    hub = Hub("own", node="n1", host=None)
    await hub.start()
    await hub.start_children([ChildSpec(f"c{i}", procs.echo) for i in range(50)])
    await hub.start_children([ChildSpec(f"k{i}", procs.Counter) for i in range(50)], wait=False)
    assert len(asyncio.all_tasks() - before) >= 50
    await hub.stop()
    assert asyncio.all_tasks() - before == set()
    await hub.stop()  # idempotent
    with pytest.raises(HubClosed):
        await hub.start()


async def test_drain_stops_local_children_and_refuses_new_ones(make_hub: Any) -> None:
    hub = await make_hub()
    await hub.start_children([ChildSpec("c1", procs.Counter), ChildSpec("c2", procs.idle)])
    res = await hub.drain()
    assert sorted(cid for cid, _ in res.stopped) == ["c1", "c2"]
    assert procs.TERMINATED == [("c1", "drain")]
    assert hub.is_alive()
    with pytest.raises(HubClosed, match="draining"):
        await hub.start_child(ChildSpec("c3", procs.idle))


async def test_constructor_validates_its_arguments() -> None:
    with pytest.raises(InvalidSpec, match="hub_id"):
        Hub("")
    with pytest.raises(InvalidSpec, match="call_timeout"):
        Hub("h", call_timeout=0)
    with pytest.raises(InvalidSpec, match="mailbox_limit"):
        Hub("h", mailbox_limit=0)


def test_a_synchronization_the_hub_does_not_implement_is_refused() -> None:
    class Relaying:
        kind = "relay"
        batch_window = 0.005
        max_batch = 10
        anti_entropy_interval = 1.0

    with pytest.raises(InvalidSpec, match="PubSub registry sync only"):
        Hub("h", host=None, synchronization=Relaying())


def test_hot_moves_under_replication_are_refused() -> None:
    import strategies

    with pytest.raises(InvalidSpec, match="under replication use ColdSwap"):
        Hub(
            "h",
            host=None,
            migration=strategies.HotSwap(),
            redundancy=strategies.Replication(factor=2),
        )
    Hub("h", host=None, migration=strategies.HotSwap())  # one copy: fine
