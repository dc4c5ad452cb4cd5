"""Unit tests of hub.hooks: the HookManager contract (DESIGN.md section 4)."""

from __future__ import annotations

import asyncio
import copy
import logging
import pickle
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hub.hooks as hooks_module
from hub.errors import HookArgumentError, HookError, HookIdConflict, HubClosed, ReservedHook
from hub.hooks import WILDCARD, Hook, HookHandler, HookManager, HookStats, ScheduleHandle

EVENT = Hook.CHILD_CRASHED
DEADLINE = 5.0  # a guard against hangs only: the tests synchronise on events, not on time


def recorder(calls: list[Any], tag: str) -> Callable[..., None]:
    """A sync handler appending ``(tag, *args)`` to ``calls``."""

    def handler(*args: Any) -> None:
        calls.append((tag, *args))

    return handler


async def wait(event: asyncio.Event) -> None:
    await asyncio.wait_for(event.wait(), DEADLINE)


async def spin(rounds: int = 10) -> None:
    """Let the loop run other ready tasks a few times (no timing involved)."""
    for _ in range(rounds):
        await asyncio.sleep(0)


def hooks_errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "hub.hooks" and r.levelno == logging.ERROR]


# -- HookHandler and WILDCARD ----------------------------------------------------------------


def test_wildcard_is_a_singleton_sentinel() -> None:
    assert repr(WILDCARD) == "WILDCARD"
    assert copy.copy(WILDCARD) is WILDCARD
    assert copy.deepcopy([WILDCARD])[0] is WILDCARD
    assert pickle.loads(pickle.dumps(WILDCARD)) is WILDCARD


def test_handler_defaults_and_args_become_a_tuple() -> None:
    handler = HookHandler("h", print, ["joined", WILDCARD])
    assert handler.args == ("joined", WILDCARD)
    assert HookHandler("d", print).args == (WILDCARD,)
    assert (HookHandler("d", print).priority, HookHandler("d", print).enabled) == (0, True)


@pytest.mark.parametrize(
    ("kwargs", "error", "fragment"),
    [
        ({"id": "", "fn": print}, ValueError, "empty"),
        ({"id": 3, "fn": print}, TypeError, "id must be a str"),
        ({"id": "h", "fn": 42}, TypeError, "'h'"),
        ({"id": "h", "fn": print, "priority": "1"}, TypeError, "priority"),
        ({"id": "h", "fn": print, "priority": True}, TypeError, "priority"),
        ({"id": "h", "fn": print, "args": "abc"}, TypeError, "args"),
        ({"id": "h", "fn": print, "enabled": 1}, TypeError, "enabled"),
        ({"id": "h", "fn": "os.path"}, ValueError, "'os.path'"),
        ({"id": "h", "fn": "os:"}, ValueError, "'h'"),
        ({"id": "h", "fn": "a:b:c"}, ValueError, "'a:b:c'"),
        ({"id": "h", "fn": "1mod:f"}, ValueError, "'1mod:f'"),
    ],
)
def test_handler_validation(kwargs: dict[str, Any], error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment.replace(".", r"\.")):
        HookHandler(**kwargs)


def test_handler_is_frozen() -> None:
    handler = HookHandler("h", print)
    with pytest.raises(AttributeError):
        handler.priority = 3  # type: ignore[misc]


# -- registration ------------------------------------------------------------------------


def test_event_names_are_validated_and_hook_strings_are_the_same_event() -> None:
    hm = HookManager()
    with pytest.raises(TypeError):
        hm.register(42, HookHandler("h", print))  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hm.register("", HookHandler("h", print))
    hm.register("child_crashed", HookHandler("h", print))
    assert [h.id for h in hm.registered(Hook.CHILD_CRASHED)] == ["h"]
    assert hm.has_handlers(Hook.CHILD_CRASHED)
    assert hm.has_handlers("child_crashed")


def test_register_rejects_non_handlers_atomically() -> None:
    hm = HookManager()
    with pytest.raises(TypeError, match="HookHandler"):
        hm.register(EVENT, [HookHandler("ok", print), print])  # type: ignore[list-item]
    assert hm.registered(EVENT) == []


def test_duplicate_id_is_refused_and_nothing_of_the_call_is_registered() -> None:
    hm = HookManager()
    hm.register(EVENT, HookHandler("a", print))
    with pytest.raises(HookIdConflict, match="'a'"):
        hm.register(EVENT, [HookHandler("b", print), HookHandler("a", print)])
    assert [h.id for h in hm.registered(EVENT)] == ["a"]


