"""The event pump: hook events from task callbacks arrive complete and in order."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from hub import WILDCARD, ChildSpec, Hook, HookHandler, Hub
from tests import procs


async def test_async_handlers_see_lifecycle_events_in_the_order_they_happened() -> None:
    seen: list[tuple[str, str]] = []

    async def slow(event: str, data: Any) -> None:
        await asyncio.sleep(0)  # an async handler that yields must not reorder events
        seen.append((event, data.child_id))

    hooks = {
        e: [HookHandler(f"h_{e}", slow, [str(e), WILDCARD])]
        for e in (Hook.REGISTRY_PID_INSERTED, Hook.REGISTRY_PID_REMOVED, Hook.CHILD_STOPPED)
    }
    async with Hub("h", node="n1", host=None, hooks=hooks) as hub:
        for i in range(5):
            await hub.start_child(ChildSpec(f"c{i}", procs.idle))
            await hub.stop_child(f"c{i}")
    expected = []
    for i in range(5):
        expected += [
            ("registry_pid_inserted", f"c{i}"),
            ("registry_pid_removed", f"c{i}"),
            ("child_stopped", f"c{i}"),
        ]
    assert seen == expected


async def test_past_the_queue_bound_events_are_still_delivered(
    caplog: pytest.LogCaptureFixture,
) -> None:
    inserted: list[str] = []
    hooks = {
        Hook.REGISTRY_PID_INSERTED: [
            HookHandler("count", lambda data: inserted.append(data.child_id))
        ]
    }
    with caplog.at_level(logging.WARNING, logger="hub.events_pump"):
        async with Hub("h", node="n1", host=None, hooks=hooks, event_queue_limit=10) as hub:
            res = await hub.start_children([ChildSpec(f"c{i}", procs.idle) for i in range(100)])
            assert res.status == "ok"
    assert sorted(inserted) == sorted(f"c{i}" for i in range(100))
    assert any("out of order" in r.getMessage() for r in caplog.records)
