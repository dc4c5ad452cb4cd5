"""The ``processhub`` command line (also ``python -m hub``).

``processhub node`` runs a standalone cluster node hosting one or more hubs until SIGINT or
SIGTERM, then leaves gracefully. ``processhub status`` asks a running node for the cluster's
members and the children of each hub. See ``docs/cli.md``.

Exit codes: 0 success, 1 a runtime failure (cannot listen, node unreachable, incomplete
answer, shutdown timed out, an app's ``setup`` failed), 2 bad input (arguments, cookie file,
``--app`` import).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib
import inspect
import ipaddress
import json
import logging
import os
import secrets
import signal
import socket
import stat
import sys
from collections.abc import AsyncGenerator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .cluster.membership import PRESETS, Membership
from .cluster.messages import Address, MemberState, PushPull, State
from .cluster.node import Node, parse_address
from .errors import HubError, InvalidSpec
from .hub import Hub
from .pid import Pid

__all__ = ["CliError", "build_parser", "main", "read_cookie"]

logger = logging.getLogger("hub.cli")

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
_LIVE = (State.ALIVE, State.SUSPECT)


class CliError(Exception):
    """A failure reported as one line on stderr (no traceback) with exit ``code``."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


# -- argument types ----------------------------------------------------------------------------


def _address(text: str) -> Address:
    try:
        return parse_address(text.strip())
    except InvalidSpec:
        raise argparse.ArgumentTypeError(
            f"expected HOST:PORT (port 1-65535, IPv6 as [::1]:PORT), got {text!r}"
        ) from None


def _addresses(text: str) -> list[Address]:
    parts = [p for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("expected HOST:PORT[,HOST:PORT...], got nothing")
    return [_address(p) for p in parts]


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number, got {text!r}") from None
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"port must be 0-65535 (0: any free port), got {port}")
    return port


def _name(text: str) -> str:
    if not text or text != text.strip() or any(c in text for c in "\r\n\t"):
        raise argparse.ArgumentTypeError(f"expected a non-empty name without spaces, got {text!r}")
    return text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _preset(text: str) -> str:
    if text not in PRESETS:
        raise argparse.ArgumentTypeError(
            f"unknown preset {text!r} (choose from {', '.join(sorted(PRESETS))})"
        )
    return text


def _level(text: str) -> str:
    if text.upper() not in LOG_LEVELS:
        raise argparse.ArgumentTypeError(
            f"unknown log level {text!r} (choose from {', '.join(LOG_LEVELS)})"
        )
    return text.upper()


def read_cookie(path: str | os.PathLike[str]) -> str:
    """The cluster cookie from ``path``, stripped of surrounding whitespace. Raises
    :class:`CliError` (exit code 2) when the file is missing, unreadable or empty, and warns
    when other users may read it."""
    where = Path(path)
    try:
        raw = where.read_bytes()
        mode = where.stat().st_mode
    except FileNotFoundError:
        raise CliError(f"cookie file {str(where)!r} does not exist") from None
    except IsADirectoryError:
        raise CliError(f"cookie file {str(where)!r} is a directory") from None
    except OSError as exc:
        raise CliError(f"cannot read cookie file {str(where)!r}: {exc.strerror or exc}") from None
    try:
        cookie = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise CliError(f"cookie file {str(where)!r} is not UTF-8 text") from None
    if not cookie:
        raise CliError(f"cookie file {str(where)!r} is empty")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        logger.warning(
            "cookie file %s can be read by other users (mode %o); run: chmod 600 %s",
            where,
            stat.S_IMODE(mode),
            where,
        )
    return cookie