def test_duplicate_id_within_one_list_is_refused_atomically() -> None:
    hm = HookManager()
    with pytest.raises(HookIdConflict, match="'x'"):
        hm.register(
            EVENT, [HookHandler("x", print), HookHandler("y", print), HookHandler("x", repr)]
        )
    assert hm.registered(EVENT) == []
    assert not hm.has_handlers(EVENT)


def test_same_id_on_different_events_is_fine() -> None:
    hm = HookManager()
    hm.register(EVENT, HookHandler("a", print))
    hm.register(Hook.CHILD_STOPPED, HookHandler("a", print))
    assert [h.id for h in hm.registered(Hook.CHILD_STOPPED)] == ["a"]


def test_cancel_unknown_id_or_event_is_a_noop() -> None:
    hm = HookManager()
    hm.register(EVENT, HookHandler("a", print))
    assert hm.cancel(EVENT, "nope") is False
    assert hm.cancel("never_registered", "a") is False
    assert [h.id for h in hm.registered(EVENT)] == ["a"]
    assert hm.cancel(EVENT, "a") is True
    assert hm.registered(EVENT) == []
    assert not hm.has_handlers(EVENT)


def test_internal_handler_needs_force_to_cancel_or_disable() -> None:
    hm = HookManager()
    hm.register(Hook.POST_CLUSTER_JOIN, HookHandler("ch_join", print, priority=100), internal=True)
    with pytest.raises(ReservedHook, match="ch_join"):
        hm.cancel(Hook.POST_CLUSTER_JOIN, "ch_join")
    with pytest.raises(ReservedHook, match="ch_join"):
        hm.disable(Hook.POST_CLUSTER_JOIN, "ch_join")
    assert [h.id for h in hm.registered(Hook.POST_CLUSTER_JOIN)] == ["ch_join"]
    assert hm.disable(Hook.POST_CLUSTER_JOIN, "ch_join", force=True) is True
    assert hm.enable(Hook.POST_CLUSTER_JOIN, "ch_join") is True
    assert hm.cancel(Hook.POST_CLUSTER_JOIN, "ch_join", force=True) is True
    assert hm.registered(Hook.POST_CLUSTER_JOIN) == []


# -- handler functions: MFA strings and WILDCARD -------------------------------------------


async def test_mfa_string_is_resolved_at_registration() -> None:
    hm = HookManager()
    hm.register(EVENT, HookHandler("upper", "builtins:str.upper"))  # dotted path after colon
    hm.register(EVENT, HookHandler("base", "os.path:basename", priority=-1))
    assert await hm.alter(EVENT, "/tmp/abc") == "ABC"
    assert hm.registered(EVENT)[0].fn == "builtins:str.upper"


@pytest.mark.parametrize(
    "ref", ["no_such_module_for_hooks_test:f", "os:no_such_function", "os:sep", "os.path:sep.x"]
)
def test_bad_mfa_string_is_refused_naming_handler_and_string(ref: str) -> None:
    hm = HookManager()
    with pytest.raises(HookError) as info:
        hm.register(EVENT, [HookHandler("good", print), HookHandler("broken", ref)])
    assert "'broken'" in str(info.value)
    assert repr(ref) in str(info.value)
    assert hm.registered(EVENT) == []


async def test_wildcard_default_anywhere_many_times_and_none() -> None:
    calls: list[Any] = []
    hm = HookManager()
    hm.register(
        EVENT,
        [
            HookHandler("default", recorder(calls, "default")),
            HookHandler("middle", recorder(calls, "middle"), ["a", WILDCARD, "b"]),
            HookHandler("many", recorder(calls, "many"), [WILDCARD, 1, WILDCARD, WILDCARD]),
            HookHandler("none", recorder(calls, "none"), ["x", 2]),
            HookHandler("empty", recorder(calls, "empty"), []),
        ],
    )
    await hm.dispatch(EVENT, "D")
    assert calls == [
        ("default", "D"),
        ("middle", "a", "D", "b"),
        ("many", "D", 1, "D", "D"),
        ("none", "x", 2),
        ("empty",),
    ]


# -- dispatch --------------------------------------------------------------------------------


async def test_order_is_priority_descending_with_stable_ties() -> None:
    calls: list[Any] = []
    hm = HookManager()
    hm.register(EVENT, HookHandler("low", recorder(calls, "low"), priority=-5))
    hm.register(EVENT, HookHandler("t1", recorder(calls, "t1"), priority=10))
    hm.register(
        EVENT,
        [
            HookHandler("mid", recorder(calls, "mid")),
            HookHandler("t2", recorder(calls, "t2"), priority=10),
        ],
    )
    hm.register(EVENT, HookHandler("t3", recorder(calls, "t3"), priority=10))
    await hm.dispatch(EVENT, 0)
    assert [c[0] for c in calls] == ["t1", "t2", "t3", "mid", "low"]
    assert [h.id for h in hm.registered(EVENT)] == ["t1", "t2", "t3", "mid", "low"]


