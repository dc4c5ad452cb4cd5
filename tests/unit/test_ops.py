"""Pure parts of the operations features: readiness, the seed watch, the log throttle, the
latency histogram, the bind-address rule and the misspelled-hook check."""

from __future__ import annotations

import pytest

from hub import HookHandler, HookManager, InvalidSpec
from hub.cluster.node import check_bind_address
from hub.cluster.stats import LatencyHistogram, SeedWatch, Throttle, count_states
from hub.errors import HookError
from hub.hooks import near_hub_event
from hub.ops import HubHealth, readiness


def _hub(state: str = "running", locked: bool = False, unsynced: tuple[str, ...] = ()) -> HubHealth:
    return HubHealth("orders", state, locked, unsynced)


def test_ready_when_running_joined_synchronized_and_unlocked() -> None:
    r = readiness(node_state="running", has_seeds=True, joined=True, hubs=[_hub()])
    assert (r.ready, r.reasons) == (True, ())
    assert r.body() == {"ready": True, "reasons": []}


def test_a_node_with_seeds_that_joined_nobody_is_not_ready() -> None:
    r = readiness(node_state="running", has_seeds=True, joined=False, hubs=[_hub()])
    assert r.reasons == ("node was given seeds and has joined no cluster yet",)
    alone = readiness(node_state="running", has_seeds=False, joined=False, hubs=[_hub()])
    assert alone.ready


def test_each_reason_is_reported() -> None:
    r = readiness(
        node_state="running",
        has_seeds=False,
        joined=True,
        hubs=[_hub("draining", locked=True, unsynced=("b", "a"))],
    )
    assert r.reasons == (
        "hub orders is draining",
        "hub orders is locked (partition strategy)",
        "hub orders: registry not synchronized with a, b",
    )
    stopped = readiness(node_state="stopping", has_seeds=True, joined=False, hubs=[])
    assert stopped.reasons == ("node is stopping", "no hub runs on this node")
    standalone = readiness(node_state=None, has_seeds=False, joined=True, hubs=[_hub()])
    assert standalone.ready


def test_seed_watch_warns_after_the_first_delay_then_backs_off_until_joined() -> None:
    watch = SeedWatch(("10.0.0.1:7001",), first=3.0, cap=20.0)
    watch.start(100.0)
    assert watch.tick(102.9) is None
    watch.failed("10.0.0.1:7001", "Connection refused")
    first = watch.tick(103.0)
    assert first is not None
    assert "10.0.0.1:7001: Connection refused" in first
    assert "not ready" in first
    due = []
    now = 103.0
    for _ in range(5):
        now = watch.due
        assert watch.tick(now - 0.001) is None
        assert watch.tick(now) is not None
        due.append(watch.gap)
    assert due == [12.0, 20.0, 20.0, 20.0, 20.0]  # 6 s after the first, then doubled, capped
    watch.joined()
    assert watch.tick(now + 1000) is None
    assert watch.warnings == 6


def test_seed_watch_without_seeds_never_warns() -> None:
    watch = SeedWatch(())
    watch.start(0.0)
    assert watch.tick(1e9) is None


def test_throttle_allows_one_line_per_key_per_interval_and_counts_the_rest() -> None:
    t = Throttle(interval=10.0)
    assert t.allow("a", 0.0) == 0
    assert t.allow("a", 1.0) is None
    assert t.allow("a", 2.0) is None
    assert t.allow("b", 2.0) == 0
    assert t.allow("a", 10.0) == 2


def test_latency_histogram_is_cumulative_with_an_inf_bucket() -> None:
    h = LatencyHistogram((0.01, 0.1))
    for seconds in (0.005, 0.01, 0.05, 3.0):
        h.observe(seconds)
    assert h.cumulative() == [("0.01", 2), ("0.1", 3), ("+Inf", 4)]
    assert h.count == 4
    assert h.total == pytest.approx(3.065)
    with pytest.raises(ValueError, match="increasing"):
        LatencyHistogram((0.1, 0.01))


def test_count_states() -> None:
    assert count_states(["running", "running", "starting"]) == {"running": 2, "starting": 1}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", ""])
def test_an_unspecified_bind_address_needs_an_advertised_one(host: str) -> None:
    with pytest.raises(InvalidSpec, match="advertise="):
        check_bind_address(host, None)
    assert check_bind_address(host, "10.0.0.5") == ("10.0.0.5", None)
    assert check_bind_address(host, "10.0.0.5:8080") == ("10.0.0.5", 8080)
    assert check_bind_address(host, "[fd00::1]:8080") == ("fd00::1", 8080)
    with pytest.raises(InvalidSpec, match="not an address peers can dial"):
        check_bind_address(host, "0.0.0.0:8080")


def test_a_specific_bind_address_advertises_itself() -> None:
    assert check_bind_address("10.0.0.5", None) == (None, None)


def test_a_misspelled_hub_event_is_refused_unless_declared() -> None:
    assert near_hub_event("child_crashd") == "child_crashed"
    assert near_hub_event("CHILD_CRASHED") == "child_crashed"
    assert near_hub_event("child_crashed") is None
    assert near_hub_event("order_placed") is None
    hm = HookManager()
    handler = HookHandler("h", print)
    with pytest.raises(HookError, match=r"did you mean 'child_crashed' \(Hook.CHILD_CRASHED\)"):
        hm.register("child_crashd", handler)
    assert hm.registered("child_crashd") == []
    hm.register("child_crashed", handler)  # the real event, by its string value
    hm.register("order_placed", handler)  # a user hook that resembles no hub event
    hm.declare("child_crashd", why=str)
    hm.register("child_crashd", handler)  # declared: a user hook of that name
    assert [h.id for h in hm.registered("child_crashd")] == ["h"]
