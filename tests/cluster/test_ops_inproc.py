"""Embedding, health, metrics and loud misconfiguration, with real nodes on loopback in this
process (ports chosen by the OS). Deadlines only turn a hang into a failure."""

from __future__ import annotations

import asyncio
import logging
import socket
import sys
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families

from hub import CallFailed, ChildSpec, Hub, InvalidSpec
from hub.cluster import Node
from tests import procs
from tests.cluster.harness import owner
from tests.conftest import wait_until

COOKIE = "ops-inproc-cookie-0123456789"
DEADLINE = 30.0


def free_socket() -> socket.socket:
    """A listening-ready socket on an OS-chosen loopback port (so the port is known before
    the application starts, as ``attach`` needs)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


async def get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    async with session.get(url) as resp:
        return resp.status, await resp.text()


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus exposition: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(text: str, name: str, **labels: str) -> float:
    return samples(text)[(name, tuple(sorted(labels.items())))]


class App:
    """A user's aiohttp application with a hub attached, on an OS-chosen port."""

    def __init__(self, name: str, seeds: list[str], **hub_args: Any) -> None:
        self.sock = free_socket()
        self.port = self.sock.getsockname()[1]
        self.app = web.Application()
        self.app.router.add_get("/hello", self.hello)
        self.hub = Hub(
            "orders",
            node=name,
            port=self.port,
            seeds=seeds,
            cookie=COOKIE,
            preset="local",
            **hub_args,
        )
        self.hub.attach(self.app)
        self.runner = web.AppRunner(self.app)

    async def hello(self, request: web.Request) -> web.Response:
        return web.Response(text=f"hello from {self.hub.node}")

    async def start(self) -> App:
        await self.runner.setup()  # the hub starts here (cleanup_ctx)
        await web.SockSite(self.runner, self.sock).start()
        return self

    async def stop(self) -> None:
        await self.runner.cleanup()  # the hub stops here (on_shutdown)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


async def test_attached_hubs_form_a_cluster_on_the_apps_own_ports(
    session: aiohttp.ClientSession,
) -> None:
    a = await App("a", []).start()
    b = await App("b", [f"127.0.0.1:{a.port}"]).start()
    try:
        assert a.hub.endpoint is not None
        assert a.hub.endpoint.address.port == a.port
        assert a.hub.endpoint.mounted
        for app in (a, b):
            await wait_until(lambda app=app: app.hub.nodes(include_local=True) == ["a", "b"])
        assert await get(session, f"{b.url}/hello") == (200, "hello from b")
        res = await a.hub.start_children(procs.counters(20))
        res.raise_for_errors()
        await wait_until(lambda: len(b.hub.process_list()) == 20, DEADLINE)
        assert await b.hub.call("c7", "get") == 7
        local = {cid for cid, _ in a.hub.process_list("local")}
        local |= {cid for cid, _ in b.hub.process_list("local")}
        assert len(local) == 20
        status, body = await get(session, f"{a.url}/health/ready")
        assert (status, body) == (200, '{"ready": true, "reasons": []}')
    finally:
        await b.stop()
        await a.stop()
    assert not a.hub.is_alive()
    assert not b.hub.is_alive()
    assert a.hub.endpoint is not None
    assert a.hub.endpoint.state == "stopped"


async def test_get_or_start_from_two_nodes_at_once_starts_one_child_per_id() -> None:
    a = await App("a", []).start()
    b = await App("b", [f"127.0.0.1:{a.port}"]).start()
    try:
        for app in (a, b):
            await wait_until(lambda app=app: app.hub.nodes(include_local=True) == ["a", "b"])
        ids = [f"entity-{i}" for i in range(30)]
        specs = [ChildSpec(cid, procs.Counter) for cid in ids]
        found = await asyncio.gather(
            *(app.hub.get_or_start(spec) for spec in specs for app in (a, b, a))
        )
        assert all(len(where) == 1 for where in found)
        for i, cid in enumerate(ids):  # every caller got the same copy
            assert len({tuple(found[3 * i + k]) for k in range(3)}) == 1, cid
        running: dict[str, int] = {}
        for app in (a, b):
            for cid, _ in app.hub.process_list("local"):
                running[cid] = running.get(cid, 0) + 1
        assert running == dict.fromkeys(ids, 1)
        assert a.hub.counters is not None
        assert b.hub.counters is not None
        counted = (a.hub.counters, b.hub.counters)
        # each node's event pump delivers PROCESS_STARTUPS on its own schedule
        await wait_until(lambda: sum(c.starts for c in counted) >= 30, DEADLINE)
        assert a.hub.counters.starts + b.hub.counters.starts == 30
        again = await b.hub.get_or_start(specs[0])  # known: no start
        assert again == found[0]
        assert a.hub.counters.starts + b.hub.counters.starts == 30
    finally:
        await b.stop()
        await a.stop()


async def test_get_or_start_raises_the_start_error() -> None:
    async with Hub("solo", host=None) as hub:
        with pytest.raises(Exception, match="init"):
            await hub.get_or_start(ChildSpec("bad", procs.FailingInit))
        assert hub.lookup("bad") == []