@settings(max_examples=60, deadline=None)
@given(
    batches=st.lists(
        st.lists(st.integers(min_value=-3, max_value=3), min_size=1, max_size=4),
        min_size=1,
        max_size=6,
    )
)
def test_property_order_is_priority_desc_then_registration(batches: list[list[int]]) -> None:
    calls: list[Any] = []
    hm = HookManager()
    expected: list[tuple[int, int, str]] = []
    seq = 0
    for batch in batches:
        handlers = []
        for priority in batch:
            hid = f"h{seq}"
            handlers.append(HookHandler(hid, recorder(calls, hid), priority=priority))
            expected.append((-priority, seq, hid))
            seq += 1
        hm.register(EVENT, handlers)
    asyncio.run(_await(hm.dispatch(EVENT, None)))
    order = [hid for _, _, hid in sorted(expected)]
    assert [c[0] for c in calls] == order
    assert [h.id for h in hm.registered(EVENT)] == order


async def _await(awaitable: Any) -> None:
    await awaitable


async def test_sync_and_async_handlers_run_in_order_each_awaited() -> None:
    calls: list[str] = []
    hm = HookManager()

    async def slow(data: str) -> None:
        calls.append(f"slow-start:{data}")
        await asyncio.sleep(0)
        calls.append("slow-end")

    async def later(data: str) -> None:
        calls.append("later")

    def returns_awaitable(data: str) -> Any:  # a sync function returning an awaitable
        return later(data)

    hm.register(
        EVENT,
        [
            HookHandler("s1", lambda d: calls.append("s1")),
            HookHandler("slow", slow),
            HookHandler("s2", lambda d: calls.append("s2")),
            HookHandler("ret", returns_awaitable),
            HookHandler("s3", lambda d: calls.append("s3")),
        ],
    )
    await hm.dispatch(EVENT, "x")
    assert calls == ["s1", "slow-start:x", "slow-end", "s2", "later", "s3"]
    assert hm.stats(EVENT).handlers_run == 5


async def test_dispatch_is_eager_and_returns_an_awaitable() -> None:
    calls: list[Any] = []
    hm = HookManager()
    hm.register(EVENT, HookHandler("s", recorder(calls, "s")))
    pending = hm.dispatch(EVENT, 1)
    assert calls == [("s", 1)]  # sync handlers ran before the await
    results = [await pending, await pending, await hm.dispatch("nobody_listens", 1)]
    assert results == [None, None, None]  # the completed awaitable can be awaited again
    await asyncio.ensure_future(hm.dispatch(EVENT, 2))  # usable as a future too

    async def tail(data: int) -> None:
        calls.append(("tail", data))

    hm.register(EVENT, HookHandler("tail", tail))
    pending = hm.dispatch(EVENT, 3)
    assert calls[-1] == ("s", 3)  # the async handler waits for the await
    await pending
    assert calls[-2:] == [("s", 3), ("tail", 3)]
    await asyncio.ensure_future(hm.dispatch(EVENT, 4))
    assert calls[-1] == ("tail", 4)


