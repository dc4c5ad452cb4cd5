"""The ``processhub`` command line, run as real OS processes (``python -m hub``)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
COOKIE = "cli-test-cookie-0123456789abcdef"
#: The environment of every command: this one without PROCESSHUB_* settings (tests add theirs).
ENV = {k: v for k, v in os.environ.items() if not k.startswith("PROCESSHUB_")}
ENV["PYTHONPATH"] = str(ROOT)

APP = """
from hub import ChildSpec
from tests.procs import Counter


async def setup(hub):
    print(f"setup {hub.node} {hub.hub_id}", flush=True)
    if hub.node == "a":
        specs = [ChildSpec(f"c{i}", Counter, args=[i]) for i in range(20)]
        result = await hub.start_children(specs)
        print(f"started {len(result.started)}", flush=True)
    yield
    print(f"teardown {hub.node}", flush=True)
"""


class CliNode:
    """One ``processhub node`` process; ``lines`` is what it printed on stdout."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.proc: asyncio.subprocess.Process | None = None
        self.lines: list[str] = []
        self.port = 0
        self._changed = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None

    async def start(self, *args: str, env: dict[str, str] | None = None) -> None:
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "hub",
            "node",
            "--name",
            self.name,
            *args,
            cwd=ROOT,
            env={**ENV, **(env or {})},
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        self._reader = asyncio.get_running_loop().create_task(self._read())
        line = await self.wait_line(lambda s: s.startswith("listening on "))
        host_port, _, name = line.removeprefix("listening on ").partition(" as ")
        assert name == self.name
        self.port = int(host_port.rpartition(":")[2])

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _read(self) -> None:
        assert self.proc is not None
        assert self.proc.stdout is not None
        while raw := await self.proc.stdout.readline():
            async with self._changed:
                self.lines.append(raw.decode().rstrip("\n"))
                self._changed.notify_all()

    async def wait_line(self, match: Callable[[str], bool], timeout: float = 20.0) -> str:
        async def find() -> str:
            async with self._changed:
                while True:
                    for line in self.lines:
                        if match(line):
                            return line
                    await self._changed.wait()

        try:
            return await asyncio.wait_for(find(), timeout)
        except TimeoutError:
            raise AssertionError(f"{self.name}: no such line in {self.lines}") from None

    async def terminate(self, timeout: float = 20.0) -> tuple[int, str]:
        """SIGTERM; the exit code and stderr."""
        assert self.proc is not None
        assert self.proc.stderr is not None
        self.proc.send_signal(signal.SIGTERM)
        code = await asyncio.wait_for(self.proc.wait(), timeout)
        if self._reader is not None:
            await self._reader
        return code, (await self.proc.stderr.read()).decode()

    async def close(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader


async def cli(
    *args: str, timeout: float = 20.0, env: dict[str, str] | None = None
) -> tuple[int, str, str]:
    """Run ``python -m hub ARGS`` (``env``: variables added to the environment); exit code,
    stdout, stderr."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "hub",
        *args,
        cwd=ROOT,
        env={**ENV, **(env or {})},
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(proc.communicate(), timeout)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def status_until(
    address: str, cookie: Path, done: Callable[[dict[str, Any]], bool], timeout: float = 20.0
) -> dict[str, Any]:
    """Poll ``processhub status --json`` until ``done(report)``; fails after ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    report: dict[str, Any] = {}
    while True:
        code, out, err = await cli(
            "status", "--node", address, "--cookie-file", str(cookie), "--json"
        )
        if code == 0:
            report = json.loads(out)
            if done(report):
                return report
        if loop.time() > deadline:
            raise AssertionError(f"status never matched: code {code}, {err}, {report}")


def children(report: dict[str, Any], hub: str) -> dict[str, list[str]]:
    nodes = report["hubs"].get(hub, {"nodes": {}})["nodes"]
    return {name: [c["id"] for c in part["children"]] for name, part in nodes.items()}


def alive(report: dict[str, Any]) -> set[str]:
    return {m["name"] for m in report["members"] if m["state"] == "ALIVE"}


@pytest.fixture
def cookie_file(tmp_path: Path) -> Path:
    path = tmp_path / "cookie"
    path.write_text(COOKIE + "\n")
    path.chmod(0o600)
    return path


@pytest.fixture
async def nodes() -> AsyncIterator[list[CliNode]]:
    started: list[CliNode] = []
    try:
        yield started
    finally:
        await asyncio.gather(*(n.close() for n in started))


async def test_node_joins_status_reports_members_and_children_and_sigterm_leaves(
    tmp_path: Path, cookie_file: Path, nodes: list[CliNode]
) -> None:
    (tmp_path / "cliapp.py").write_text(APP)
    common = ["--cookie-file", str(cookie_file), "--hub", "orders", "--preset", "local"]
    common += ["--app", "cliapp", "--app-dir", str(tmp_path), "--log-level", "WARNING"]
    a, b = CliNode("a"), CliNode("b")
    nodes += [a, b]
    await a.start("--port", "0", *common)
    await a.wait_line(lambda s: s == "started 20")
    await b.start("--port", "0", "--seeds", a.address, *common)
    await b.wait_line(lambda s: s == "setup b orders")

    def both_hold_children(report: dict[str, Any]) -> bool:
        where = children(report, "orders")
        ids = sorted(c for listed in where.values() for c in listed)
        return (
            {"a", "b"} <= alive(report)
            and ids == sorted(f"c{i}" for i in range(20))
            and all(where.get(n) for n in ("a", "b"))
        )

    report = await status_until(a.address, cookie_file, both_hold_children)
    assert report["seed"] == "a"
    members = {m["name"]: m for m in report["members"]}
    assert members["b"]["address"] == b.address
    assert members["a"]["hubs"] == ["orders"]
    assert not any(
        name.startswith("status-") and m["state"] == "ALIVE" for name, m in members.items()
    )

    code, out, err = await cli("status", "--node", b.address, "--cookie-file", str(cookie_file))
    assert code == 0, err
    assert "cluster as b" in out
    assert "hub 'orders': 20 children on 2 nodes" in out
    member_lines = out.split("\n\n")[0].splitlines()[2:]  # after the title and the header
    table = {line.split()[0]: line.split() for line in member_lines}
    assert (table["a"][1], table["a"][3]) == ("ALIVE", a.address)
    assert (table["b"][1], table["b"][3]) == ("ALIVE", b.address)

    code, err = await b.terminate()
    assert code == 0, err
    assert "teardown b" in b.lines
    assert b.lines[-1] == "stopped b"
    assert "Traceback" not in err

    def all_on_a(report: dict[str, Any]) -> bool:
        states = {m["name"]: m["state"] for m in report["members"]}
        return states.get("b") == "LEFT" and len(children(report, "orders").get("a", [])) == 20

    await status_until(a.address, cookie_file, all_on_a)
    code, err = await a.terminate()
    assert code == 0, err
    assert "teardown a" in a.lines


@pytest.mark.parametrize("content", [None, "", "  \n"])
async def test_a_missing_or_empty_cookie_file_is_a_clear_error(
    tmp_path: Path, content: str | None
) -> None:
    path = tmp_path / "cookie"
    if content is not None:
        path.write_text(content)
    code, out, err = await cli("node", "--cookie-file", str(path), "--hub", "x")
    assert code == 2
    assert "does not exist" in err if content is None else "is empty" in err
    assert "Traceback" not in err
    assert "listening" not in out
    code, _, err = await cli("status", "--node", "127.0.0.1:7000", "--cookie-file", str(path))
    assert code == 2
    assert "cookie file" in err
    assert "Traceback" not in err


async def test_status_of_an_unreachable_node_fails_within_its_timeout(cookie_file: Path) -> None:
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    code, _, err = await cli(
        "status", "--node", f"127.0.0.1:{port}", "--cookie-file", str(cookie_file), "--timeout", "1"
    )
    assert code == 1
    assert f"cannot reach a node at 127.0.0.1:{port} within 1s" in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["node", "--seeds", "nowhere"], "expected HOST:PORT"),
        (["node", "--port", "70000"], "port must be 0-65535"),
        (["node", "--preset", "wan"], "unknown preset 'wan'"),
        (["node", "--hub", "x", "--hub", "x"], "--hub given twice"),
        (["node", "--app", "no_such_module_here"], "cannot import --app 'no_such_module_here'"),
        (["status"], "the following arguments are required: --node"),
        (["status", "--node", "host:0"], "expected HOST:PORT"),
        ([], "the following arguments are required: COMMAND"),
    ],
)
async def test_bad_arguments_exit_2_with_a_message(args: list[str], message: str) -> None:
    code, _, err = await cli(*args)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
