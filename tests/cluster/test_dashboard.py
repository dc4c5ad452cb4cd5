"""The dashboard's routes and the node's board, on real nodes in this process (loopback, ports
chosen by the OS). The browser test is ``test_dashboard_browser.py``."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest

from hub import ChildSpec, Hook, Hub, ReservedHook
from hub.board import EVENT_BUFFER, HOOK_ID, board_of, describe, ring_shares
from hub.cluster import Node
from hub.events import ChildStopped
from strategies import ConsistentHashing, Guided

COOKIE = "dash-test-cookie-0123456789abcdef"
SECRET_ARG = "secret-argument-4242"


async def wait_until(predicate: Any, timeout: float = 20.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node, Hub, Hub, Hub]]:
    a = await Node("a", preset="local", cookie=COOKIE).start()
    b = Node("b", preset="local", cookie=COOKIE, seeds=[f"127.0.0.1:{a.address.port}"])
    await b.start()
    ha = await Hub("orders", endpoint=a).start()
    hb = await Hub("orders", endpoint=b).start()
    billing = await Hub("billing", endpoint=b).start()
    try:
        await wait_until(lambda: ha.nodes() == ["b"] and hb.nodes() == ["a"])
        yield a, b, ha, hb, billing
    finally:
        for node in (b, a):  # the nodes first: the hubs have no peer to hand children to
            await node.stop(leave=False)
        for hub in (billing, hb, ha):
            await hub.stop()


async def get(port: int, path: str) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as resp,
    ):
        return resp.status, resp.headers.get("Content-Type", ""), await resp.text()


async def test_the_page_is_self_contained_and_the_api_reports_the_cluster(
    pair: tuple[Node, Node, Hub, Hub, Hub],
) -> None:
    a, _b, ha, hb, _ = pair
    specs = [ChildSpec(f"c{i}", "tests.procs:Counter", args=[i]) for i in range(10)]
    specs.append(ChildSpec("s", "tests.procs:echo", args=[SECRET_ARG]))
    assert not (await ha.start_children(specs)).errors
    await wait_until(lambda: len(hb.process_list()) == 11)

    status, kind, page = await get(a.address.port, "/dashboard")
    assert (status, kind) == (200, "text/html; charset=utf-8")
    assert "<script src" not in page
    assert "<link" not in page
    assert "http://" not in page
    assert "https://" not in page

    status, kind, text = await get(a.address.port, "/dashboard/api")
    assert (status, kind) == (200, "application/json; charset=utf-8")
    assert COOKIE not in text
    assert SECRET_ARG not in text
    snap = json.loads(text)
    assert (snap["node"], snap["hub"], snap["hubs"]) == ("a", "orders", ["billing", "orders"])
    assert [(m["name"], m["state"]) for m in snap["members"]] == [("a", "ALIVE"), ("b", "ALIVE")]
    assert sorted(snap["infos"]) == ["a", "b"]
    mine = snap["infos"]["a"]["hubs"]["orders"]
    local = {"a": len(ha.process_list("local")), "b": len(hb.process_list("local"))}
    assert mine["children"] == local
    assert snap["infos"]["b"]["hubs"]["orders"]["states"] == {"running": local["b"]}
    assert mine["ring"] == ring_shares(ConsistentHashing(nodes=["a", "b"]).belongs_to, "ab")
    assert sorted(snap["infos"]["b"]["hubs"]) == ["billing", "orders"]
    assert snap["infos"]["a"]["version"] == snap["version"]

    status, _, text = await get(a.address.port, "/dashboard/api?hub=billing")
    assert json.loads(text)["hub"] == "billing"


async def test_the_event_stream_sends_snapshots_and_hook_events_and_ends_when_the_node_stops(
    pair: tuple[Node, Node, Hub, Hub, Hub],
) -> None:
    a, _, ha, _, _ = pair
    url = f"http://127.0.0.1:{a.address.port}/dashboard/events?hub=orders"
    async with aiohttp.ClientSession() as session, session.get(url) as resp:
        assert resp.headers["Content-Type"] == "text/event-stream"

        async def next_event(kind: str) -> Any:
            while True:
                block = (await resp.content.readuntil(b"\n\n")).decode()
                name, data = block.split("\n")[:2]
                if name == f"event: {kind}":
                    return json.loads(data.removeprefix("data: "))

        first = await next_event("snapshot")
        assert first["node"] == "a"
        await ha.start_children([ChildSpec("late", "tests.procs:Counter", args=[1])])
        seen: list[str] = []
        while "post_children_start" not in seen:
            seen += [e["event"] for e in await next_event("hooks")]
        await a.stop(leave=False)  # the stream ends instead of holding the stop up
        assert await resp.content.read() == b""


async def test_the_board_listens_through_an_internal_bounded_handler(
    pair: tuple[Node, Node, Hub, Hub, Hub],
) -> None:
    a, _, ha, _, _ = pair
    with pytest.raises(ReservedHook):
        ha.hooks.cancel(Hook.CHILD_STOPPED, HOOK_ID)
    board = board_of(a)
    assert board is not None
    for _ in range(EVENT_BUFFER + 50):
        await ha.hooks.dispatch(Hook.CHILD_STOPPED, ChildStopped("x", "normal"))
    assert len(board.recent("orders")) == EVENT_BUFFER
    assert board.recent("orders")[-1].to_json()["text"] == "x normal"
    # a payload of one item per child (a start of 100,000) is kept as its text only
    started = [ChildStopped(f"c{i}", "normal") for i in range(1_000)]
    await ha.hooks.dispatch(Hook.CHILD_STOPPED, started)
    kept = board.recent("orders")[-1]
    assert kept.data == "[c0 normal, c1 normal, c2 normal, c3 normal, c4 normal (+995)]"
    assert kept.to_json()["text"] == kept.data


def test_payloads_are_described_without_arguments() -> None:
    spec = ChildSpec("c1", "tests.procs:echo", args=[SECRET_ARG], kwargs={"k": SECRET_ARG})
    assert describe([spec, spec]) == "[c1, c1]"
    assert describe(RuntimeError("boom")) == "RuntimeError: boom"
    assert describe(list(range(8))) == "[0, 1, 2, 3, 4 (+3)]"


async def test_the_dashboard_can_be_switched_off() -> None:
    off = await Node("off", preset="local", dashboard=False).start()
    hub = await Hub("h", node="own", preset="local", dashboard=False).start()
    on = await Hub("h", node="on", preset="local").start()
    try:
        assert (await get(off.address.port, "/dashboard"))[0] == 404
        assert hub.endpoint is not None
        assert on.endpoint is not None
        assert (await get(hub.endpoint.address.port, "/dashboard/api"))[0] == 404
        assert (await get(on.endpoint.address.port, "/dashboard"))[0] == 200
    finally:
        await on.stop()
        await hub.stop()
        await off.stop()


@pytest.mark.parametrize("guided", [False, True])
async def test_the_internal_handler_ids_are_exactly_the_documented_ones(guided: bool) -> None:
    options: dict[str, Any] = {"distribution": Guided()} if guided else {}
    hub = await Hub("h", node="solo", preset="local", **options).start()
    try:
        ids = {h.id for event in Hook for h in hub.hooks.registered(event)}
        counters = {
            "mx_starts",
            "mx_restarts",
            "mx_crashes",
            "mx_buried",
            "mx_migrated",
            "mx_migration_failed",
            "mx_conflicts",
        }
        expected = {"ch_join", "ch_leave", "ch_shutdown", HOOK_ID, *counters}
        assert ids == (expected | {"dg_pre_start_handler"} if guided else expected)
        for event in Hook:
            for handler in hub.hooks.registered(event):
                with pytest.raises(ReservedHook):
                    hub.hooks.cancel(event, handler.id)
        assert not hub.hooks.registered(Hook.CHILD_DATA_ALTER)
        assert not hub.hooks.registered(Hook.REGISTRY_PID_INSERTED)
    finally:
        await hub.stop()
