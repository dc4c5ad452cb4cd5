"""processhub single-node demo: processes, supervision and hooks on one node
(``scripts/demo --local``; the multi-node demo is ``scripts/demo``).

Starts a hub with 1,000 counter children, sends them casts, crashes a few (they restart in
place), buries one that keeps crashing, fires a declared user hook, runs a scheduled status hook,
and stops cleanly. Exits non-zero if an invariant fails.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import sys
import time
from collections import Counter as Tally
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from hub import WILDCARD, ChildSpec, Hook, HookHandler, Hub, HubError, Process


class Counter(Process):
    async def init(self, start: int = 0) -> None:
        self.n = start

    async def handle_cast(self, message: Any) -> None:
        if message == "crash":
            raise RuntimeError("asked to crash")
        self.n += message["by"]

    async def handle_call(self, message: Any) -> Any:
        return self.n


class Demo:
    def __init__(self, sample_every: int) -> None:
        self.seen: Tally[str] = Tally()
        self.sample_every = sample_every
        self.failures: list[str] = []

    def on_event(self, event: str, data: Any) -> None:
        self.seen[event] += 1
        if self.seen[event] == 1 or self.seen[event] % self.sample_every == 0:
            print(f"  hook {event:<26} #{self.seen[event]:<5} {_short(data)}")

    def check(self, what: str, ok: bool) -> None:
        print(f"  [{'ok' if ok else 'FAIL'}] {what}")
        if not ok:
            self.failures.append(what)


def _short(data: Any) -> str:
    text = repr(data)
    return text if len(text) < 90 else text[:87] + "..."


def on_order(payload: dict[str, Any]) -> None:
    print(f"  user hook order_placed: {payload}")


async def run(children: int) -> int:
    demo = Demo(sample_every=max(1, children // 4))
    watched = [
        Hook.PROCESS_STARTUPS,
        Hook.REGISTRY_PID_INSERTED,
        Hook.REGISTRY_PID_REMOVED,
        Hook.CHILD_CRASHED,
        Hook.CHILD_PROCESS_PID_UPDATE,
        Hook.CHILD_BURIED,
        Hook.CHILD_STOPPED,
        Hook.COORDINATOR_SHUTDOWN,
    ]
    hooks = {e: [HookHandler(f"demo_{e}", demo.on_event, [str(e), WILDCARD])] for e in watched}
    async with Hub("demo", node="demo-node", host=None, hooks=hooks) as hub:
        print(f"hub {hub.hub_id!r} on node {hub.node!r}")
        hub.hooks.declare("order_placed", order_id=str, amount=int)
        hub.hooks.register("order_placed", HookHandler("print_order", on_order, priority=5))

        print(f"\n1. start {children} counter children")
        t0 = time.perf_counter()
        result = await hub.start_children(
            [ChildSpec(f"counter-{i}", Counter, args=[i]) for i in range(children)],
            metadata={"tag": "counters"},
        )
        took = time.perf_counter() - t0
        print(f"  started {len(result.started)} in {took * 1000:.0f} ms")
        demo.check(f"all {children} children started", result.status == "ok")

        print("\n2. cast +1 to every child, then read them back with calls")
        for i in range(children):
            await hub.cast(f"counter-{i}", {"by": 1})
        values = [await hub.call(f"counter-{i}", "get") for i in range(children)]
        demo.check("every counter holds start + 1", values == [i + 1 for i in range(children)])

        print("\n3. crash three children: they restart in place with fresh state and a new pid")
        before = {i: hub.get_pid(f"counter-{i}") for i in range(3)}
        for i in range(3):
            await hub.cast(f"counter-{i}", "crash")
        after = [await hub.call(f"counter-{i}", "get") for i in range(3)]
        demo.check("crashed children answer again with their initial state", after == [0, 1, 2])
        demo.check(
            "each restarted child has a new pid",
            all(hub.get_pid(f"counter-{i}") != before[i] for i in range(3)),
        )

        print("\n4. a child that keeps crashing is buried after its restart intensity")
        buried = asyncio.Event()
        hub.hooks.register(Hook.CHILD_BURIED, HookHandler("demo_buried", lambda _: buried.set()))
        await hub.start_child(ChildSpec("fragile", Counter, max_restarts=2, max_seconds=60))
        for _ in range(3):
            await hub.cast("fragile", "crash")
            with contextlib.suppress(HubError):  # answered by the next instance, or buried
                await hub.call("fragile", "get")
        await asyncio.wait_for(buried.wait(), timeout=10)
        demo.check("fragile was buried", [b.child_id for b in hub.buried()] == ["fragile"])

        print("\n5. a declared user hook, type-checked on fire")
        await hub.fire_hook("order_placed", order_id="A-17", amount=3)

        print("\n6. a scheduled hook reports the registry every 100 ms")
        ticks: list[int] = []
        three = asyncio.Event()

        def status(_: Any) -> None:
            ticks.append(len(hub.process_list()))
            if len(ticks) == 3:
                three.set()

        hub.hooks.register("status", HookHandler("status", status))
        handle = hub.hooks.schedule("status", interval=0.1)
        await asyncio.wait_for(three.wait(), timeout=10)
        handle.cancel()
        print(f"  status ticks saw {ticks} children")
        demo.check("registry lists every counter", ticks[-1] == children)
        demo.check("tag query finds every counter", len(hub.tag_query("counters")) == children)

        print("\n7. stop half of the children")
        res = await hub.stop_children([f"counter-{i}" for i in range(0, children, 2)])
        demo.check("half stopped", len(res.stopped) == (children + 1) // 2)
        demo.check("half remain", len(hub.process_list("local")) == children // 2)
        print("\n8. stop the hub")
    print("\nhook events seen:")
    for event, count in sorted(demo.seen.items()):
        print(f"  {event:<28} {count}")
    if demo.failures:
        print(f"\nFAILED: {demo.failures}")
        return 1
    print("\nall invariants held")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--children", type=int, default=1000)
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO")
    args = parser.parse_args()
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.ERROR,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    sys.exit(asyncio.run(run(args.children)))


if __name__ == "__main__":
    main()
