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
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from .board import CONTROL
from .cluster.links import RemoteError
from .cluster.membership import PRESETS, Membership
from .cluster.messages import Address, MemberState, PushPull, State
from .cluster.node import Node, parse_address
from .errors import HubError, InvalidSpec
from .hub import Hub
from .pid import Pid
from .tuning import tune_gc

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


# -- configuration from the environment --------------------------------------------------------

_FALSE = ("0", "false", "no", "off")


def _comma(convert: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        return [convert(part.strip()) for part in text.split(",") if part.strip()]

    return parse


def _flag(text: str) -> bool:
    value = text.strip().lower()
    if value in _FALSE:
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    raise argparse.ArgumentTypeError(f"expected 1/0, true/false, yes/no or on/off, got {text!r}")


#: (attribute, environment variable, conversion, default) for the options an environment
#: variable can set; a command-line flag always wins.
_ENV: tuple[tuple[str, str, Callable[[str], Any], Any], ...] = (
    ("name", "PROCESSHUB_NAME", _name, None),
    ("host", "PROCESSHUB_HOST", str.strip, "127.0.0.1"),
    ("port", "PROCESSHUB_PORT", _port, 0),
    ("seeds", "PROCESSHUB_SEEDS", lambda text: [_addresses(text)], []),
    ("hubs", "PROCESSHUB_HUBS", _comma(_name), []),
    ("apps", "PROCESSHUB_APPS", _comma(str), []),
    ("preset", "PROCESSHUB_PRESET", _preset, "lan"),
    ("cluster", "PROCESSHUB_CLUSTER", str.strip, "processhub"),
    ("dashboard", "PROCESSHUB_DASHBOARD", _flag, True),
    ("timeout", "PROCESSHUB_TIMEOUT", _seconds, None),
    ("log_level", "PROCESSHUB_LOG_LEVEL", _level, None),
)


def apply_env(args: argparse.Namespace, env: Mapping[str, str]) -> None:
    """Fill the options not given on the command line from ``PROCESSHUB_*`` variables, else
    from their defaults. Raises :class:`CliError` (exit 2) naming a malformed variable."""
    for attr, var, convert, default in _ENV:
        if not hasattr(args, attr) or getattr(args, attr) is not None:
            continue
        text = env.get(var, "").strip()
        value = default
        if text:
            try:
                value = convert(text)
            except (argparse.ArgumentTypeError, ValueError) as exc:
                raise CliError(f"{var}={text!r}: {exc}") from None
        setattr(args, attr, value)
    if getattr(args, "timeout", 0) is None:
        args.timeout = args.default_timeout
    if args.log_level is None:
        args.log_level = args.default_log_level
    args.cookie = None
    if args.cookie_file is None:
        file, secret = env.get("PROCESSHUB_COOKIE_FILE", ""), env.get("PROCESSHUB_COOKIE", "")
        if file and secret:
            raise CliError("set PROCESSHUB_COOKIE_FILE or PROCESSHUB_COOKIE, not both")
        if file:
            args.cookie_file = file
        elif secret.strip():
            args.cookie = secret.strip()
    if hasattr(args, "node") and args.command != "node" and args.node is None:
        text = env.get("PROCESSHUB_NODE", "").strip()
        if not text:
            text = env.get("PROCESSHUB_SEEDS", "").split(",")[0].strip()
        if text:
            try:
                args.node = _address(text)
            except argparse.ArgumentTypeError as exc:
                raise CliError(f"PROCESSHUB_NODE: {exc}") from None
        elif args.command == "drain":
            try:
                args.node = _address(args.target)
            except argparse.ArgumentTypeError:
                raise CliError(
                    f"drain {args.target!r}: give --node HOST:PORT to reach the cluster "
                    "(or name the node by its HOST:PORT)"
                ) from None
        else:
            raise CliError("the following arguments are required: --node (or PROCESSHUB_NODE)")


def _cookie(args: argparse.Namespace) -> str | None:
    if args.cookie_file is not None:
        return read_cookie(args.cookie_file)
    cookie: str | None = args.cookie
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
        help="node name, unique in the cluster (env PROCESSHUB_NAME; default HOST:PORT)",
    )
    node.add_argument(
        "--host",
        default=None,
        help="address to listen on and advertise (env PROCESSHUB_HOST; default 127.0.0.1); "
        "without a cookie only loopback is used",
    )
    node.add_argument(
        "--port",
        type=_port,
        default=None,
        help="port to listen on (env PROCESSHUB_PORT; default 0: any free port)",
    )
    node.add_argument(
        "--seeds",
        type=_addresses,
        action="append",
        default=None,
        metavar="HOST:PORT[,...]",
        help="nodes to join through (repeatable; env PROCESSHUB_SEEDS; may be down at start, "
        "the node keeps retrying)",
    )
    node.add_argument(
        "--cookie-file",
        default=None,
        metavar="PATH",
        help="file holding the cluster secret (keep it mode 0600; env PROCESSHUB_COOKIE_FILE, "
        "or the secret itself in PROCESSHUB_COOKIE); without one the node is "
        "unauthenticated and binds to loopback only",
    )
    node.add_argument(
        "--hub",
        dest="hubs",
        type=_name,
        action="append",
        default=None,
        metavar="HUB_ID",
        help="run a hub with this id (repeatable; env PROCESSHUB_HUBS, comma-separated; none: "
        "a membership-only node, e.g. a seed)",
    )
    node.add_argument(
        "--app",
        dest="apps",
        action="append",
        default=None,
        metavar="MODULE",
        help="import this module first (its Process classes become startable); an "
        "'async def setup(hub)' in it runs for every hub after start (repeatable; env "
        "PROCESSHUB_APPS, comma-separated)",
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
        default=None,
        metavar="{" + ",".join(sorted(PRESETS)) + "}",
        help="membership timings (env PROCESSHUB_PRESET; default lan; local: fast, for tests "
        "and demos)",
    )
    node.add_argument(
        "--cluster",
        default=None,
        help="cluster label, part of the authentication (env PROCESSHUB_CLUSTER; default "
        "processhub)",
    )
    node.add_argument(
        "--no-dashboard",
        dest="dashboard",
        action="store_false",
        default=None,
        help="do not serve the read-only dashboard routes (env PROCESSHUB_DASHBOARD=0)",
    )
    node.add_argument(
        "--reconcile-interval",
        type=_seconds,
        default=5.0,
        metavar="SECONDS",
        help="how often each hub plans the next 10,000 children again (a rolling safety net; "
        "every change is planned at once anyway; default %(default)s)",
    )
    node.add_argument(
        "--gc",
        choices=("tuned", "default"),
        default="tuned",
        help="garbage collector thresholds: tuned for a large heap (hub.tune_gc; the default) "
        "or Python's own",
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
        default=None,
        metavar="LEVEL",
        help="DEBUG, INFO (default), WARNING, ERROR (env PROCESSHUB_LOG_LEVEL)",
    )
    node.set_defaults(func=_cmd_node, default_log_level="INFO")

    status = sub.add_parser(
        "status",
        help="print a running cluster's members, versions, ring shares and children per node",
        description=(
            "Ask the node at --node for its membership view and each live member for its "
            "summary (version, ring shares, children per state, buried children, hook "
            "statistics, recent errors) and each hub member for the children it runs. The "
            "query joins the cluster as a short-lived member named 'status-<random>' hosting "
            "no hub (so it never owns children) and leaves again."
        ),
    )
    _query_options(status)
    status.add_argument("--json", action="store_true", help="print one JSON document")
    status.add_argument(
        "--children", action="store_true", help="list every child with its pid (default: a sample)"
    )
    status.set_defaults(func=_cmd_status)

    kids = sub.add_parser(
        "children",
        help="list a running cluster's children (filter by hub, tag or node)",
        description=(
            "List every child of each hub (or the --hub ones) as its node reports it: id, "
            "node, pid, start reference and tags (a child's 'tag'/'tags' metadata). Joins the "
            "cluster briefly like 'status'."
        ),
    )
    _query_options(kids)
    kids.add_argument(
        "--tag", default=None, help="only children with this tag (the 'tag' or 'tags' metadata)"
    )
    kids.add_argument(
        "--on",
        dest="on",
        type=_name,
        action="append",
        default=[],
        metavar="NODE",
        help="only children running on this node (repeatable)",
    )
    kids.add_argument("--json", action="store_true", help="print one JSON document")
    kids.set_defaults(func=_cmd_children)

    drain = sub.add_parser(
        "drain",
        help="take a node out of placement and move its children to the other nodes",
        description=(
            "Drain NODE (a member name, or its HOST:PORT): each of its hubs (or the --hub "
            "ones) stops taking children and hands the ones it runs to their owners among the "
            "other nodes. The node stays drained until it restarts. Without --node the query "
            "connects to NODE itself (then NODE must be HOST:PORT)."
        ),
    )
    drain.add_argument("target", metavar="NODE", help="the member to drain: name or HOST:PORT")
    _query_options(drain, node_required=False, timeout=60.0)
    drain.set_defaults(func=_cmd_drain)
    return parser