@pytest.mark.parametrize("kind", ["sync", "async", "returns-awaitable"])
async def test_raising_handler_is_logged_with_id_and_event_and_the_rest_run(
    caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    calls: list[str] = []
    hm = HookManager()

    def sync_bad(data: Any) -> None:
        raise RuntimeError("boom")

    async def async_bad(data: Any) -> None:
        await asyncio.sleep(0)
        raise RuntimeError("boom")

    bad = {"sync": sync_bad, "async": async_bad, "returns-awaitable": lambda d: async_bad(d)}
    hm.register(
        EVENT,
        [
            HookHandler("before", lambda d: calls.append("before")),
            HookHandler("bad", bad[kind]),
            HookHandler("after", lambda d: calls.append("after")),
        ],
    )
    with caplog.at_level(logging.ERROR, logger="hub.hooks"):
        await hm.dispatch(EVENT, None)
    assert calls == ["before", "after"]
    [record] = hooks_errors(caplog)
    assert "child_crashed" in record.getMessage()
    assert "'bad'" in record.getMessage()
    assert record.exc_info is not None
    assert isinstance(record.exc_info[1], RuntimeError)
    assert hm.stats(EVENT) == HookStats(1, 3, 1, ("bad", "RuntimeError('boom')"))


async def test_dispatch_sees_the_handlers_as_they_were_when_it_began() -> None:
    calls: list[str] = []
    hm = HookManager()

    def mutate(data: Any) -> None:
        calls.append("mutate")
        hm.cancel(EVENT, "victim")
        hm.register(EVENT, HookHandler("newcomer", lambda d: calls.append("newcomer")))

    hm.register(
        EVENT,
        [
            HookHandler("mutate", mutate, priority=1),
            HookHandler("victim", lambda d: calls.append("victim")),
        ],
    )
    await hm.dispatch(EVENT, None)
    assert calls == ["mutate", "victim"]
    calls.clear()
    hm.cancel(EVENT, "mutate")
    await hm.dispatch(EVENT, None)
    assert calls == ["newcomer"]


async def test_snapshot_holds_across_awaits_in_async_handlers() -> None:
    calls: list[str] = []
    hm = HookManager()

    async def mutate(data: Any) -> None:
        await asyncio.sleep(0)
        calls.append("mutate")
        hm.cancel(EVENT, "victim")
        hm.disable(EVENT, "other")
        hm.register(EVENT, HookHandler("newcomer", lambda d: calls.append("newcomer")))

    hm.register(
        EVENT,
        [
            HookHandler("mutate", mutate),
            HookHandler("victim", lambda d: calls.append("victim")),
            HookHandler("other", lambda d: calls.append("other")),
        ],
    )
    await hm.dispatch(EVENT, None)
    assert calls == ["mutate", "victim", "other"]


async def test_alter_folds_and_skips_failing_handlers(caplog: pytest.LogCaptureFixture) -> None:
    hm = HookManager()

    async def double(x: int) -> int:
        await asyncio.sleep(0)
        return x * 2

    def broken(x: int) -> int:
        raise ValueError("nope")

    hm.register(
        Hook.CHILD_DATA_ALTER,
        [
            HookHandler("add1", lambda x: x + 1, priority=3),
            HookHandler("broken", broken, priority=2),
            HookHandler("double", double, priority=1),
            HookHandler("tag", lambda prefix, x: f"{prefix}{x}", ["n=", WILDCARD]),
        ],
    )
    with caplog.at_level(logging.ERROR, logger="hub.hooks"):
        assert await hm.alter(Hook.CHILD_DATA_ALTER, 4) == "n=10"
    assert ["'broken'" in r.getMessage() for r in hooks_errors(caplog)] == [True]
    assert await hm.alter("no_alter_handlers", {"k": 1}) == {"k": 1}
    assert hm.stats(Hook.CHILD_DATA_ALTER) == HookStats(1, 4, 1, ("broken", "ValueError('nope')"))


async def test_enable_disable_keep_position_and_unknown_is_a_noop() -> None:
    calls: list[Any] = []
    hm = HookManager()
    hm.register(EVENT, [HookHandler(i, recorder(calls, i)) for i in ("a", "b", "c")])
    assert hm.disable(EVENT, "b") is True
    assert hm.disable(EVENT, "b") is True  # already disabled: still found
    await hm.dispatch(EVENT, 0)
    assert [c[0] for c in calls] == ["a", "c"]
    assert [(h.id, h.enabled) for h in hm.registered(EVENT)] == [
        ("a", True),
        ("b", False),
        ("c", True),
    ]
    assert hm.enable(EVENT, "b") is True
    calls.clear()
    await hm.dispatch(EVENT, 0)
    assert [c[0] for c in calls] == ["a", "b", "c"]
    assert hm.enable(EVENT, "zzz") is False
    assert hm.disable(EVENT, "zzz") is False
    assert hm.disable("unknown_event", "a") is False


def test_has_handlers_counts_enabled_handlers_only() -> None:
    hm = HookManager()
    assert not hm.has_handlers(EVENT)
    hm.register(EVENT, HookHandler("a", print, enabled=False))
    assert not hm.has_handlers(EVENT)
    hm.enable(EVENT, "a")
    assert hm.has_handlers(EVENT)
    hm.disable(EVENT, "a")
    assert not hm.has_handlers(EVENT)


async def test_debug_line_follows_the_logger_level(caplog: pytest.LogCaptureFixture) -> None:
    hm = HookManager()
    hm.register(EVENT, [HookHandler("a", print, ["."]), HookHandler("b", print, ["."])])

    def completed() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.msg == "completed %d handlers for %s"]

    caplog.set_level(logging.DEBUG, logger="hub.hooks")
    await hm.dispatch(EVENT, None)
    assert completed() == ["completed 2 handlers for child_crashed"]
    caplog.set_level(logging.INFO, logger="hub.hooks")
    await hm.dispatch(EVENT, None)
    assert len(completed()) == 1
    caplog.set_level(logging.DEBUG, logger="hub.hooks")
    await hm.dispatch(EVENT, None)
    assert len(completed()) == 2


