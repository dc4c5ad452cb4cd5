"""The example service (``examples/counter_service.py``) as 3 real OS processes forming a
cluster on their service ports, driven over HTTP: exact counts, one copy of each counter, a
kill -9 and the survivors' failover, a graceful SIGTERM. Ports are chosen by the OS (each
process inherits a bound socket). Deadlines only turn a hang into a failure."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[2]
COOKIE = "counter-service-cookie-0123456789"
DEADLINE = 60.0


class Service:
    def __init__(self, name: str) -> None:
        self.name = name
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]
        self.proc: asyncio.subprocess.Process | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self, seeds: list[str]) -> None:
        env = {**os.environ, "PROCESSHUB_COOKIE": COOKIE, "PYTHONPATH": str(ROOT)}
        cmd = [sys.executable, "-m", "examples.counter_service", "--name", self.name]
        cmd += ["--sock-fd", str(self.sock.fileno()), "--seeds", ",".join(seeds)]
        cmd += ["--preset", "local"]
        self.proc = await asyncio.create_subprocess_exec(
            *cmd,
            cwd=ROOT,
            env=env,
            pass_fds=[self.sock.fileno()],
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        self.sock.close()  # the child has it

    async def stop(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.kill()
            await self.proc.wait()


@pytest.fixture
async def services() -> AsyncIterator[list[Service]]:
    made = [Service(n) for n in ("a", "b", "c")]
    try:
        yield made
    finally:
        for s in made:
            await s.stop()


async def _get(session: aiohttp.ClientSession, url: str) -> tuple[int, str]:
    try:
        async with session.get(url) as resp:
            return resp.status, await resp.text()
    except aiohttp.ClientError:
        return 0, ""


async def metric(session: aiohttp.ClientSession, svc: Service, name: str, **labels: str) -> float:
    status, text = await _get(session, f"{svc.url}/metrics")
    assert status == 200
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == name and s.labels == labels:
                return float(s.value)
    raise AssertionError(f"{name}{labels} not in {svc.name}'s metrics")


async def poll(check: Callable[[], Awaitable[bool]], what: str) -> None:
    """Await the coroutine function ``check`` until it returns True (deadline: DEADLINE)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + DEADLINE
    while not await check():
        if loop.time() > deadline:
            raise AssertionError(f"{what}: not within {DEADLINE}s")
        await asyncio.sleep(0.05)


async def test_three_instances_serve_exact_counters_over_http(services: list[Service]) -> None:
    a, b, c = services
    await a.start([])
    await b.start([f"127.0.0.1:{a.port}"])
    await c.start([f"127.0.0.1:{a.port}"])
    async with aiohttp.ClientSession() as session:

        async def ready() -> bool:
            for svc in services:
                if (await _get(session, f"{svc.url}/health/ready"))[0] != 200:
                    return False
                if await metric(session, svc, "processhub_members", state="alive") != 3:
                    return False
            return True

        await poll(ready, "3 ready instances that see each other")

        async def incr(svc: Service, cid: str, by: int) -> dict[str, object]:
            async with session.post(f"{svc.url}/counters/{cid}/increment?by={by}") as resp:
                assert resp.status == 200, await resp.text()
                body: dict[str, object] = await resp.json()
                return body

        ids = [f"cart-{i}" for i in range(12)]
        # each counter gets by=1..6 from all three instances at once: 21 in total
        await asyncio.gather(*(incr(services[k % 3], cid, k) for cid in ids for k in range(1, 7)))

        async def read(svc: Service, cid: str) -> dict[str, object]:
            async with session.get(f"{svc.url}/counters/{cid}") as resp:
                assert resp.status == 200
                body: dict[str, object] = await resp.json()
                return body

        for svc in services:
            for cid in ids:
                assert (await read(svc, cid))["value"] == 21
        running = [
            await metric(session, s, "processhub_children", hub="counters", state="running")
            for s in services
        ]
        assert sum(running) == len(ids)  # one copy of each counter in the cluster

        async def started() -> list[float]:
            return [
                await metric(session, s, "processhub_child_starts_total", hub="counters")
                for s in services
            ]

        async def all_counted() -> bool:  # each node's event pump counts on its own schedule
            return sum(await started()) >= len(ids)

        await poll(all_counted, "every start counted")
        assert sum(await started()) == len(ids)

        where = {cid: str((await read(a, cid))["node"]) for cid in ids}
        victim = next(s for s in (b, c) if s.name in where.values())
        assert victim.proc is not None
        victim.proc.send_signal(signal.SIGKILL)
        await victim.proc.wait()
        survivors = [s for s in services if s is not victim]

        async def failed_over() -> bool:
            total = 0.0
            for svc in survivors:
                if await metric(session, svc, "processhub_members", state="alive") != 2:
                    return False
                total += await metric(
                    session, svc, "processhub_children", hub="counters", state="running"
                )
            return total == len(ids)

        await poll(failed_over, "the survivors run every counter once")
        for cid in ids:
            lost = where[cid] == victim.name  # its state died with the process
            for svc in survivors:
                assert (await read(svc, cid))["value"] == (0 if lost else 21), cid
        await asyncio.gather(*(incr(survivors[k % 2], cid, 1) for cid in ids for k in range(4)))
        for cid in ids:
            want = (0 if where[cid] == victim.name else 21) + 4
            assert (await read(survivors[1], cid))["value"] == want
        body = json.loads((await _get(session, f"{survivors[0].url}/health/ready"))[1])
        assert body == {"ready": True, "reasons": []}
    for svc in survivors:
        assert svc.proc is not None
        svc.proc.send_signal(signal.SIGTERM)
    for svc in survivors:
        assert svc.proc is not None
        assert await svc.proc.wait() == 0
