"""``hub.tune_gc``: the collector thresholds it sets, what it returns, what it refuses."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from hub import tune_gc
from hub.tuning import ADVISE_AT, GC_THRESHOLDS, gc_advice


@pytest.fixture
def thresholds() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_tune_gc_sets_the_large_heap_thresholds_and_returns_the_previous_ones(
    thresholds: None,
) -> None:
    gc.set_threshold(700, 10, 10)
    assert tune_gc() == (700, 10, 10)
    assert gc.get_threshold() == GC_THRESHOLDS == (1_000, 10, 10_000)


def test_tune_gc_takes_explicit_thresholds(thresholds: None) -> None:
    tune_gc((5_000, 5, 50))
    assert gc.get_threshold() == (5_000, 5, 50)


@pytest.mark.parametrize("bad", [(0, 10, 10), (10, 10), (1.5, 10, 10), (10, -1, 10)])
def test_tune_gc_refuses_thresholds_that_are_not_three_positive_integers(
    thresholds: None, bad: tuple[int, ...]
) -> None:
    before = gc.get_threshold()
    with pytest.raises(ValueError, match="three positive integers"):
        tune_gc(bad)  # type: ignore[arg-type]
    assert gc.get_threshold() == before


def test_gc_advice_names_the_entries_and_the_fix_only_for_a_large_registry_on_default_thresholds(
    thresholds: None,
) -> None:
    gc.set_threshold(700, 10, 10)
    assert ADVISE_AT == 20_000  # docs/operations.md
    assert gc_advice(ADVISE_AT - 1) is None
    assert gc_advice(ADVISE_AT) is not None
    advice = gc_advice(100_000)
    assert advice is not None
    assert "100,000 entries" in advice
    assert "(700, 10, 10)" in advice
    assert "tune_gc()" in advice
    tune_gc()
    assert gc_advice(100_000) is None


def test_gc_advice_is_silent_while_the_collector_is_disabled(thresholds: None) -> None:
    gc.set_threshold(700, 10, 10)
    gc.disable()
    try:
        assert gc_advice(100_000) is None
    finally:
        gc.enable()