# -- stats -----------------------------------------------------------------------------------


async def test_stats_count_exactly() -> None:
    hm = HookManager()
    assert hm.stats(EVENT) == HookStats(0, 0, 0, None)

    def bad(data: Any) -> None:
        raise KeyError(data)

    hm.register(EVENT, [HookHandler("ok", lambda d: d), HookHandler("bad", bad)])
    for i in range(3):
        await hm.dispatch(EVENT, i)
    assert hm.stats(EVENT) == HookStats(3, 6, 3, ("bad", "KeyError(2)"))
    hm.register(EVENT, HookHandler("third", lambda d: d))
    await hm.dispatch(EVENT, 9)
    hm.dispatch_nowait(EVENT, 10)
    await hm.alter(EVENT, 11)
    assert hm.stats(EVENT) == HookStats(6, 15, 6, ("bad", "KeyError(11)"))
    hm.disable(EVENT, "bad")
    await hm.dispatch(EVENT, 12)
    assert hm.stats(EVENT) == HookStats(7, 17, 6, ("bad", "KeyError(11)"))
    await hm.dispatch("nobody", 0)
    assert hm.stats("nobody") == HookStats(1, 0, 0, None)


async def test_stats_of_a_cancelled_dispatch_count_only_handlers_reached() -> None:
    hm = HookManager()
    started = asyncio.Event()
    calls: list[str] = []

    async def first(data: Any) -> None:
        calls.append("first")

    async def blocks(data: Any) -> None:
        calls.append("blocks")
        started.set()
        await asyncio.Event().wait()

    async def never(data: Any) -> None:
        calls.append("never")

    hm.register(
        EVENT, [HookHandler("first", first), HookHandler("blocks", blocks), HookHandler("n", never)]
    )
    task = asyncio.ensure_future(hm.dispatch(EVENT, None))
    await wait(started)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert calls == ["first", "blocks"]
    assert hm.stats(EVENT) == HookStats(1, 2, 0, None)


# -- user hooks: declare and fire -------------------------------------------------------------


async def test_fire_passes_kwargs_mapping_to_handlers() -> None:
    calls: list[Any] = []
    hm = HookManager()
    hm.register("order_placed", HookHandler("log", recorder(calls, "log")))
    await hm.fire("order_placed", order_id=7, total=9.5)
    assert calls == [("log", {"order_id": 7, "total": 9.5})]


async def test_declared_hook_is_type_checked_before_any_handler_runs() -> None:
    calls: list[Any] = []
    hm = HookManager()
    hm.declare("order_placed", order_id=int, total=(int, float))
    hm.register("order_placed", HookHandler("log", recorder(calls, "log")))
    await hm.fire("order_placed", order_id=1, total=2)
    await hm.fire("order_placed", order_id=1, total=2.5)
    assert len(calls) == 2
    with pytest.raises(HookArgumentError, match=r"'order_placed'.*missing argument 'total'"):
        await hm.fire("order_placed", order_id=1)
    with pytest.raises(HookArgumentError, match=r"'order_placed'.*unknown argument 'extra'"):
        await hm.fire("order_placed", order_id=1, total=2, extra=3)
    with pytest.raises(HookArgumentError, match=r"argument 'order_id' must be int, got str"):
        await hm.fire("order_placed", order_id="1", total=2)
    with pytest.raises(HookArgumentError, match=r"argument 'total' must be int or float"):
        await hm.fire("order_placed", order_id=1, total="2")
    with pytest.raises(TypeError):  # HookArgumentError is a TypeError too
        await hm.fire("order_placed", wait=False)
    assert len(calls) == 2


def test_declare_refuses_hub_events_bad_types_and_conflicting_redeclaration() -> None:
    hm = HookManager()
    with pytest.raises(HookError, match="child_crashed"):
        hm.declare("child_crashed", x=int)
    with pytest.raises(HookError, match="child_crashed"):
        hm.declare(Hook.CHILD_CRASHED, x=int)
    with pytest.raises(TypeError, match="'x'"):
        hm.declare("mine", x="int")  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        hm.declare("mine", x=())
    hm.declare("mine", x=int)
    hm.declare("mine", x=int)  # the same declaration again is fine
    with pytest.raises(HookError, match="already declared"):
        hm.declare("mine", x=str)