def _query_options(
    parser: argparse.ArgumentParser, *, node_required: bool = True, timeout: float = 5.0
) -> None:
    """The options of the commands that query a running cluster."""
    parser.add_argument(
        "--node",
        type=_address,
        default=None,
        metavar="HOST:PORT",
        help="any node of the cluster (env PROCESSHUB_NODE, else the first of "
        "PROCESSHUB_SEEDS)" + ("" if node_required else "; default: NODE"),
    )
    parser.add_argument(
        "--cookie-file",
        default=None,
        metavar="PATH",
        help="file holding the cluster secret, needed when the cluster uses one (env "
        "PROCESSHUB_COOKIE_FILE, or the secret itself in PROCESSHUB_COOKIE)",
    )
    parser.add_argument(
        "--hub",
        dest="hubs",
        type=_name,
        action="append",
        default=None,
        metavar="HUB_ID",
        help="only this hub (repeatable; env PROCESSHUB_HUBS, comma-separated; default: "
        "every hub a live member hosts)",
    )
    parser.add_argument(
        "--timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help=f"bound on the whole query (env PROCESSHUB_TIMEOUT; default {timeout:g})",
    )
    parser.add_argument(
        "--cluster",
        default=None,
        help="cluster label, part of the authentication (env PROCESSHUB_CLUSTER; default "
        "processhub)",
    )
    parser.add_argument(
        "--bind",
        default=None,
        metavar="HOST",
        help="local address of the query's own endpoint (default: the interface toward --node)",
    )
    parser.add_argument(
        "--log-level",
        type=_level,
        default=None,
        metavar="LEVEL",
        help="DEBUG, INFO, WARNING, ERROR (env PROCESSHUB_LOG_LEVEL; default ERROR)",
    )
    parser.set_defaults(default_timeout=timeout, default_log_level="ERROR")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``processhub`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        apply_env(args, os.environ)
    except CliError as exc:
        print(f"processhub {args.command}: error: {exc}", file=sys.stderr, flush=True)
        return exc.code
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
    cookie = _cookie(args)
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
    if args.gc == "tuned":
        tune_gc()
    try:
        node = Node(
            args.name,
            host=args.host,
            port=args.port,
            seeds=seeds,
            cookie=cookie,
            cluster=args.cluster,
            preset=args.preset,
            dashboard=args.dashboard,
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
    if args.dashboard:
        where = f"[{node.address.host}]" if ":" in node.address.host else node.address.host
        print(f"dashboard on http://{where}:{node.address.port}/dashboard", flush=True)
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
    """Keeps what the query's node logged about failed sends, to explain a silent seed, and
    resolves ``refused`` with the first refusal of our credentials (so the query fails at
    once instead of waiting its whole timeout)."""

    def __init__(self, refused: asyncio.Future[str]) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self.refused = refused

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if len(self.messages) < 50:
            self.messages.append(message)
        if ("HTTP 401" in message or "refused a reply" in message) and not self.refused.done():
            self.refused.set_result(message)


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
    cookie = _cookie(args)
    report = asyncio.run(_status(args, cookie))
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


@dataclass
class _Session:
    """A query's short-lived member: its node, the seed's name and view, and the deadline."""

    node: Node
    target: Address
    seed: str
    members: list[dict[str, Any]]
    deadline: float

    @property
    def live(self) -> list[dict[str, Any]]:
        return [m for m in self.members if m["state"] in ("ALIVE", "SUSPECT")]

    def remaining(self) -> float:
        return max(0.05, self.deadline - asyncio.get_running_loop().time())

    def wanted_hubs(self, hubs: Sequence[str]) -> list[str]:
        return list(hubs) or sorted({h for m in self.live for h in m["hubs"]})

    def hosts(self, hub_id: str) -> list[str]:
        return [m["name"] for m in self.live if hub_id in m["hubs"]]


@contextlib.asynccontextmanager
async def _session(args: argparse.Namespace, cookie: str | None) -> AsyncIterator[_Session]:
    """Join the cluster through ``args.node`` as ``status-<random>`` (hosting no hub) until
    the seed sent its view; fail at once when the seed refuses our credentials."""
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
            dashboard=False,
        )
    except (InvalidSpec, ValueError) as exc:
        raise CliError(str(exc)) from None
    refused: asyncio.Future[str] = loop.create_future()
    refusals = _Refusals(refused)
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
                await asyncio.wait((answer, refused), return_when=asyncio.FIRST_COMPLETED)
        except TimeoutError:
            raise CliError(_silence(target, args.timeout, refusals.messages, cookie), 1) from None
        if not answer.done():
            raise CliError(_refused(target, refused.result(), cookie), 1)
        sender, members = answer.result()
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
        yield _Session(node, target, sender.name, listed, deadline)
    finally:
        answer_task = refused
        if not answer_task.done():
            answer_task.cancel()
        await node.stop(leave=True, timeout=1.0)
        node_log.removeHandler(refusals)
        node_log.setLevel(old_level)


def _refused(target: Address, message: str, cookie: str | None) -> str:
    where = f"{target.host}:{target.port}"
    if "refused a reply" in message:
        return (
            f"the node at {where} answered without valid credentials: it runs without a "
            "cookie or with another one (check --cookie-file and --cluster)"
        )
    if cookie is None:
        return f"the node at {where} requires a cookie: pass --cookie-file or PROCESSHUB_COOKIE"
    return (
        f"the node at {where} refused our credentials (HTTP 401): wrong cookie "
        "(--cookie-file, PROCESSHUB_COOKIE) or --cluster label"
    )


async def _status(args: argparse.Namespace, cookie: str | None) -> dict[str, Any]:
    async with _session(args, cookie) as session:
        node = session.node
        hubs = {
            hub_id: await _hub_view(node, hub_id, session.hosts(hub_id), session.deadline)
            for hub_id in session.wanted_hubs(args.hubs)
        }
        infos = await _infos(session, [m["name"] for m in session.live])
        return {
            "node": f"{session.target.host}:{session.target.port}",
            "seed": session.seed,
            "members": session.members,
            "hubs": hubs,
            "info": infos,
        }


async def _infos(session: _Session, names: list[str]) -> dict[str, Any]:
    """Each member's control-channel summary (see :func:`hub.board.node_info`), or its error."""
    names = [n for n in names if not n.startswith("status-")]

    async def ask(name: str) -> Any:
        try:
            info = await session.node.links.request(
                name, CONTROL, "info", None, timeout=session.remaining()
            )
        except Exception as exc:
            return {"error": f"{type(exc).__name__}: {exc}"}
        return info if isinstance(info, dict) else {"error": "malformed answer"}

    answers = await asyncio.gather(*(ask(n) for n in names))
    return dict(zip(names, answers, strict=True))


# -- processhub children -----------------------------------------------------------------------


def _cmd_children(args: argparse.Namespace) -> int:
    cookie = _cookie(args)
    report = asyncio.run(_children(args, cookie))
    rows = report["children"]
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        lines = [f"{len(rows)} child{'ren' * (len(rows) != 1)}" + _filters(args)]
        if rows:
            table = [["HUB", "ID", "NODE", "PID", "START", "TAGS"]]
            table += [
                [c["hub"], c["id"], c["node"], c["pid"], c["start"], ",".join(c["tags"]) or "-"]
                for c in rows
            ]
            lines += _table(table)
        for hub_id, errors in sorted(report["errors"].items()):
            for name, error in sorted(errors.items()):
                lines.append(f"  hub {hub_id!r} on {name}: no answer: {error}")
        print("\n".join(lines))
    return 1 if report["errors"] else 0


def _filters(args: argparse.Namespace) -> str:
    parts = []
    if args.hubs:
        parts.append("hub " + ", ".join(args.hubs))
    if args.tag is not None:
        parts.append(f"tag {args.tag!r}")
    if args.on:
        parts.append("on " + ", ".join(args.on))
    return f" ({'; '.join(parts)})" if parts else ""


async def _children(args: argparse.Namespace, cookie: str | None) -> dict[str, Any]:
    async with _session(args, cookie) as session:
        rows: list[dict[str, Any]] = []
        errors: dict[str, dict[str, str]] = {}
        for hub_id in session.wanted_hubs(args.hubs):
            hosts = [n for n in session.hosts(hub_id) if not args.on or n in args.on]
            view = await _hub_view(session.node, hub_id, hosts, session.deadline)
            if view["errors"]:
                errors[hub_id] = view["errors"]
            for name, part in view["nodes"].items():
                for child in part["children"]:
                    if args.tag is not None and args.tag not in child["tags"]:
                        continue
                    rows.append({"hub": hub_id, "node": name, **child})
        rows.sort(key=lambda c: (c["hub"], c["id"], c["node"]))
        return {"children": rows, "errors": errors}


# -- processhub drain --------------------------------------------------------------------------


def _cmd_drain(args: argparse.Namespace) -> int:
    cookie = _cookie(args)
    name, result = asyncio.run(_drain(args, cookie))
    failed = False
    if not result:
        print(f"{name} runs no hub: nothing to drain")
    for hub_id, outcome in sorted(result.items()):
        moved, errors = outcome["moved"], outcome["errors"]
        if outcome.get("already"):
            print(f"hub {hub_id!r} on {name}: already drained")
            continue
        print(
            f"hub {hub_id!r} on {name}: drained, {len(moved)} "
            f"child{'ren' * (len(moved) != 1)} moved off, {len(errors)} still there"
        )
        for cid, error in errors:
            print(f"  {cid}: {error}")
        failed = failed or bool(errors)
    if result:
        print(f"{name} stays drained (it owns no children) until it restarts")
    return 1 if failed else 0


async def _drain(args: argparse.Namespace, cookie: str | None) -> tuple[str, dict[str, Any]]:
    async with _session(args, cookie) as session:
        target = args.target
        by_address = {m["address"]: m for m in session.members}
        by_name = {m["name"]: m for m in session.members}
        member = by_name.get(target) or by_address.get(target)
        if member is None:
            raise CliError(f"no member named or at {target!r} in the cluster")
        if member["state"] not in ("ALIVE", "SUSPECT"):
            raise CliError(f"{member['name']} is {member['state']}: nothing to drain", 1)
        try:
            result = await session.node.links.request(
                member["name"],
                CONTROL,
                "drain",
                {"hubs": list(args.hubs)},
                timeout=session.remaining(),
            )
        except RemoteError as exc:
            raise CliError(f"{member['name']} refused to drain: {exc.message}", 1) from None
        except HubError as exc:
            raise CliError(f"draining {member['name']} failed: {exc}", 1) from None
        return member["name"], dict(result)


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
    children: list[dict[str, Any]] = []
    for entry in entries:
        spec, pid = entry[0], Pid.from_wire(entry[1])
        meta = entry[2] if len(entry) > 2 and isinstance(entry[2], dict) else {}
        children.append(
            {
                "id": str(spec["id"]),
                "start": str(spec.get("start", "")),
                "pid": str(pid),
                "tags": _tags_of(meta, spec.get("metadata") or {}),
            }
        )
    children.sort(key=lambda c: c["id"])
    return {"boot": str(boot), "version": int(version), "children": children}


def _tags_of(*metas: Any) -> list[str]:
    found: set[str] = set()
    for meta in metas:
        if not isinstance(meta, dict):
            continue
        tag = meta.get("tag")
        if isinstance(tag, str | int) and not isinstance(tag, bool):
            found.add(str(tag))
        tags = meta.get("tags")
        if isinstance(tags, list | tuple):
            found.update(str(t) for t in tags if isinstance(t, str | int))
    return sorted(found)


def _table(rows: list[list[str]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return [
        indent + "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in rows
    ]


def _render(report: dict[str, Any], *, every_child: bool) -> str:
    members = report["members"]
    infos: dict[str, Any] = report.get("info", {})
    shown = [m for m in members if not (m["name"].startswith("status-") and m["state"] == "LEFT")]
    hidden = len(members) - len(shown)
    count = len(shown)
    lines = [
        f"cluster as {report['seed']} ({report['node']}) sees it: "
        f"{count} member{'s' * (count != 1)}"
    ]
    rows = [["NAME", "STATE", "INCARNATION", "ADDRESS", "HUBS", "PROCESSHUB", "PYTHON"]]
    for m in shown:
        info = infos.get(m["name"], {})
        rows.append(
            [
                m["name"],
                m["state"],
                str(m["incarnation"]),
                m["address"],
                ",".join(m["hubs"]) or "-",
                str(info.get("version", "-")),
                str(info.get("python", "-")),
            ]
        )
    lines += _table(rows)
    if hidden:
        lines.append(f"  (and {hidden} earlier status queries that left)")
    for name, info in sorted(infos.items()):
        if "error" in info:
            lines.append(f"  {name}: no summary: {info['error']}")
    seed_info = infos.get(report["seed"], {})
    for hub_id, view in report["hubs"].items():
        lines.append("")
        lines += _render_hub(hub_id, view, infos, seed_info, every_child)
    errors = _recent_errors(infos)
    if errors:
        lines.append("")
        lines.append("recent errors (newest last):")
        lines += errors
    return "\n".join(lines)


def _render_hub(
    hub_id: str,
    view: dict[str, Any],
    infos: dict[str, Any],
    seed_info: dict[str, Any],
    every_child: bool,
) -> list[str]:
    total = sum(len(n["children"]) for n in view["nodes"].values())
    count = len(view["nodes"])
    if not count and not view["errors"]:
        return [f"hub {hub_id!r}: no live member hosts it"]
    lines = [f"hub {hub_id!r}: {total} children on {count} node{'s' * (count != 1)}"]
    ring: dict[str, float] = seed_info.get("hubs", {}).get(hub_id, {}).get("ring") or next(
        (i["hubs"][hub_id]["ring"] for i in infos.values() if hub_id in i.get("hubs", {})), {}
    )
    rows = [["NODE", "CHILDREN", "RING", "STATES", "VERSION", "SAMPLE" if not every_child else ""]]
    for name, part in sorted(view["nodes"].items()):
        ids = [c["id"] for c in part["children"]]
        sample = ", ".join(ids[:5]) + (f", ... (+{len(ids) - 5})" if len(ids) > 5 else "")
        states = infos.get(name, {}).get("hubs", {}).get(hub_id, {}).get("states")
        drains = name in seed_info.get("hubs", {}).get(hub_id, {}).get("draining", ())
        share = f"{100 * ring[name]:.1f}%" if name in ring else "-"
        rows.append(
            [
                name,
                str(len(ids)),
                "draining" if drains else share,
                ", ".join(f"{k} {v}" for k, v in states.items()) or "-"
                if states is not None
                else "?",
                str(part["version"]),
                "" if every_child else sample,
            ]
        )
    lines += _table(rows)
    for name, error in sorted(view["errors"].items()):
        lines.append(f"  {name}: no answer: {error}")
    hub_infos = {n: i["hubs"][hub_id] for n, i in infos.items() if hub_id in i.get("hubs", {})}
    buried: dict[str, dict[str, Any]] = {}
    for info in hub_infos.values():
        for b in info["buried"]:
            if b["id"] not in buried or b["node"]:
                buried[b["id"]] = b
    if not buried:
        lines.append("  buried: none")
    for b in sorted(buried.values(), key=lambda b: b["id"]):
        where = f" on {b['node']}" if b["node"] else ""
        crashes = f"{b['attempts']} crash{'es' * (b['attempts'] != 1)}"
        lines.append(f"  buried: {b['id']}{where} after {crashes}: {b['error']}")
    events = sorted({e for info in hub_infos.values() for e in info["hooks"]})
    if events:
        names = sorted(hub_infos)
        lines.append("  hook events (dispatched/failed) per node:")
        table = [["EVENT", *names]]
        for event in events:
            cells = []
            for name in names:
                st = hub_infos[name]["hooks"].get(event)
                cells.append(f"{st[0]}/{st[1]}" if st else "-")
            table.append([event, *cells])
        lines += _table(table, indent="    ")
        for name in names:
            for event, st in sorted(hub_infos[name]["hooks"].items()):
                if st[2]:
                    lines.append(f"    last failure of {event} on {name}: {st[2][0]}: {st[2][1]}")
    if every_child:
        for name, part in sorted(view["nodes"].items()):
            lines.append(f"  children on {name}:")
            lines += [f"    {c['id']}  {c['pid']}  {c['start']}" for c in part["children"]]
    return lines


def _recent_errors(infos: dict[str, Any], per_node: int = 5) -> list[str]:
    found: list[tuple[float, str, str]] = []
    for name, info in infos.items():
        items: list[tuple[float, str, str]] = []
        for hub_id, hub in info.get("hubs", {}).items():
            items += [
                (e["at"], name, f"hub {hub_id}: {e['event']}: {e['text']}") for e in hub["errors"]
            ]
        items += [
            (r["at"], name, f"{r['level']} {r['logger']}: {r['message']}")
            for r in info.get("log", [])
        ]
        found += sorted(items)[-per_node:]
    found.sort()
    return [
        f"  {time.strftime('%H:%M:%S', time.localtime(at))}  {name}  {text}"
        for at, name, text in found
    ]
