"""The operator commands of ``processhub`` (status details, children, drain), the environment
configuration and the refused-cookie message, on real node processes."""

from __future__ import annotations

import json
import platform
from pathlib import Path
from typing import Any

import pytest

import hub
from hub.board import ring_shares
from strategies import ConsistentHashing
from tests.cluster.harness import owners
from tests.cluster.test_cli import (
    COOKIE,
    CliNode,
    children,
    cli,
    cookie_file,
    nodes,
    status_until,
)

__all__ = ["cookie_file", "nodes"]  # fixtures

APP = """
from hub import ChildSpec, Process


class Boom(Process):
    async def handle_cast(self, message):
        raise RuntimeError("boom")


async def setup(hub):
    if hub.node == "a":
        specs = [
            ChildSpec(f"c{i}", "tests.procs:Counter", args=[i],
                      metadata={"tag": "even" if i % 2 == 0 else "odd"})
            for i in range(10)
        ]
        specs.append(ChildSpec("boom", Boom, max_restarts=0))
        await hub.start_children(specs)
        await hub.cast("boom", "go")
        print("started", flush=True)
"""
IDS = [f"c{i}" for i in range(10)]


def rows(text: str, header: str) -> dict[str, list[str]]:
    """The rows of the table whose header line starts with ``header``, by first column."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(header))
    out = {}
    for line in lines[start + 1 :]:
        if not line.startswith("  ") or line.strip().startswith(("buried:", "hook events")):
            break
        cells = line.split()
        out[cells[0]] = cells[1:]
    return out


async def start_pair(tmp_path: Path, cookie: Path, nodes: list[CliNode]) -> tuple[CliNode, CliNode]:
    (tmp_path / "opsapp.py").write_text(APP)
    common = ["--cookie-file", str(cookie), "--hub", "orders", "--preset", "local"]
    common += ["--app", "opsapp", "--app-dir", str(tmp_path), "--log-level", "WARNING"]
    a, b = CliNode("a"), CliNode("b")
    nodes += [a, b]
    await a.start("--port", "0", *common)
    await a.wait_line(lambda s: s == "started")
    await b.start("--port", "0", "--seeds", a.address, *common)
    await b.wait_line(lambda s: s == "running hubs: orders")
    return a, b


def settled(report: dict[str, Any]) -> bool:
    """Both nodes run their share of the ten counters and both know boom is buried."""
    where = children(report, "orders")
    want = owners(["a", "b"], IDS)
    info = report["info"]
    return (
        {n: sorted(ids) for n, ids in where.items()}
        == {n: sorted(c for c in IDS if want[c] == n) for n in ("a", "b")}
        and all(
            [b["id"] for b in info[n]["hubs"]["orders"]["buried"]] == ["boom"] for n in ("a", "b")
        )
        and all("child_buried" in info[n]["hubs"]["orders"]["hooks"] for n in ("a", "b"))
    )


async def test_status_children_and_drain(
    tmp_path: Path, cookie_file: Path, nodes: list[CliNode]
) -> None:
    a, b = await start_pair(tmp_path, cookie_file, nodes)
    assert f"dashboard on http://127.0.0.1:{a.port}/dashboard" in a.lines
    await status_until(a.address, cookie_file, settled)
    want = owners(["a", "b"], IDS)
    on = {n: sorted(c for c in IDS if want[c] == n) for n in ("a", "b")}
    shares = ring_shares(ConsistentHashing(nodes=["a", "b"]).belongs_to, ["a", "b"])

    code, out, err = await cli("status", "--node", a.address, "--cookie-file", str(cookie_file))
    assert code == 0, err
    py = platform.python_version()
    members = rows(out, "NAME")
    assert members["a"] == ["ALIVE", "1", a.address, "orders", hub.__version__, py]
    assert members["b"] == ["ALIVE", "1", b.address, "orders", hub.__version__, py]
    table = rows(out, "NODE")
    for name in ("a", "b"):
        n = str(len(on[name]))
        assert table[name][:4] == [n, f"{100 * shares[name]:.1f}%", "running", n]
    assert "  buried: boom on a after 1 crash: RuntimeError: boom" in out.splitlines()
    hooks = rows(out, "EVENT")
    assert hooks["child_crashed"] == ["1/0", "-"]
    assert hooks["child_buried"] == ["1/0", "1/0"]
    recent = out.split("recent errors (newest last):\n")[1].splitlines()
    assert any(
        line.endswith(
            "  a  ERROR hub.supervisor: child boom buried: 1 crashes within 5.0s "
            "(max_restarts=0); last error: RuntimeError('boom')"
        )
        for line in recent
    ), recent

    code, out, err = await cli(
        "children", "--node", a.address, "--cookie-file", str(cookie_file), "--tag", "even"
    )
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == "5 children (tag 'even')"
    listed = [(c[1], c[2], c[4], c[5]) for c in (line.split() for line in lines[2:])]
    assert listed == [(c, want[c], "tests.procs:Counter", "even") for c in IDS[::2]]

    code, out, err = await cli(
        "children", "--node", a.address, "--cookie-file", str(cookie_file), "--on", "b", "--json"
    )
    assert code == 0, err
    report = json.loads(out)
    assert [(c["id"], c["node"]) for c in report["children"]] == [(c, "b") for c in on["b"]]
    assert report["errors"] == {}

    # configuration from the environment; a flag wins over its variable
    env = {"PROCESSHUB_NODE": b.address, "PROCESSHUB_COOKIE": COOKIE}
    code, out, err = await cli("children", "--on", "a", env=env)
    assert (code, out.splitlines()[0]) == (0, f"{len(on['a'])} children (on a)"), err
    env = {"PROCESSHUB_NODE": "127.0.0.1:1", "PROCESSHUB_COOKIE": "wrong-cookie-0123456789"}
    code, out, err = await cli(
        "children", "--node", a.address, "--cookie-file", str(cookie_file), env=env
    )
    assert (code, out.splitlines()[0]) == (0, "10 children"), err

    code, out, err = await cli("drain", "b", "--node", a.address, "--cookie-file", str(cookie_file))
    assert code == 0, err
    assert out.splitlines() == [
        f"hub 'orders' on b: drained, {len(on['b'])} children moved off, 0 still there",
        "b stays drained (it owns no children) until it restarts",
    ]

    def drained(report: dict[str, Any]) -> bool:
        where = children(report, "orders")
        return sorted(where.get("a", [])) == IDS and where.get("b") == []

    await status_until(a.address, cookie_file, drained)
    code, out, err = await cli("status", "--node", a.address, "--cookie-file", str(cookie_file))
    table = rows(out, "NODE")
    assert table["a"][:4] == ["10", "100.0%", "running", "10"]
    assert table["b"][:3] == ["0", "draining", "-"]

    # by address, without --node: the query connects to the node it drains
    env = {"PROCESSHUB_COOKIE_FILE": str(cookie_file)}
    code, out, err = await cli("drain", b.address, env=env)
    assert code == 0, err
    assert out.splitlines() == [
        "hub 'orders' on b: already drained",
        "b stays drained (it owns no children) until it restarts",
    ]


async def test_a_refused_cookie_is_reported_at_once(
    tmp_path: Path, cookie_file: Path, nodes: list[CliNode]
) -> None:
    a = CliNode("a")
    nodes.append(a)
    await a.start("--port", "0", "--cookie-file", str(cookie_file), "--log-level", "ERROR")
    wrong = tmp_path / "wrong"
    wrong.write_text("another-cookie-0123456789\n")
    wrong.chmod(0o600)
    # a query that waited for its --timeout would run into cli()'s own 20 s bound
    code, out, err = await cli(
        "status", "--node", a.address, "--cookie-file", str(wrong), "--timeout", "300"
    )
    assert (code, out) == (1, "")
    assert err.splitlines()[-1] == (
        f"processhub status: error: the node at {a.address} refused our credentials "
        "(HTTP 401): wrong cookie (--cookie-file, PROCESSHUB_COOKIE) or --cluster label"
    )
    code, out, err = await cli("drain", "a", "--node", a.address, "--timeout", "300")
    assert code == 1
    assert err.splitlines()[-1] == (
        f"processhub drain: error: the node at {a.address} requires a cookie: pass "
        "--cookie-file or PROCESSHUB_COOKIE"
    )


async def test_a_node_takes_its_configuration_from_the_environment(
    cookie_file: Path, nodes: list[CliNode]
) -> None:
    node = CliNode("envnode")
    nodes.append(node)
    env = {
        "PROCESSHUB_HUBS": "orders,billing",
        "PROCESSHUB_COOKIE_FILE": str(cookie_file),
        "PROCESSHUB_PRESET": "local",
        "PROCESSHUB_DASHBOARD": "0",
        "PROCESSHUB_NAME": "ignored-the-flag-wins",
    }
    await node.start("--port", "0", env=env)  # CliNode passes --name envnode
    await node.wait_line(lambda s: s == "running hubs: orders, billing")
    assert not any(line.startswith("dashboard on") for line in node.lines)
    report = await status_until(
        node.address, cookie_file, lambda r: sorted(r["hubs"]) == ["billing", "orders"]
    )
    assert report["info"]["envnode"]["dashboard"] is False


@pytest.mark.parametrize(
    ("env", "args", "message"),
    [
        ({"PROCESSHUB_PORT": "abc"}, ["node"], "PROCESSHUB_PORT='abc': expected a port number"),
        ({"PROCESSHUB_SEEDS": "nowhere"}, ["node"], "PROCESSHUB_SEEDS='nowhere': expected HOST"),
        ({"PROCESSHUB_DASHBOARD": "maybe"}, ["node"], "PROCESSHUB_DASHBOARD='maybe': expected"),
        ({}, ["status"], "the following arguments are required: --node (or PROCESSHUB_NODE)"),
        ({}, ["drain", "b"], "drain 'b': give --node HOST:PORT to reach the cluster"),
        (
            {"PROCESSHUB_COOKIE": "x" * 20, "PROCESSHUB_COOKIE_FILE": "/nonexistent"},
            ["status", "--node", "127.0.0.1:9"],
            "set PROCESSHUB_COOKIE_FILE or PROCESSHUB_COOKIE, not both",
        ),
    ],
)
async def test_bad_environment_settings_exit_2_naming_the_variable(
    env: dict[str, str], args: list[str], message: str
) -> None:
    code, _, err = await cli(*args, env=env)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