async def test_fire_refuses_hub_events() -> None:
    hm = HookManager()
    with pytest.raises(HookError, match="dispatch"):
        await hm.fire(Hook.CHILD_STOPPED, child_id="c")


async def test_fire_without_wait_runs_in_an_owned_task() -> None:
    calls: list[Any] = []
    done = asyncio.Event()
    hm = HookManager(name="mgr")

    async def handler(data: dict[str, Any]) -> None:
        calls.append(data)
        done.set()

    hm.register("later", HookHandler("h", handler))
    await hm.fire("later", wait=False, n=1)
    assert calls == []  # returned at once
    assert [t.get_name() for t in asyncio.all_tasks() if t.get_name().startswith("mgr:")] == [
        "mgr:fire:later"
    ]
    await wait(done)
    assert calls == [{"n": 1}]
    await hm.aclose()


async def test_aclose_cancels_and_awaits_pending_fire_tasks() -> None:
    started, cancelled = asyncio.Event(), asyncio.Event()
    hm = HookManager()

    async def blocks(data: Any) -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    hm.register("job", HookHandler("blocks", blocks))
    await hm.fire("job", wait=False)
    await wait(started)
    await hm.aclose()
    assert cancelled.is_set()
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("hooks:")]


async def test_fire_without_wait_is_bounded() -> None:
    hm = HookManager(max_pending=1)

    async def blocks(data: Any) -> None:
        await asyncio.Event().wait()

    hm.register("job", HookHandler("blocks", blocks))
    await hm.fire("job", wait=False)
    with pytest.raises(HookError, match="pending"):
        await hm.fire("job", wait=False)
    await hm.aclose()


# -- dispatch_nowait --------------------------------------------------------------------------


async def test_dispatch_nowait_runs_sync_inline_and_async_in_owned_tasks() -> None:
    calls: list[str] = []
    done = asyncio.Event()
    hm = HookManager()

    async def later(data: str) -> None:
        calls.append(f"async:{data}")
        done.set()

    hm.register(
        EVENT,
        [
            HookHandler("s1", lambda d: calls.append(f"s1:{d}")),
            HookHandler("a", later),
            HookHandler("s2", lambda d: calls.append(f"s2:{d}")),
        ],
    )
    hm.dispatch_nowait(EVENT, "x")
    assert calls == ["s1:x", "s2:x"]
    await wait(done)
    assert calls == ["s1:x", "s2:x", "async:x"]
    assert hm.stats(EVENT) == HookStats(1, 3, 0, None)


async def test_dispatch_nowait_is_bounded_and_logs_async_failures(
    caplog: pytest.LogCaptureFixture,
) -> None:
    release = asyncio.Event()
    started: list[int] = []
    hm = HookManager(max_pending=2)

    async def blocks(data: int) -> None:
        started.append(data)
        await release.wait()
        if data == 1:
            raise RuntimeError("late failure")

    hm.register(EVENT, HookHandler("blocks", blocks))
    with caplog.at_level(logging.ERROR, logger="hub.hooks"):
        for i in range(3):
            hm.dispatch_nowait(EVENT, i)
        await spin()
        assert started == [0, 1]
        dropped = hm.stats(EVENT)
        assert (dropped.failures, dropped.last_error) == (
            1,
            ("blocks", "HookError('async handler dropped: 2 handler tasks are pending')"),
        )
        release.set()
        await spin()
    assert hm.stats(EVENT) == HookStats(3, 3, 2, ("blocks", "RuntimeError('late failure')"))
    assert len(hooks_errors(caplog)) == 2
    await hm.aclose()


def test_dispatch_nowait_without_a_loop_runs_sync_and_drops_async() -> None:
    calls: list[str] = []
    hm = HookManager()

    async def needs_loop(data: Any) -> None:
        calls.append("async")

    hm.register(
        EVENT, [HookHandler("a", needs_loop), HookHandler("s", lambda d: calls.append("s"))]
    )
    hm.dispatch_nowait(EVENT, None)
    assert calls == ["s"]
    assert hm.stats(EVENT).last_error == (
        "a",
        "HookError('async handler dropped: no running event loop')",
    )


# -- schedules ----------------------------------------------------------------------------------


async def test_schedule_interval_fires_repeatedly_until_cancelled() -> None:
    seen: list[dict[str, Any]] = []
    third = asyncio.Event()
    hm = HookManager()

    def tick(data: dict[str, Any]) -> None:
        seen.append(dict(data))
        data["mutated"] = True  # each firing gets its own mapping
        if len(seen) == 3:
            third.set()

    hm.register("tick", HookHandler("tick", tick))
    handle = hm.schedule("tick", interval=0.005, source="timer")
    assert isinstance(handle, ScheduleHandle)
    assert not handle.cancelled
    assert "hooks:interval:tick" in {t.get_name() for t in asyncio.all_tasks()}
    await wait(third)
    handle.cancel()
    assert handle.cancelled
    await handle.wait_closed()
    count = len(seen)
    await spin()
    assert len(seen) == count >= 3
    assert seen[:3] == [{"source": "timer"}] * 3
    await hm.aclose()


