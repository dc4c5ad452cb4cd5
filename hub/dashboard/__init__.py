"""The live dashboard a node serves: ``GET /dashboard`` and its data.

Routes (read-only, no cookie, added by :func:`routes` when the node's ``dashboard`` is on):

- ``GET /dashboard``: one self-contained HTML page (inline script and style, no CDN: it works
  offline). ``?hub=ID`` picks the hub shown when the cluster runs several.
- ``GET /dashboard/api``: the snapshot the page renders, as JSON (:func:`snapshot`).
- ``GET /dashboard/events``: a server-sent event stream: a ``snapshot`` event at once and
  whenever something changed (at most every :data:`MIN_INTERVAL` seconds, at least every
  :data:`MAX_INTERVAL`), and a ``hooks`` event with the buffered hook events of this node (the last
  :data:`hub.board.EVENT_BUFFER` per hub), then with each batch of new ones.

The snapshot is this node's view: its membership (every state, with incarnations), and for each
live member the summary it answers on the control channel (:func:`hub.board.node_info`: ring
shares, children per node and per state, buried children, hook statistics, recent migrations
and errors). Nothing in it is secret: no cookie, children by id only, never their arguments.
Streams end when the node stops (the app's ``on_shutdown``), so a stop never waits for a
browser.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from importlib import resources
from typing import Any

from aiohttp import web

from ..board import CONTROL, Board, members, node_info

__all__ = ["MAX_INTERVAL", "MIN_INTERVAL", "PEER_TIMEOUT", "routes", "snapshot"]

logger = logging.getLogger(__name__)

MIN_INTERVAL = 0.25  # seconds between two snapshots of one stream
MAX_INTERVAL = 1.0  # a stream sends a snapshot at least this often
PEER_TIMEOUT = 0.5  # seconds a peer has to answer the snapshot's info request
CACHE_FOR = 0.2  # seconds one cluster snapshot serves every stream and request
MAX_STREAMS = 32  # open event streams per node; past it new ones get 503
SHUTDOWN_WAIT = 2.0  # at most this long for the streams to end when the node stops

_PAGE: str | None = None


def _page() -> str:
    global _PAGE
    if _PAGE is None:
        _PAGE = resources.files(__name__).joinpath("page.html").read_text("utf-8")
    return _PAGE


class _Streams:
    """The open event streams of one app, and the cached cluster snapshot they share."""

    def __init__(self, board: Board) -> None:
        self.board = board
        self.closing = asyncio.Event()
        self.open: set[asyncio.Event] = set()  # each stream's "ended" event
        self._cache: tuple[float, dict[str, Any]] | None = None
        self._lock = asyncio.Lock()

    async def infos(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        async with self._lock:
            if self._cache is not None and loop.time() - self._cache[0] < CACHE_FOR:
                return self._cache[1]
            infos = await _gather_infos(self.board)
            self._cache = (loop.time(), infos)
            return infos

    async def shutdown(self, _app: web.Application) -> None:
        self.closing.set()
        waiting = [asyncio.ensure_future(e.wait()) for e in list(self.open)]
        if waiting:
            await asyncio.wait(waiting, timeout=SHUTDOWN_WAIT)
            for w in waiting:
                w.cancel()
            await asyncio.gather(*waiting, return_exceptions=True)


async def _gather_infos(board: Board) -> dict[str, Any]:
    node = board.node
    peers = [m["name"] for m in members(node) if m["live"] and m["name"] != node.name]

    async def ask(name: str) -> Any:
        try:
            return await node.links.request(name, CONTROL, "info", None, timeout=PEER_TIMEOUT)
        except Exception as exc:  # a peer that cannot answer is shown as such
            return {"error": f"{type(exc).__name__}: {exc}"[:300]}

    answers = await asyncio.gather(*(ask(p) for p in peers))
    infos: dict[str, Any] = {node.name: node_info(board)}
    for name, answer in zip(peers, answers, strict=True):
        infos[name] = answer if isinstance(answer, dict) else {"error": "malformed answer"}
    return infos


async def snapshot(board: Board, hub: str | None = None, infos: Any = None) -> dict[str, Any]:
    """What the page shows: this node's membership view and every live member's summary.
    ``hub`` is the hub selected (default: the first this node runs, else the first any member
    hosts); ``hubs`` lists every hub a live member hosts."""
    from .. import __version__

    node = board.node
    view = members(node)
    if infos is None:
        infos = await _gather_infos(board)
    known = sorted({h for m in view if m["live"] for h in m["hubs"]} | set(board.hubs))
    selected = hub if hub else (sorted(board.hubs) or known or [None])[0]
    return {
        "node": node.name,
        "version": __version__,
        "generated": round(time.time(), 3),
        "hubs": known,
        "hub": selected,
        "members": view,
        "infos": infos,
    }


def routes(app: web.Application, board: Board) -> None:
    """Add the dashboard routes for ``board``'s node to ``app``."""
    streams = _Streams(board)

    async def page(request: web.Request) -> web.Response:
        return web.Response(
            text=_page(),
            content_type="text/html",
            headers={"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"},
        )

    async def api(request: web.Request) -> web.Response:
        hub = request.query.get("hub") or None
        data = await snapshot(board, hub, await streams.infos())
        return web.json_response(data, headers={"Cache-Control": "no-store"})

    async def events(request: web.Request) -> web.StreamResponse:
        if streams.closing.is_set():
            return web.Response(status=503, text="node is stopping")
        if len(streams.open) >= MAX_STREAMS:
            return web.Response(status=503, text="too many dashboard streams")
        hub = request.query.get("hub") or None
        response = web.StreamResponse(
            headers={
                "Content-Type": "text/event-stream",
                "Cache-Control": "no-store",
                "X-Accel-Buffering": "no",
            }
        )
        ended = asyncio.Event()
        changed = asyncio.Event()
        streams.open.add(ended)
        board.listen(changed.set)
        try:
            await response.prepare(request)
            await _stream(board, streams, response, hub, changed)
        except ConnectionError:
            pass  # the browser went away
        finally:
            board.unlisten(changed.set)
            streams.open.discard(ended)
            ended.set()
        return response

    app.router.add_get("/dashboard", page)
    app.router.add_get("/dashboard/api", api)
    app.router.add_get("/dashboard/events", events)
    app.on_shutdown.append(streams.shutdown)


async def _stream(
    board: Board,
    streams: _Streams,
    response: web.StreamResponse,
    hub: str | None,
    changed: asyncio.Event,
) -> None:
    last = 0  # the first batch is the buffered history
    closing = streams.closing
    while not closing.is_set():
        changed.clear()
        data = await snapshot(board, hub, await streams.infos())
        await response.write(_sse("snapshot", data))
        fresh = board.recent(None, after=last)
        if fresh:
            last = fresh[-1].seq
            await response.write(_sse("hooks", [e.to_json() for e in fresh]))
        # at most one snapshot per MIN_INTERVAL, at least one per MAX_INTERVAL
        if await _wait(closing, MIN_INTERVAL):
            break
        if not changed.is_set():
            await _wait_any(changed, closing, MAX_INTERVAL - MIN_INTERVAL)


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        return False
    return True


async def _wait_any(a: asyncio.Event, b: asyncio.Event, timeout: float) -> None:
    tasks = [asyncio.ensure_future(a.wait()), asyncio.ensure_future(b.wait())]
    try:
        await asyncio.wait(tasks, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _sse(event: str, data: Any) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, separators=(',', ':'))}\n\n".encode()