async def test_several_hubs_share_one_attached_node(session: aiohttp.ClientSession) -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    app = web.Application()
    node = Node("shared", port=port, cookie=COOKIE, preset="local")
    node.attach(app)  # first: starts before the hubs, stops after them
    orders = Hub("orders", endpoint=node)
    billing = Hub("billing", endpoint=node)
    orders.attach(app)
    billing.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        assert orders.is_alive()
        assert billing.is_alive()
        assert sorted(node.hubs) == ["billing", "orders"]
        (await orders.start_children(procs.counters(3, "o"))).raise_for_errors()
        (await billing.start_children(procs.counters(2, "b"))).raise_for_errors()
        status, text = await get(session, f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert value(text, "processhub_children", hub="orders", state="running") == 3
        assert value(text, "processhub_children", hub="billing", state="running") == 2
        status, _ = await get(session, f"http://127.0.0.1:{port}/health/ready")
        assert status == 200
    finally:
        await runner.cleanup()
    assert not orders.is_alive()
    assert not billing.is_alive()
    assert node.state == "stopped"


async def test_attach_needs_the_apps_port_and_a_fresh_hub() -> None:
    with pytest.raises(InvalidSpec, match="port the application listens on"):
        Hub("orders", cookie=COOKIE).attach(web.Application())
    hub = Hub("orders", port=1234, cookie=COOKIE)
    hub.attach(web.Application())
    with pytest.raises(Exception, match="attach"):
        hub.attach(web.Application())


async def test_a_standalone_hub_attached_serves_health_and_metrics(
    session: aiohttp.ClientSession,
) -> None:
    sock = free_socket()
    port = sock.getsockname()[1]
    app = web.Application()
    hub = Hub("solo", host=None)
    hub.attach(app)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.SockSite(runner, sock).start()
    try:
        (await hub.start_children(procs.counters(4))).raise_for_errors()
        status, text = await get(session, f"http://127.0.0.1:{port}/metrics")
        assert status == 200
        assert value(text, "processhub_children", hub="solo", state="running") == 4
        assert await get(session, f"http://127.0.0.1:{port}/health/alive") == (
            200,
            '{"alive": true}',
        )
        assert (await get(session, f"http://127.0.0.1:{port}/health/ready"))[0] == 200
        await hub.drain()
        status, body = await get(session, f"http://127.0.0.1:{port}/health/ready")
        assert (status, body) == (503, '{"ready": false, "reasons": ["hub solo is draining"]}')
    finally:
        await runner.cleanup()


async def test_metrics_count_starts_crashes_restarts_and_migrations(
    session: aiohttp.ClientSession,
) -> None:
    async with Hub("orders", node="a", cookie=COOKIE, preset="local") as a:
        assert a.endpoint is not None
        url = f"http://127.0.0.1:{a.endpoint.address.port}/metrics"
        (await a.start_children(procs.counters(10))).raise_for_errors()
        with pytest.raises(CallFailed):
            await a.call("c3", "crash")
        assert a.counters is not None
        kept = a.counters
        await wait_until(lambda: (kept.restarts, kept.starts) == (1, 11))
        await wait_until(lambda: all(c.state == "running" for c in a.runtime.children().values()))
        status, text = await get(session, url)
        assert status == 200
        assert value(text, "processhub_children", hub="orders", state="running") == 10
        assert value(text, "processhub_children", hub="orders", state="restarting") == 0
        assert value(text, "processhub_child_starts_total", hub="orders") == 11  # 10 + restart
        assert value(text, "processhub_child_restarts_total", hub="orders") == 1
        assert value(text, "processhub_child_crashes_total", hub="orders") == 1
        assert value(text, "processhub_children_buried_total", hub="orders") == 0
        assert value(text, "processhub_messages_dropped_total", hub="orders") == 0
        assert value(text, "processhub_members", state="alive") == 1
        assert value(text, "processhub_registry_entries", hub="orders", node="a") == 10
        assert value(text, "processhub_node_joined") == 1
        assert (
            value(text, "processhub_hook_dispatches_total", hub="orders", event="child_crashed")
            == 1
        )
        assert all("c3" not in line for line in text.splitlines() if not line.startswith("#"))
        assert COOKIE not in text
        seed = f"127.0.0.1:{a.endpoint.address.port}"
        async with Hub("orders", node="b", cookie=COOKIE, preset="local", seeds=[seed]) as b:
            assert b.endpoint is not None
            moved = [cid for cid in (f"c{i}" for i in range(10)) if owner(["a", "b"], cid) == "b"]
            await wait_until(lambda: len(b.process_list("local")) == len(moved), DEADLINE)
            await wait_until(lambda: len(a.process_list("local")) == 10 - len(moved), DEADLINE)
            assert b.counters is not None
            bkept = b.counters
            await wait_until(lambda: bkept.migrated_in >= len(moved), DEADLINE)
            burl = f"http://127.0.0.1:{b.endpoint.address.port}/metrics"
            _, btext = await get(session, burl)
            assert value(
                btext, "processhub_migrations_total", hub="orders", kind="cold", outcome="arrived"
            ) == len(moved)
            assert value(btext, "processhub_child_starts_total", hub="orders") == len(moved)
            assert value(btext, "processhub_members", state="alive") == 2
            assert value(btext, "processhub_hub_members", hub="orders") == 2
            assert (
                value(btext, "processhub_planner_actions_total", hub="orders", action="bury") == 0
            )
            _, atext = await get(session, url)
            assert value(
                atext, "processhub_planner_actions_total", hub="orders", action="move"
            ) == len(moved)
            assert value(atext, "processhub_children", hub="orders", state="running") == 10 - len(
                moved
            )
            assert (
                value(
                    atext,
                    "processhub_remote_request_duration_seconds_count",
                    hub="orders",
                    kind="migrate",
                )
                >= 1
            )


async def test_observability_false_serves_no_read_only_route(
    session: aiohttp.ClientSession,
) -> None:
    async with Hub("orders", cookie=COOKIE, preset="local", observability=False) as hub:
        assert hub.endpoint is not None
        assert hub.counters is None
        base = f"http://127.0.0.1:{hub.endpoint.address.port}"
        for path in ("/metrics", "/health/alive", "/health/ready", "/dashboard"):
            assert (await get(session, base + path))[0] == 404
        ids = {h.id for h in hub.hooks.registered("process_startups")}
        assert not {i for i in ids if i.startswith("mx_")}  # no metric counts either


async def test_metrics_without_prometheus_client_answer_501(
    session: aiohttp.ClientSession, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    monkeypatch.delitem(sys.modules, "hub.metrics", raising=False)
    async with Hub("orders", cookie=COOKIE, preset="local") as hub:
        assert hub.endpoint is not None
        base = f"http://127.0.0.1:{hub.endpoint.address.port}"
        status, body = await get(session, base + "/metrics")
        assert status == 501
        assert "pip install 'processhub[metrics]'" in body
        assert (await get(session, base + "/health/ready"))[0] == 200


async def test_a_node_with_unreachable_seeds_warns_and_is_not_ready(
    session: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    dead = free_socket()  # bound, never listening: connections are refused
    seed = f"127.0.0.1:{dead.getsockname()[1]}"
    try:
        with caplog.at_level(logging.WARNING, logger="hub.cluster.node"):
            async with Hub("orders", cookie=COOKIE, preset="local", seeds=[seed]) as hub:
                assert hub.endpoint is not None
                base = f"http://127.0.0.1:{hub.endpoint.address.port}"
                status, body = await get(session, base + "/health/ready")
                assert status == 503
                assert "has joined no cluster yet" in body
                assert (await get(session, base + "/health/alive"))[0] == 200

                def warned() -> bool:
                    return any(
                        r.levelno == logging.WARNING and "joined no cluster yet" in r.getMessage()
                        for r in caplog.records
                    )

                await wait_until(warned, DEADLINE)
                [record] = [r for r in caplog.records if "joined no cluster yet" in r.getMessage()]
                assert seed in record.getMessage()
    finally:
        dead.close()


async def test_a_cookie_mismatch_is_logged_at_error_naming_the_peer(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.ERROR, logger="hub.cluster.node"):
        async with Node("a", cookie=COOKIE, preset="local") as a:
            seed = f"127.0.0.1:{a.address.port}"
            other = Node("b", cookie="another-cookie-0123456789", preset="local", seeds=[seed])
            async with other as b:

                def logged(text: str) -> bool:
                    return any(
                        r.levelno == logging.ERROR and text in r.getMessage()
                        for r in caplog.records
                    )

                await wait_until(lambda: logged("refused a message from 'b'"), DEADLINE)
                await wait_until(lambda: logged("rejected our cookie"), DEADLINE)
                assert not b.joined


def test_an_unspecified_host_with_a_cookie_needs_advertise() -> None:
    with pytest.raises(InvalidSpec, match="advertise="):
        Hub("orders", host="0.0.0.0", cookie=COOKIE)
    with pytest.raises(InvalidSpec, match="advertise="):
        Node("a", host="0.0.0.0", cookie=COOKIE)
    node = Node("a", host="0.0.0.0", cookie=COOKIE, advertise="10.1.2.3")
    assert node.address.host == "10.1.2.3"


async def test_a_locked_hub_is_not_ready(session: aiohttp.ClientSession) -> None:
    """Alone under ``StaticQuorum(2)``: locked (after a probe period), so not ready; the
    lock is reported, and a start is refused."""
    from hub import QuorumLost
    from strategies import StaticQuorum

    async with Hub("orders", cookie=COOKIE, preset="local", partition=StaticQuorum(2)) as hub:
        assert hub.endpoint is not None
        base = f"http://127.0.0.1:{hub.endpoint.address.port}"
        await wait_until(hub.is_locked, timeout=10.0)
        status, body = await get(session, base + "/health/ready")
        assert status == 503
        assert "hub orders is locked (partition strategy)" in body
        with pytest.raises(QuorumLost):
            await hub.start_children(procs.counters(1))
