"""An aiohttp service with one counter process per id, on a processhub cluster, on one port.

Run three instances from the repository root::

    export PROCESSHUB_COOKIE=$(python -c 'import secrets; print(secrets.token_hex(16))')
    python -m examples.counter_service --name a --port 8001
    python -m examples.counter_service --name b --port 8002 --seeds 127.0.0.1:8001
    python -m examples.counter_service --name c --port 8003 --seeds 127.0.0.1:8001

    curl -X POST 'localhost:8002/counters/cart-42/increment?by=3'   # {"id": ..., "value": 3, ...}
    curl localhost:8003/counters/cart-42                             # the same counter
    curl localhost:8001/health/ready; curl localhost:8001/metrics

Each counter is a process started on first use (``hub.get_or_start``) on its ring owner, so
every instance answers for every id. The cluster's routes share the service's port
(``hub.attach(app)``). Hub errors become HTTP statuses with :func:`hub.ops.http_status`.
"""

from __future__ import annotations

import argparse
import logging
import os
import socket
from typing import Any

from aiohttp import web

from hub import ChildSpec, Hub, HubError, Process
from hub.ops import http_status

HUB = web.AppKey("hub", Hub)
START = "examples.counter_service:Counter"  # importable on every instance


class Counter(Process):
    async def init(self) -> None:
        self.n = 0

    async def handle_call(self, message: Any) -> Any:
        if message["op"] == "increment":
            self.n += int(message["by"])
        return {"value": self.n, "node": self.ctx.node}


async def _counter(request: web.Request, message: dict[str, Any]) -> web.Response:
    hub = request.app[HUB]
    cid = request.match_info["id"]
    await hub.get_or_start(ChildSpec(cid, START))
    reply = await hub.call(cid, message, timeout=5.0)
    return web.json_response({"id": cid, **reply})


async def increment(request: web.Request) -> web.Response:
    try:
        by = int(request.query.get("by", "1"))
    except ValueError:
        raise web.HTTPBadRequest(text="by must be an integer") from None
    return await _counter(request, {"op": "increment", "by": by})


async def read(request: web.Request) -> web.Response:
    return await _counter(request, {"op": "get"})


@web.middleware
async def hub_errors(request: web.Request, handler: Any) -> web.StreamResponse:
    """Map hub errors to HTTP statuses (the table in docs/embedding.md)."""
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except HubError as exc:
        return web.json_response(
            {"error": type(exc).__name__, "detail": str(exc)}, status=http_status(exc)
        )


def make_app(
    name: str,
    port: int,
    seeds: list[str],
    cookie: str | None,
    host: str = "127.0.0.1",
    preset: str = "lan",
) -> web.Application:
    app = web.Application(middlewares=[hub_errors])
    hub = Hub(
        "counters", node=name, host=host, port=port, seeds=seeds, cookie=cookie, preset=preset
    )
    hub.attach(app)  # cluster routes + /metrics + /health/* on this app; lifecycle tied to it
    app[HUB] = hub
    app.router.add_post("/counters/{id}/increment", increment)
    app.router.add_get("/counters/{id}", read)
    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--name", required=True)
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on and advertise")
    parser.add_argument("--port", type=int, default=0, help="the service's (and cluster's) port")
    parser.add_argument("--seeds", default=os.environ.get("PROCESSHUB_SEEDS", ""))
    parser.add_argument("--preset", default="lan", choices=["lan", "local"])
    parser.add_argument(
        "--sock-fd",
        type=int,
        default=None,
        help="serve an inherited listening socket (tests, socket activation); --port is "
        "then read from it",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    sock = None
    port = args.port
    if args.sock_fd is not None:
        sock = socket.socket(fileno=args.sock_fd)
        port = sock.getsockname()[1]
    seeds = [s for s in args.seeds.split(",") if s]
    cookie = os.environ.get("PROCESSHUB_COOKIE")
    app = make_app(args.name, port, seeds, cookie, args.host, args.preset)
    if sock is not None:
        web.run_app(app, sock=sock, print=None)
    else:
        web.run_app(app, host=args.host, port=port, print=None)


if __name__ == "__main__":
    main()
