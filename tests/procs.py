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