def test_interval_planner_keeps_the_grid_and_skips_missed_ticks() -> None:
    assert hooks_module._next_due(10.0, 1.0, now=10.2) == 11.0
    assert hooks_module._next_due(10.0, 1.0, now=13.5) == 14.0  # overrun: 11, 12, 13 skipped
    assert hooks_module._next_due(10.0, 1.0, now=11.0) == 12.0  # never a tick at or before now
    assert hooks_module._next_due(10.0, 0.25, now=10.1) == 10.25


async def test_schedule_validates_its_arguments() -> None:
    hm = HookManager()
    hm.declare("typed", n=int)
    with pytest.raises(ValueError, match="exactly one"):
        hm.schedule("x")
    with pytest.raises(ValueError, match="exactly one"):
        hm.schedule("x", interval=1, cron="* * * * *")
    for bad in (0, -1, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="interval"):
            hm.schedule("x", interval=bad)
    with pytest.raises(TypeError, match="interval"):
        hm.schedule("x", interval=True)
    with pytest.raises(HookArgumentError, match="'n'"):
        hm.schedule("typed", interval=1, n="1")
    with pytest.raises(HookError, match="hub event"):
        hm.schedule(Hook.CHILD_STOPPED, interval=1)
    with pytest.raises(ValueError, match="cron expression"):
        hm.schedule("x", cron="not a cron line")
    with pytest.raises(ValueError, match="'0 0 30 2 \\*'"):  # well formed, never matches
        hm.schedule("x", cron="0 0 30 2 *")
    with pytest.raises(HookError, match="no enabled handler"):
        hm.schedule("x", daemon=True)
    assert not [t for t in asyncio.all_tasks() if t.get_name().startswith("hooks:")]


def test_schedule_needs_a_running_loop() -> None:
    hm = HookManager()
    with pytest.raises(HookError, match="running event loop"):
        hm.schedule("x", interval=1)


def test_cron_planner_returns_the_next_matching_time() -> None:
    start = datetime(2024, 1, 1, 0, 3, 20, tzinfo=UTC)
    assert hooks_module._next_cron_time("*/5 * * * *", start) == start.replace(minute=5, second=0)
    exact = datetime(2024, 1, 1, 0, 5, tzinfo=UTC)
    assert hooks_module._next_cron_time("*/5 * * * *", exact) == exact + timedelta(minutes=5)
    assert hooks_module._next_cron_time("0 12 * * *", start) == datetime(2024, 1, 1, 12, tzinfo=UTC)


async def test_schedule_cron_fires_at_planned_times(monkeypatch: pytest.MonkeyPatch) -> None:
    planned: list[str] = []

    def planner(expression: str, after: datetime) -> datetime:
        planned.append(expression)
        return after + timedelta(milliseconds=2)

    monkeypatch.setattr(hooks_module, "_next_cron_time", planner)
    seen: list[Any] = []
    third = asyncio.Event()
    hm = HookManager()

    def tick(data: dict[str, Any]) -> None:
        seen.append(data)
        if len(seen) == 3:
            third.set()

    hm.register("nightly", HookHandler("tick", tick))
    handle = hm.schedule("nightly", cron="0 3 * * *", run="backup")
    await wait(third)
    await hm.aclose()
    assert handle.cancelled
    assert seen[:3] == [{"run": "backup"}] * 3
    assert set(planned) == {"0 3 * * *"}


async def test_schedule_cron_ends_with_an_error_when_no_next_time(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    def planner(expression: str, after: datetime) -> datetime:
        raise ValueError("failed to find next date")

    hm = HookManager()
    handle = hm.schedule("x", cron="* * * * *")  # validated with the real planner
    monkeypatch.setattr(hooks_module, "_next_cron_time", planner)
    with caplog.at_level(logging.ERROR, logger="hub.hooks"):
        await handle.wait_closed()
    assert ["no next time" in r.getMessage() for r in hooks_errors(caplog)] == [True]
    await hm.aclose()


async def test_schedule_cron_without_croniter_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "croniter", None)  # makes `import croniter` fail
    with pytest.raises(HookError, match=r"processhub\[cron\]"):
        HookManager().schedule("x", cron="* * * * *")


