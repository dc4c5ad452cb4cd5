"""``hub.pacing.Pace``: when a slice is used up, and what a pause does."""

from __future__ import annotations

import asyncio

from hub.pacing import Pace


def test_a_slice_is_due_once_used_up_and_not_before() -> None:
    assert Pace(0.0).due()
    assert not Pace(3600.0).due()


async def test_a_pause_gives_other_tasks_a_turn() -> None:
    pace = Pace(0.0)
    ran: list[str] = []

    async def other() -> None:
        ran.append("other")

    task = asyncio.create_task(other())
    assert pace.due()
    await pace.pause()
    assert ran == ["other"]
    await task
