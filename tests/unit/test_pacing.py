"""``hub.pacing.Pace``: when a slice is used up, and what a pause does."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Sequence

import pytest

from hub.pacing import SLICE, Pace, RollingSweep, in_slices, paced


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


async def turns_during(work: Awaitable[object], done: list[int]) -> list[int]:
    """Await ``work`` while another task counts its turns: how many items were ``done`` at
    each of them."""
    turns: list[int] = []

    async def other() -> None:
        while True:
            turns.append(len(done))
            await asyncio.sleep(0)

    task = asyncio.create_task(other())
    await asyncio.sleep(0)
    try:
        await work
    finally:
        task.cancel()
    return turns


async def test_paced_maps_in_order_and_lets_other_tasks_run_between_slices() -> None:
    assert await paced(lambda x: x * 2, range(5)) == [0, 2, 4, 6, 8]
    done: list[int] = []

    def slow(x: int) -> int:
        time.sleep(SLICE / 4)  # ten of them take more than two slices
        done.append(x)
        return x

    turns = await turns_during(paced(slow, range(10)), done)
    assert done == list(range(10))
    assert any(0 < n < 10 for n in turns)  # it ran while the map was under way


async def test_in_slices_hands_out_consecutive_slices_and_lets_other_tasks_run() -> None:
    seen: list[list[int]] = []
    await in_slices(lambda part: seen.append(list(part)), list(range(7)), size=3)
    assert seen == [[0, 1, 2], [3, 4, 5], [6]]
    done: list[int] = []

    def slow(part: Sequence[int]) -> None:
        time.sleep(SLICE / 2)  # ten slices take five time slices
        done.extend(part)

    turns = await turns_during(in_slices(slow, list(range(20)), size=2), done)
    assert done == list(range(20))
    assert any(0 < n < 20 for n in turns)  # it ran while the slices were under way


def test_a_rolling_sweep_visits_everyone_once_a_round_a_bounded_part_at_a_time() -> None:
    population = [f"c{i}" for i in range(25)]
    sweep = RollingSweep(10)
    parts = [sweep.next(lambda: population) for _ in range(3)]
    assert [len(p) for p in parts] == [10, 10, 5]
    assert sorted(x for p in parts for x in p) == sorted(population)
    population.append("late")  # joins the next round, not the current one
    assert "late" in sweep.next(lambda: population)
    sweep.restart()
    assert len(sweep.next(lambda: population)) == 10
    with pytest.raises(ValueError, match="at least 1"):
        RollingSweep(0)
