"""Pure helpers for observability: a latency histogram, a log throttle, and the seed watch.

No I/O and no clock: each takes ``now`` (monotonic seconds) where time matters, so the rules
are unit-tested in virtual time. The node (:mod:`hub.cluster.node`) and the links
(:mod:`hub.cluster.links`) feed them; :mod:`hub.metrics` reads them at scrape time.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = [
    "LATENCY_BUCKETS",
    "LatencyHistogram",
    "SeedWatch",
    "Throttle",
    "count_states",
    "suppressed_note",
]

#: Upper bounds (seconds) of the remote request latency buckets; ``+Inf`` is implied.
LATENCY_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class LatencyHistogram:
    """Counts of observations per bucket (non-cumulative) and their sum: one ``bisect`` and two
    additions per observation. :meth:`cumulative` gives Prometheus' cumulative buckets."""

    __slots__ = ("bounds", "counts", "total")

    def __init__(self, bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("histogram bounds must be distinct and increasing")
        self.bounds = tuple(float(b) for b in bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0

    def observe(self, seconds: float) -> None:
        self.counts[bisect_left(self.bounds, seconds)] += 1
        self.total += seconds

    @property
    def count(self) -> int:
        return sum(self.counts)

    def cumulative(self) -> list[tuple[str, int]]:
        """``[(upper bound as text, observations <= bound)]``, ending with ``("+Inf", n)``."""
        out: list[tuple[str, int]] = []
        running = 0
        for bound, n in zip((*self.bounds, float("inf")), self.counts, strict=True):
            running += n
            out.append(("+Inf" if bound == float("inf") else repr(bound), running))
        return out


@dataclass
class Throttle:
    """At most one loud log line per key per ``interval`` seconds; the rest are counted and
    reported with the next loud one (``allow`` returns how many were suppressed, or ``None``
    when this one should be quiet)."""

    interval: float = 30.0
    _next: dict[str, float] = field(default_factory=dict)
    _quiet: dict[str, int] = field(default_factory=dict)
    max_keys: int = 1024

    def allow(self, key: str, now: float) -> int | None:
        due = self._next.get(key)
        if due is not None and now < due:
            self._quiet[key] = self._quiet.get(key, 0) + 1
            return None
        if due is None and len(self._next) >= self.max_keys:
            self._next.clear()  # bounded: forgetting only makes the next line loud again
            self._quiet.clear()
        self._next[key] = now + self.interval
        return self._quiet.pop(key, 0)


@dataclass
class SeedWatch:
    """Decides when to warn that a node started with seeds has joined nobody.

    The first warning is due ``first`` seconds after :meth:`start`; each next one waits twice as
    long as the previous gap, up to ``cap``. Joining (:meth:`joined`) ends the warnings for good
    (a node that later loses every peer is reported by membership events, not by this).
    Failures per seed are remembered (last error text) so the warning can say why."""

    seeds: tuple[str, ...]
    first: float = 3.0
    cap: float = 300.0
    due: float = float("inf")
    gap: float = 0.0
    warnings: int = 0
    done: bool = False
    errors: dict[str, str] = field(default_factory=dict)

    def start(self, now: float) -> None:
        if self.seeds and not self.done:
            self.due = now + self.first
            self.gap = self.first

    def failed(self, seed: str, error: str) -> None:
        if not self.done:
            self.errors[seed] = error[:200]

    def joined(self) -> None:
        self.done = True
        self.due = float("inf")
        self.errors.clear()

    def tick(self, now: float) -> str | None:
        """The warning to log now, if one is due (and schedule the next one)."""
        if self.done or now < self.due:
            return None
        self.warnings += 1
        self.gap = min(self.gap * 2, self.cap)
        self.due = now + self.gap
        return self.message(now)

    def message(self, now: float) -> str:
        why = "; ".join(f"{s}: {self.errors[s]}" for s in self.seeds if s in self.errors)
        return (
            f"joined no cluster yet: no seed answered ({', '.join(self.seeds)})"
            + (f" [{why}]" if why else "")
            + f"; still trying, next report in {self.gap:.0f}s (this node is not ready)"
        )


def suppressed_note(count: int | None) -> str:
    """`` (N similar messages suppressed)`` for a throttled log line, or nothing."""
    return f" ({count} similar messages suppressed)" if count else ""


def count_states(states: Iterable[str]) -> dict[str, int]:
    """How many of each state (a plain loop: cheaper than ``Counter`` on short strings)."""
    out: dict[str, int] = {}
    for state in states:
        out[state] = out.get(state, 0) + 1
    return out