async def test_daemon_restarts_after_raising_with_bounded_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    attempts: list[dict[str, Any]] = []
    running, cancelled = asyncio.Event(), asyncio.Event()
    hm = HookManager()
    hm.daemon_backoff_min, hm.daemon_backoff_max = 0.001, 0.004

    async def worker(data: dict[str, Any]) -> None:
        attempts.append(data)
        if len(attempts) <= 4:
            raise RuntimeError(f"crash {len(attempts)}")
        running.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise

    hm.register("pump", HookHandler("worker", worker))
    with caplog.at_level(logging.WARNING, logger="hub.hooks"):
        handle = hm.schedule("pump", daemon=True, queue="q1")
        await wait(running)
    assert attempts == [{"queue": "q1"}] * 5
    restarts = [r.args[2] for r in caplog.records if r.levelno == logging.WARNING and r.args]
    assert restarts == [0.001, 0.002, 0.004, 0.004]
    assert hm.stats("pump") == HookStats(1, 5, 4, ("worker", "RuntimeError('crash 4')"))
    handle.cancel()
    await handle.wait_closed()
    assert cancelled.is_set()
    assert handle.cancelled


async def test_daemon_that_returns_is_not_restarted() -> None:
    calls: list[str] = []
    hm = HookManager()

    async def once(data: Any) -> None:
        calls.append("once")

    def sync_once(data: Any) -> None:
        calls.append("sync")

    hm.register("job", [HookHandler("once", once), HookHandler("sync", sync_once)])
    handle = hm.schedule("job", daemon=True)
    await handle.wait_closed()  # every daemon handler returned
    assert sorted(calls) == ["once", "sync"]
    assert not handle.cancelled
    assert hm.stats("job") == HookStats(1, 2, 0, None)


# -- lifecycle ------------------------------------------------------------------------------------


async def test_aclose_cancels_everything_and_is_idempotent() -> None:
    daemon_up, nowait_up = asyncio.Event(), asyncio.Event()
    calls: list[str] = []
    hm = HookManager(name="closing")

    async def daemon(data: Any) -> None:
        daemon_up.set()
        await asyncio.Event().wait()

    async def nowait(data: Any) -> None:
        nowait_up.set()
        await asyncio.Event().wait()

    hm.register("d", HookHandler("d", daemon))
    hm.register(EVENT, [HookHandler("nw", nowait), HookHandler("s", lambda d: calls.append("s"))])
    hm.register("tick", HookHandler("t", lambda d: None))
    handles = [hm.schedule("d", daemon=True), hm.schedule("tick", interval=3600)]
    hm.dispatch_nowait(EVENT, None)
    await wait(daemon_up)
    await wait(nowait_up)
    owned = [t for t in asyncio.all_tasks() if t.get_name().startswith("closing:")]
    assert sorted(t.get_name() for t in owned) == [
        "closing:daemon:d:d",
        "closing:interval:tick",
        "closing:nowait:child_crashed:nw",
    ]
    await hm.aclose()
    assert hm.closed
    assert all(t.cancelled() for t in owned)
    assert all(h.cancelled for h in handles)
    await hm.aclose()  # idempotent
    with pytest.raises(HubClosed):
        await hm.fire("tick")
    with pytest.raises(HubClosed):
        hm.schedule("tick", interval=1)
    hm.dispatch_nowait(EVENT, None)  # sync handlers still run; async ones are dropped
    assert calls == ["s", "s"]
    assert hm.stats(EVENT).last_error == (
        "nw",
        "HookError('async handler dropped: the hook manager is closed')",
    )


async def test_dispatch_nowait_after_close_drops_async_handlers() -> None:
    hm = HookManager()

    async def handler(data: Any) -> None:
        raise AssertionError("must not run")

    hm.register(EVENT, HookHandler("a", handler))
    await hm.aclose()
    hm.dispatch_nowait(EVENT, None)
    await spin()
    assert hm.stats(EVENT) == HookStats(
        1, 1, 1, ("a", "HookError('async handler dropped: the hook manager is closed')")
    )


def test_manager_arguments_are_validated() -> None:
    with pytest.raises(ValueError, match="max_pending"):
        HookManager(max_pending=0)
    with pytest.raises(ValueError, match="name"):
        HookManager(name="")
    assert "hooks" in repr(HookManager())


async def test_name_can_be_a_hook_argument() -> None:
    calls: list[Any] = []
    hm = HookManager()
    hm.declare("greet", name=str)
    hm.register("greet", HookHandler("h", recorder(calls, "h")))
    await hm.fire("greet", name="ada")
    assert calls == [("h", {"name": "ada"})]
