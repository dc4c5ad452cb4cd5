from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from hub import WILDCARD, Backoff, Hook, HookHandler, Hub
from tests import procs


async def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail the test after ``timeout`` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not predicate():
        if loop.time() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.005)


class Recorder:
    """Collects hook events: ``rec.of(Hook.X)`` lists the data of each dispatch of X."""

    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def handlers(self, *events: Hook) -> dict[Hook | str, list[HookHandler]]:
        return {e: [HookHandler(f"rec_{e}", self.record, [str(e), WILDCARD])] for e in events}

    def record(self, event: str, data: Any) -> None:
        self.events.append((event, data))

    def of(self, event: Hook) -> list[Any]:
        return [d for e, d in self.events if e == event]


@pytest.fixture(autouse=True)
def _clear_terminated() -> None:
    procs.TERMINATED.clear()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()


FAST = Backoff(base=0.001, cap=0.002)


@pytest.fixture
async def make_hub(recorder: Recorder) -> Any:
    """Factory of started hubs that record every event; all are stopped after the test."""
    hubs: list[Hub] = []

    async def make(**kwargs: Any) -> Hub:
        kwargs.setdefault("node", "n1")
        kwargs.setdefault("host", None)  # standalone: no network endpoint
        kwargs.setdefault("restart_backoff", FAST)
        kwargs.setdefault(
            "hooks", recorder.handlers(*(e for e in Hook if e != Hook.CHILD_DATA_ALTER))
        )
        hub = Hub("test", **kwargs)
        hubs.append(hub)
        await hub.start()
        return hub

    yield make
    for hub in hubs:
        await hub.stop()
