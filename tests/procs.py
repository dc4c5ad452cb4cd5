"""Processes used by the tests (importable by "tests.procs:Name")."""

from __future__ import annotations

import asyncio
from typing import Any

from hub import Call, ChildSpec, Process, ProcessContext

TERMINATED: list[tuple[str, Any]] = []


class Counter(Process):
    async def init(self, start: int = 0) -> None:
        self.n = start

    async def handle_cast(self, message: Any) -> None:
        self.n += message["by"]

    async def handle_call(self, message: Any) -> Any:
        if message == "crash":
            raise RuntimeError("boom")
        if message == "stop":
            self.ctx.stop("normal")
        if message == "stop_abnormal":
            self.ctx.stop("oops")
        if message == "pid":
            return self.ctx.pid
        return self.n

    def handover_state(self) -> Any:
        return {"n": self.n}

    async def receive_handover(self, state: Any) -> None:
        self.n = state["n"]

    async def terminate(self, reason: Any) -> None:
        TERMINATED.append((self.ctx.child_id, reason))


class FailingInit(Process):
    async def init(self) -> None:
        raise ValueError("bad init")


class HangingInit(Process):
    async def init(self) -> None:
        await asyncio.Event().wait()


class StubbornTerminate(Process):
    async def terminate(self, reason: Any) -> None:
        await asyncio.Event().wait()


class Silent(Process):
    """Never answers calls."""

    async def handle_call(self, message: Any) -> Any:
        await asyncio.Event().wait()


async def echo(ctx: ProcessContext, *args: Any) -> None:
    while True:
        message = await ctx.receive()
        if isinstance(message, Call):
            message.reply(("echo", message.message, args))
        elif message == "crash":
            raise RuntimeError("crash")
        elif message == "exit":
            return
        elif message == "stop_abnormal":
            ctx.stop("oops")


async def idle(ctx: ProcessContext) -> None:
    while True:
        await ctx.receive()


def not_async(ctx: ProcessContext) -> None:
    return None


class FailsOn(Process):
    """``init`` fails on the node named by its argument (it depends on something that node
    lacks) and succeeds everywhere else; a call answers the node it runs on."""

    async def init(self, node: str) -> None:
        if self.ctx.node == node:
            raise RuntimeError(f"{self.ctx.child_id} cannot run on {node}")

    async def handle_call(self, message: Any) -> Any:
        return self.ctx.node


class Unencodable(Process):
    """Answers every call with a value msgpack cannot encode (a set; ``object()`` when asked
    ``"object"``)."""

    async def handle_call(self, message: Any) -> Any:
        if message == "object":
            return object()
        return {1, 2, 3}


def counters(n: int, prefix: str = "c") -> list[ChildSpec]:
    """``n`` Counter specs ``<prefix>0..``, each starting at its index."""
    return [ChildSpec(f"{prefix}{i}", Counter, args=[i]) for i in range(n)]


#: child id -> ``(sender, seq)`` of every message a :class:`Sequenced` applied, in the order
#: applied (in-process clusters share it: the order spans the copies of a moving child)
APPLIED: dict[str, list[tuple[str, int]]] = {}


class Sequenced(Process):
    """Applies ``{"from": sender, "seq": k}`` casts and checks that each sender's seqs arrive
    as 1, 2, 3, ... (``bad`` counts the ones that did not). Its state moves with HotSwap."""

    async def init(self, slow_terminate: float = 0.0) -> None:
        self.n = 0
        self.last: dict[str, int] = {}
        self.bad = 0
        self.handovers = 0
        self.slow_terminate = slow_terminate

    async def handle_cast(self, message: Any) -> None:
        sender, seq = message["from"], message["seq"]
        if seq != self.last.get(sender, 0) + 1:
            self.bad += 1
        self.last[sender] = seq
        self.n += 1
        APPLIED.setdefault(self.ctx.child_id, []).append((sender, seq))

    async def handle_call(self, message: Any) -> Any:
        return {
            "n": self.n,
            "last": self.last,
            "bad": self.bad,
            "handovers": self.handovers,
            "node": self.ctx.node,
        }

    def handover_state(self) -> Any:
        return {"n": self.n, "last": self.last, "bad": self.bad, "handovers": self.handovers}

    async def receive_handover(self, state: Any) -> None:
        self.n = state["n"]
        self.last = state["last"]
        self.bad = state["bad"]
        self.handovers = state["handovers"] + 1

    async def terminate(self, reason: Any) -> None:
        if self.slow_terminate:
            await asyncio.sleep(self.slow_terminate)


class BigState(Process):
    """Hands over a state of ``size`` bytes."""

    async def init(self, size: int) -> None:
        self.blob = b"x" * size
        self.received = False

    async def handle_call(self, message: Any) -> Any:
        return {"received": self.received, "size": len(self.blob)}

    def handover_state(self) -> Any:
        return {"blob": self.blob}

    async def receive_handover(self, state: Any) -> None:
        self.received = True


class SlowInit(Process):
    """``init`` takes ``seconds`` on every node but ``fast_on``."""

    async def init(self, seconds: float, fast_on: str = "") -> None:
        if self.ctx.node != fast_on:
            await asyncio.sleep(seconds)
        self.received = False

    async def handle_call(self, message: Any) -> Any:
        return {"received": self.received, "node": self.ctx.node}

    def handover_state(self) -> Any:
        return {"from": self.ctx.node}

    async def receive_handover(self, state: Any) -> None:
        self.received = True


class SlowCounter(Counter):
    """A Counter whose ``init`` takes ``init_seconds`` on node ``slow_init_on`` and whose
    ``terminate`` takes ``stop_seconds`` on node ``slow_stop_on``; under a node process
    (``announce``) it prints an event line when it starts waiting."""

    async def init(
        self,
        start: int = 0,
        slow_init_on: str = "",
        init_seconds: float = 0.0,
        slow_stop_on: str = "",
        stop_seconds: float = 0.0,
        announce: bool = False,
    ) -> None:
        await super().init(start)
        self.slow_stop_on = slow_stop_on
        self.stop_seconds = stop_seconds
        self.announce = announce
        if self.ctx.node == slow_init_on:
            self._say("slow_init")
            await asyncio.sleep(init_seconds)

    async def terminate(self, reason: Any) -> None:
        if self.ctx.node == self.slow_stop_on and reason == "migrate":
            self._say("slow_terminate")
            await asyncio.sleep(self.stop_seconds)

    def _say(self, ev: str) -> None:
        if self.announce:
            import json
            import sys
            import time

            sys.stdout.write(json.dumps({"ev": ev, "id": self.ctx.child_id, "t": time.monotonic()}))
            sys.stdout.write("\n")
            sys.stdout.flush()


#: ``(child_id, node, mode)`` of every ``on_mode_change`` of a :class:`Replica` (in-process)
MODES: list[tuple[str, str, str]] = []


class Replica(Counter):
    """A Counter that reports its mode (``ctx.mode``) and records ``on_mode_change``."""

    async def handle_call(self, message: Any) -> Any:
        if message == "mode":
            return {"mode": self.ctx.mode, "node": self.ctx.node}
        return await super().handle_call(message)

    async def on_mode_change(self, mode: str) -> None:
        MODES.append((self.ctx.child_id, self.ctx.node, mode))
