"""Simulator speed (issue 7 target: at least 1,000 schedules of 30 steps per minute on one
core): the seeded random schedules of the default suite, run one after the other in this one
process on the shell's model, ColdSwap and HotSwap, each checked at quiescence as the suite
checks it.

Usage: python scripts/bench/bench_sim.py [--quick] [--schedules N]
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts" / "bench"))

from common import write_report  # noqa: E402

from tests.sim.cluster import SimConfig  # noqa: E402
from tests.sim.schedules import random_schedule, run_schedule  # noqa: E402

GOAL_PER_MINUTE = 1_000
STEPS = 30


def rate(schedules: int, hot: bool) -> dict[str, Any]:
    """Schedules per minute over seeds ``0 .. schedules - 1`` (and their violations)."""
    violating = 0
    began = time.process_time()
    for seed in range(schedules):
        schedule = random_schedule(seed, steps=STEPS, rf=1 if hot else None)
        outcome = run_schedule(schedule, config=SimConfig(rf=schedule.rf, hot=hot))
        violating += bool(outcome.violations)
    cpu = time.process_time() - began
    return {
        "schedules": schedules,
        "cpu_s": cpu,
        "per_minute": schedules / cpu * 60.0,
        "violating": violating,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="200 schedules instead of 1,000")
    parser.add_argument("--schedules", type=int, default=None)
    parser.add_argument("--json", default=str(ROOT / "scripts/bench/results/sim.json"))
    args = parser.parse_args()
    n = args.schedules or (200 if args.quick else 1_000)
    report: dict[str, Any] = {"python": platform.python_version(), "steps": STEPS}
    print(f"simulator: {n:,} schedules of {STEPS} steps each, one core (CPU time)")
    print(f"{'variant':10} {'per minute':>11} {'goal':>7} {'met':>4} {'violating':>10}")
    for name, hot in (("ColdSwap", False), ("HotSwap", True)):
        row = rate(n, hot)
        row["met"] = row["per_minute"] >= GOAL_PER_MINUTE
        report[name] = row
        print(
            f"{name:10} {row['per_minute']:>11,.0f} {GOAL_PER_MINUTE:>7,} "
            f"{'yes' if row['met'] else 'NO':>4} {row['violating']:>10}"
        )
    write_report(Path(args.json), report)


if __name__ == "__main__":
    main()