# -- the parser --------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="processhub",
        description="Run and inspect processhub cluster nodes.",
        epilog="Exit codes: 0 ok, 1 runtime failure, 2 bad input. See docs/cli.md.",
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"processhub {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    node = sub.add_parser(
        "node",
        help="run a standalone cluster node hosting one or more hubs",
        description=(
            "Run a cluster node with one Hub per --hub, all sharing the node's endpoint, until "
            "SIGINT or SIGTERM; then the hubs hand their children to the remaining nodes and "
            "the node leaves the cluster gracefully. Prints 'listening on HOST:PORT as NAME' "
            "once bound. A second SIGINT/SIGTERM aborts the graceful stop."
        ),
    )
    node.add_argument(
        "--name",
        type=_name,
        default=None,
        help="node name, unique in the cluster (default HOST:PORT)",
    )
    node.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on and advertise (default %(default)s); without a cookie only "
        "loopback is used",
    )
    node.add_argument(
        "--port", type=_port, default=0, help="port to listen on (default 0: any free port)"
    )
    node.add_argument(
        "--seeds",
        type=_addresses,
        action="append",
        default=[],
        metavar="HOST:PORT[,...]",
        help="nodes to join through (repeatable; may be down at start, the node keeps retrying)",
    )
    node.add_argument(
        "--cookie-file",
        default=None,
        metavar="PATH",
        help="file holding the cluster secret (keep it mode 0600); without it the node is "
        "unauthenticated and binds to loopback only",
    )
    node.add_argument(
        "--hub",
        dest="hubs",
        type=_name,
        action="append",
        default=[],
        metavar="HUB_ID",
        help="run a hub with this id (repeatable; none: a membership-only node, e.g. a seed)",
    )
    node.add_argument(
        "--app",
        dest="apps",
        action="append",
        default=[],
        metavar="MODULE",
        help="import this module first (its Process classes become startable); an "
        "'async def setup(hub)' in it runs for every hub after start (repeatable)",
    )
    node.add_argument(
        "--app-dir",
        default=".",
        metavar="DIR",
        help="directory put first on sys.path before importing --app modules (default: the "
        "current directory)",
    )
    node.add_argument(
        "--preset",
        type=_preset,
        default="lan",
        metavar="{" + ",".join(sorted(PRESETS)) + "}",
        help="membership timings (default %(default)s; local: fast, for tests and demos)",
    )
    node.add_argument(
        "--cluster",
        default="processhub",
        help="cluster label, part of the authentication (default %(default)s)",
    )
    node.add_argument(
        "--reconcile-interval",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how often each hub reconciles placement, besides after every topology change "
        "(default %(default)s)",
    )
    node.add_argument(
        "--shutdown-timeout",
        type=_seconds,
        default=30.0,
        metavar="SECONDS",
        help="bound on the graceful stop (hand-off and leave; default %(default)s); past it "
        "the node stops anyway and exits 1",
    )
    node.add_argument(
        "--log-level",
        type=_level,
        default="INFO",
        metavar="LEVEL",
        help="DEBUG, INFO (default), WARNING, ERROR",
    )
    node.set_defaults(func=_cmd_node)

    status = sub.add_parser(
        "status",
        help="print a running cluster's members and the children per node of each hub",
        description=(
            "Ask the node at --node for its membership view and each hub member for the "
            "children it runs. The query joins the cluster as a short-lived member named "
            "'status-<random>' hosting no hub (so it never owns children) and leaves again."
        ),
    )
    status.add_argument(
        "--node", type=_address, required=True, metavar="HOST:PORT", help="any node of the cluster"
    )
    status.add_argument(
        "--cookie-file",
        default=None,
        metavar="PATH",
        help="file holding the cluster secret (needed when the cluster uses one)",
    )
    status.add_argument(
        "--hub",
        dest="hubs",
        type=_name,
        action="append",
        default=[],
        metavar="HUB_ID",
        help="report only this hub (repeatable; default: every hub a live member hosts)",
    )
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.add_argument(
        "--children", action="store_true", help="list every child with its pid (default: a sample)"
    )
    status.add_argument(
        "--timeout",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="bound on the whole query (default %(default)s)",
    )
    status.add_argument(
        "--cluster",
        default="processhub",
        help="cluster label, part of the authentication (default %(default)s)",
    )
    status.add_argument(
        "--bind",
        default=None,
        metavar="HOST",
        help="local address of the query's own endpoint (default: the interface toward --node)",
    )
    status.add_argument(
        "--log-level",
        type=_level,
        default="ERROR",
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR (default)",
    )
    status.set_defaults(func=_cmd_status)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``processhub`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except BrokenPipeError:  # e.g. `processhub status --json | head`
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except CliError as exc:
        print(f"processhub {args.command}: error: {exc}", file=sys.stderr, flush=True)
        return exc.code
    except KeyboardInterrupt:
        print(f"processhub {args.command}: interrupted", file=sys.stderr, flush=True)
        return 130


# -- processhub node ---------------------------------------------------------------------------


@dataclass
class _App:
    module: ModuleType
    setup: Callable[[Hub], Any] | None
    running: list[AsyncGenerator[Any, None]] = field(default_factory=list)


def _import_apps(names: Sequence[str], app_dir: str) -> list[_App]:
    if names:
        where = str(Path(app_dir).resolve())
        if where not in sys.path:
            sys.path.insert(0, where)
    apps = []
    for name in names:
        try:
            module = importlib.import_module(name)
        except Exception as exc:
            logger.debug("importing %s failed", name, exc_info=True)
            raise CliError(f"cannot import --app {name!r}: {type(exc).__name__}: {exc}") from None
        setup = getattr(module, "setup", None)
        if setup is not None and not callable(setup):
            raise CliError(f"--app {name!r}: 'setup' must be a function taking the hub")
        apps.append(_App(module, setup))
    return apps


async def _run_setup(app: _App, hub: Hub) -> None:
    setup = app.setup
    if setup is None:
        return
    if inspect.isasyncgenfunction(setup):
        gen: AsyncGenerator[Any, None] = setup(hub)
        try:
            await anext(gen)
        except StopAsyncIteration:
            raise HubError(f"{app.module.__name__}.setup must yield once") from None
        app.running.append(gen)
        return
    result = setup(hub)
    if inspect.isawaitable(result):
        await result


async def _run_teardown(app: _App) -> None:
    while app.running:
        gen = app.running.pop()
        try:
            await anext(gen)
        except StopAsyncIteration:
            continue
        except Exception:
            logger.exception("teardown of %s failed", app.module.__name__)
            continue
        logger.warning("%s.setup yielded more than once; closing it", app.module.__name__)
        await gen.aclose()


def _cmd_node(args: argparse.Namespace) -> int:
    cookie = read_cookie(args.cookie_file) if args.cookie_file is not None else None
    hubs: list[str] = args.hubs
    twice = sorted({h for h in hubs if hubs.count(h) > 1})
    if twice:
        raise CliError(f"--hub given twice for {', '.join(twice)}")
    apps = _import_apps(args.apps, args.app_dir)
    try:
        return asyncio.run(_serve(args, cookie, apps))
    except asyncio.CancelledError:
        raise CliError("graceful stop aborted by a second signal", 1) from None


async def _serve(args: argparse.Namespace, cookie: str | None, apps: list[_App]) -> int:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    main_task = asyncio.current_task()
    signals: list[str] = []

    def on_signal(sig: signal.Signals) -> None:
        signals.append(sig.name)
        if len(signals) == 1:
            logger.info("%s received: stopping gracefully (again to abort)", sig.name)
            stop.set()
        elif main_task is not None:
            logger.error("%s received again: aborting the graceful stop", sig.name)
            main_task.cancel()

    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):  # not on every platform
            loop.add_signal_handler(sig, on_signal, sig)
            installed.append(sig)
    seeds = [address for group in args.seeds for address in group]
    if args.host in ("0.0.0.0", "::", "[::]", ""):
        raise CliError(
            f"--host {args.host!r} is a wildcard; give the address other nodes reach this one "
            "at (the node listens on it and advertises it)"
        )
    try:
        node = Node(
            args.name,
            host=args.host,
            port=args.port,
            seeds=seeds,
            cookie=cookie,
            cluster=args.cluster,
            preset=args.preset,
        )
    except (InvalidSpec, ValueError) as exc:
        raise CliError(str(exc)) from None
    try:
        await node.start()
    except OSError as exc:
        await node.stop(leave=False)
        raise CliError(
            f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}", 1
        ) from None
    print(f"listening on {node.address.host}:{node.address.port} as {node.name}", flush=True)
    hubs: list[Hub] = []
    code = 0
    try:
        for hub_id in args.hubs:
            hub = Hub(hub_id, endpoint=node, reconcile_interval=args.reconcile_interval)
            await hub.start()
            hubs.append(hub)
            for app in apps:
                await _run_setup(app, hub)
        print(f"running hubs: {', '.join(args.hubs) or '(none)'}", flush=True)
        await stop.wait()
    except asyncio.CancelledError:
        raise
    except Exception:
        logger.exception("starting the node's hubs failed")
        code = 1
    try:
        async with asyncio.timeout(args.shutdown_timeout):
            await _shutdown(apps, hubs, node)
    except TimeoutError:
        logger.error(
            "graceful stop took longer than %ss; stopping without hand-off", args.shutdown_timeout
        )
        await node.stop(leave=True, timeout=1.0)
        code = 1
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    print(f"stopped {node.name}", flush=True)
    return code


async def _shutdown(apps: list[_App], hubs: list[Hub], node: Node) -> None:
    for app in reversed(apps):
        await _run_teardown(app)
    # Hubs first: each hands its children to the remaining members, then the node leaves.
    results = await asyncio.gather(*(h.stop("node shutdown") for h in hubs), return_exceptions=True)
    for hub, result in zip(hubs, results, strict=True):
        if isinstance(result, BaseException):
            logger.error("hub %s did not stop cleanly: %r", hub.hub_id, result)
    await node.stop(leave=True)


# -- processhub status -------------------------------------------------------------------------


class _Refusals(logging.Handler):
    """Keeps what the query's node logged about failed sends, to explain a silent seed."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if len(self.messages) < 50:
            self.messages.append(record.getMessage())


def _local_host_for(target: Address) -> str:
    """The local address packets to ``target`` leave from (loopback for a loopback target)."""
    try:
        if ipaddress.ip_address(target.host).is_loopback:
            return target.host
    except ValueError:
        if target.host == "localhost":
            return "127.0.0.1"
    family = socket.AF_INET6 if ":" in target.host else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_DGRAM) as probe:
            probe.connect((target.host, target.port))  # UDP: no packet is sent
            return str(probe.getsockname()[0])
    except OSError as exc:
        raise CliError(f"cannot route to {target.host}: {exc.strerror or exc}", 1) from None


def _cmd_status(args: argparse.Namespace) -> int:
    cookie = read_cookie(args.cookie_file) if args.cookie_file is not None else None
    report = asyncio.run(_query(args, cookie))
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        print(_render(report, every_child=args.children))
    missing = [h for h in report["hubs"].values() if h["errors"]]
    absent = [
        h for h in args.hubs if not report["hubs"][h]["nodes"] and not report["hubs"][h]["errors"]
    ]
    for hub_id in absent:
        print(f"processhub status: no live member hosts hub {hub_id!r}", file=sys.stderr)
    return 1 if missing or absent else 0


async def _query(args: argparse.Namespace, cookie: str | None) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.timeout
    target: Address = args.node
    host = args.bind or _local_host_for(target)
    try:
        node = Node(
            f"status-{secrets.token_hex(4)}",
            host=host,
            port=0,
            seeds=[target],
            cookie=cookie,
            cluster=args.cluster,
            preset="lan",  # conservative probing: the query must not spread false suspicions
        )
    except (InvalidSpec, ValueError) as exc:
        raise CliError(str(exc)) from None
    refusals = _Refusals()
    node_log = logging.getLogger("hub.cluster.node")
    old_level = node_log.level
    node_log.addHandler(refusals)
    if not node_log.isEnabledFor(logging.DEBUG):
        node_log.setLevel(logging.DEBUG)
        for handler in logging.getLogger().handlers:
            if handler.level < logging.getLevelName(args.log_level):
                handler.setLevel(args.log_level)
    try:
        try:
            await node.start()
        except OSError as exc:
            raise CliError(
                f"cannot open a local endpoint on {host}: {exc.strerror or exc}", 1
            ) from None
        answer = _capture_push_pull(node.membership)
        try:
            async with asyncio.timeout_at(deadline):
                sender, members = await answer
        except TimeoutError:
            raise CliError(_silence(target, args.timeout, refusals.messages, cookie), 1) from None
        seed = sender.name
        listed: list[dict[str, Any]] = [
            {
                "name": m.node.name,
                "boot": m.node.boot_id,
                "state": m.state.name,
                "incarnation": m.incarnation,
                "address": f"{m.address.host}:{m.address.port}",
                "hubs": sorted(str(h) for h in m.meta.get("hubs", ()) or ()),
            }
            for m in sorted(members, key=lambda m: m.node.name)
            if m.node.name != node.name
        ]
        live = [m for m in listed if m["state"] in ("ALIVE", "SUSPECT")]
        wanted = list(args.hubs) or sorted({h for m in live for h in m["hubs"]})
        hubs = {
            hub_id: await _hub_view(
                node, hub_id, [m["name"] for m in live if hub_id in m["hubs"]], deadline
            )
            for hub_id in wanted
        }
        return {
            "node": f"{target.host}:{target.port}",
            "seed": seed,
            "members": listed,
            "hubs": hubs,
        }
    finally:
        await node.stop(leave=True, timeout=1.0)
        node_log.removeHandler(refusals)
        node_log.setLevel(old_level)


def _capture_push_pull(machine: Membership) -> asyncio.Future[tuple[Any, tuple[MemberState, ...]]]:
    """A future for the first push-pull answer the membership receives: the seed's full view,
    states as the seed holds them (merging them locally would turn a DEAD into a suspicion)."""
    loop = asyncio.get_running_loop()
    answer: asyncio.Future[tuple[Any, tuple[MemberState, ...]]] = loop.create_future()
    original = machine.receive

    def receive(sender: Any, address: Address, message: Any, now: float) -> Any:
        if isinstance(message, PushPull) and message.reply and not answer.done():
            answer.set_result((sender, message.members))
        return original(sender, address, message, now)

    setattr(machine, "receive", receive)  # noqa: B010 (an instance attribute, not a method)
    return answer


def _silence(target: Address, timeout: float, logged: list[str], cookie: str | None) -> str:
    where = f"{target.host}:{target.port}"
    text = " | ".join(logged)
    if "401" in text or "refused a reply" in text:
        why = (
            "it refused our credentials: wrong --cookie-file or --cluster"
            if cookie is not None
            else "it requires a cookie: pass --cookie-file"
        )
    elif "Connect" in text or "refused" in text.lower():
        why = "connection refused (is a node listening there?)"
    else:
        why = "no answer (wrong address, a firewall, or a node without a cookie on another host)"
    return f"cannot reach a node at {where} within {timeout:g}s: {why}"


async def _hub_view(node: Node, hub_id: str, members: list[str], deadline: float) -> dict[str, Any]:
    async def snapshot(name: str) -> Any:
        remaining = max(0.05, deadline - asyncio.get_running_loop().time())
        return await node.links.request(name, hub_id, "get_snapshot", None, timeout=remaining)

    answers = await asyncio.gather(*(snapshot(n) for n in members), return_exceptions=True)
    nodes: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for name, answer in zip(members, answers, strict=True):
        if isinstance(answer, BaseException):
            if not isinstance(answer, Exception):
                raise answer
            errors[name] = f"{type(answer).__name__}: {answer}"
            continue
        try:
            nodes[name] = _parse_snapshot(answer)
        except (ValueError, TypeError, KeyError, InvalidSpec) as exc:
            errors[name] = f"malformed snapshot: {exc}"
    return {"nodes": nodes, "errors": errors}


def _parse_snapshot(data: Any) -> dict[str, Any]:
    if not isinstance(data, list) or len(data) != 4 or not isinstance(data[3], list):
        raise ValueError("expected [node, boot_id, version, entries]")
    _, boot, version, entries = data
    children = []
    for entry in entries:
        spec, pid = entry[0], Pid.from_wire(entry[1])
        children.append(
            {"id": str(spec["id"]), "start": str(spec.get("start", "")), "pid": str(pid)}
        )
    children.sort(key=lambda c: c["id"])
    return {"boot": str(boot), "version": int(version), "children": children}


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]


def _render(report: dict[str, Any], *, every_child: bool) -> str:
    members = report["members"]
    shown = [m for m in members if not (m["name"].startswith("status-") and m["state"] == "LEFT")]
    hidden = len(members) - len(shown)
    count = len(shown)
    lines = [
        f"cluster as {report['seed']} ({report['node']}) sees it: "
        f"{count} member{'s' * (count != 1)}"
    ]
    rows = [["NAME", "STATE", "INCARNATION", "ADDRESS", "HUBS"]]
    rows += [
        [m["name"], m["state"], str(m["incarnation"]), m["address"], ",".join(m["hubs"]) or "-"]
        for m in shown
    ]
    lines += _table(rows)
    if hidden:
        lines.append(f"  (and {hidden} earlier status queries that left)")
    for hub_id, view in report["hubs"].items():
        total = sum(len(n["children"]) for n in view["nodes"].values())
        lines.append("")
        count = len(view["nodes"])
        if not count and not view["errors"]:
            lines.append(f"hub {hub_id!r}: no live member hosts it")
            continue
        lines.append(f"hub {hub_id!r}: {total} children on {count} node{'s' * (count != 1)}")
        rows = [["NODE", "CHILDREN", "VERSION", "SAMPLE" if not every_child else ""]]
        for name, part in sorted(view["nodes"].items()):
            ids = [c["id"] for c in part["children"]]
            sample = ", ".join(ids[:5]) + (f", ... (+{len(ids) - 5})" if len(ids) > 5 else "")
            rows.append([name, str(len(ids)), str(part["version"]), "" if every_child else sample])
        lines += _table(rows)
        for name, error in sorted(view["errors"].items()):
            lines.append(f"  {name}: no answer: {error}")
        if every_child:
            for name, part in sorted(view["nodes"].items()):
                lines.append(f"  children on {name}:")
                lines += [f"    {c['id']}  {c['pid']}  {c['start']}" for c in part["children"]]
    return "\n".join(lines)
