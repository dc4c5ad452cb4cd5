"""Persistent peer links for hub traffic: authenticated websockets between nodes.

Each node dials its own link to every peer it talks to (so each direction has its own
connection and no tie-break is needed) and answers on links others dial. Frames are msgpack
arrays multiplexed by hub id::

    [0, 0,   hub_id, kind, payload]   one-way (in order per link)
    [1, rid, hub_id, kind, payload]   request: the peer answers with a response
    [2, rid, ok, payload]             response: payload, or an error message when not ok
    [3, frame, frame, ...]            a batch: frames queued while a write was in flight

A link's writer task sends what is queued; frames queued while it writes go out together as one
batch, so a burst of casts costs one websocket message, not one each, and an idle link adds no
delay. One-way frames are handled in order, one at a time (registry deltas rely on it); requests run
concurrently, bounded per link. Every wait is bounded by the caller's timeout; a link that
breaks fails its pending requests at once and is dialled again on the next send.

A request whose handler fails, or whose reply cannot be sent (not msgpack data, or larger than
:data:`MAX_FRAME_BYTES`), is answered with an error response, so the caller gets a
:class:`RemoteError` (kind ``"CallFailed"`` for an unsendable reply), never a silent timeout.

Fault injection (:class:`~hub.cluster.faults.Faults`, the node's ``faults``) applies to links
too, as it does to membership traffic: a frame to or from a peer it blocks (partition or random
drop) is silently lost on the way out (in the writer) or on arrival, so a request across a
partition times out with its own timeout; the writer waits the injected latency before each write
(per link, so order is kept); a link cannot be opened across a partition (the dial fails with
:class:`LinkError`, and the served side refuses it). A link whose frames were lost stays usable:
after a heal, traffic flows on it again. Without faults the cost is one ``is None`` check.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import msgpack  # type: ignore[import-untyped]
from aiohttp import web

from ..errors import HubError, InvalidSpec, NotFound, Timeout, Unauthorized
from .auth import H_NONCE, Authenticator
from .faults import Faults
from .messages import Address, NodeId
from .stats import LatencyHistogram

__all__ = ["LINK_PATH", "MAX_FRAME_BYTES", "Handler", "LinkError", "Links", "RemoteError"]

logger = logging.getLogger(__name__)

LINK_PATH = "/processhub/v1/link"
MAX_FRAME_BYTES = 16 * 1024 * 1024
#: queued frames are merged into one websocket message up to this size (a larger frame goes
#: alone): the receiver decodes a message in one go, so this bounds how long that takes
MERGE_BYTES = 256 * 1024
#: a sender that queued a frame at least this large, packed by :meth:`_Link.send`, gives the
#: event loop a turn (packing it took a while, and a sender of many such frames would
#: otherwise never yield); a :class:`Packed` frame was packed, and paced, by its caller
YIELD_BYTES = 64 * 1024
ONEWAY, REQUEST, RESPONSE, BATCH = 0, 1, 2, 3
MAX_OUTBOX = 10_000  # frames queued on one link before senders wait for the writer
MAX_ERROR_CHARS = 4096  # an error response's message is cut to this length

#: ``handler(peer, kind, payload)`` for one hub id: the return value answers a request.
Handler = Callable[[NodeId, str, Any], Awaitable[Any]]


class LinkError(HubError):
    """The link to a peer could not be opened or broke."""


class RemoteError(HubError):
    """The peer answered a request with an error: ``kind`` is its type name there."""

    def __init__(self, peer: str, kind: str, message: str) -> None:
        self.peer = peer
        self.kind = kind
        self.message = message
        super().__init__(f"{peer}: {kind}: {message}")


class Packed(bytes):
    """A one-way frame packed once (:meth:`Links.pack`), to send to several peers. A type of
    its own, so that a payload that merely is ``bytes`` is never taken for a packed frame."""


def _pack(frame: list[Any]) -> bytes:
    try:
        data: bytes = msgpack.packb(frame, use_bin_type=True)
    except (TypeError, ValueError, OverflowError) as exc:
        raise InvalidSpec(f"cannot send to another node (msgpack data only): {exc}") from None
    if len(data) > MAX_FRAME_BYTES:
        raise HubError(f"frame of {len(data)} bytes exceeds {MAX_FRAME_BYTES}")
    return data


def _error_response(rid: int, kind: str, message: str) -> bytes:
    """A response frame that reports an error (bounded, always encodable)."""
    if len(message) > MAX_ERROR_CHARS:
        message = message[:MAX_ERROR_CHARS] + "..."
    message = message.encode("utf-8", "backslashreplace").decode("utf-8")  # lone surrogates
    return _pack([RESPONSE, rid, False, [kind, message]])


def _remote_error(peer: str, detail: Any) -> RemoteError:
    """The exception for an error response's ``[kind, message]`` (tolerating other shapes)."""
    if isinstance(detail, list) and len(detail) == 2:
        return RemoteError(peer, str(detail[0]), str(detail[1]))
    return RemoteError(peer, "HubError", str(detail))


def _batch(frames: list[bytes]) -> bytes:
    """One msgpack array ``[BATCH, *frames]`` built from frames packed one by one."""
    n = len(frames) + 1
    if n < 16:
        header = bytes((0x90 | n,))
    elif n < 0x10000:
        header = b"\xdc" + n.to_bytes(2, "big")
    else:
        header = b"\xdd" + n.to_bytes(4, "big")
    return header + b"\x03" + b"".join(frames)


def _frames(data: bytes) -> list[list[Any]]:
    """The frames of one websocket message (one frame, or a batch)."""
    try:
        decoded = msgpack.unpackb(data, raw=False, strict_map_key=False)  # size: max_msg_size
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise ValueError(f"malformed frame: {exc}") from None
    if isinstance(decoded, list) and decoded and decoded[0] == BATCH:
        return [_check(frame) for frame in decoded[1:]]
    return [_check(decoded)]


def _check(frame: Any) -> list[Any]:
    if not isinstance(frame, list) or len(frame) not in (4, 5) or frame[0] not in (0, 1, 2):
        raise ValueError("malformed frame")
    if frame[0] != RESPONSE and (
        len(frame) != 5 or not isinstance(frame[2], str) or not isinstance(frame[3], str)
    ):
        raise ValueError("malformed frame header")
    if type(frame[1]) is not int:
        raise ValueError("malformed request id")
    return frame


class _Link:
    """One dialled websocket to a peer: a writer and a reader task, pending requests."""

    def __init__(self, owner: Links, peer: NodeId, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.owner = owner
        self.peer = peer
        self.ws = ws
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.rids = itertools.count(1)
        loop = asyncio.get_running_loop()
        name = f"link:{owner.me.name}->{peer.name}"
        self.reader = loop.create_task(self._read(), name=name)
        self._outbox: list[bytes] = []
        self._queued = asyncio.Event()
        self._drained = asyncio.Event()
        self.writer = loop.create_task(self._write(), name=f"{name}:writer")
        for task in (self.reader, self.writer):  # owned by Links: cancelled and awaited on close
            owner._tasks.add(task)
            task.add_done_callback(owner._tasks.discard)
        self.closed = False
        self.closed_by_us = False

    async def send(self, frame: list[Any] | Packed) -> None:
        """Queue a frame (packed now, so a bad payload fails its own sender, unless it is a
        :class:`Packed` one already)."""
        if self.closed:
            raise LinkError(f"link to {self.peer.name} is closed")
        data = frame if isinstance(frame, Packed) else _pack(frame)
        self._outbox.append(data)
        self._queued.set()
        if len(self._outbox) >= MAX_OUTBOX:
            self._drained.clear()
            await self._drained.wait()
            if self.closed:
                raise LinkError(f"link to {self.peer.name} broke")
        elif len(data) >= YIELD_BYTES and data is not frame:
            await asyncio.sleep(0)

    async def _write(self) -> None:
        owner = self.owner
        try:
            while True:
                await self._queued.wait()
                self._queued.clear()
                while self._outbox:
                    frames = self._take()
                    self._drained.set()
                    if owner.faults is not None:
                        frames = await self._through(owner.faults, frames)
                        if not frames:
                            continue
                    await self.ws.send_bytes(frames[0] if len(frames) == 1 else _batch(frames))
        except (ConnectionError, aiohttp.ClientError, RuntimeError) as exc:
            self.fail(f"send failed: {exc!r}")
        except Exception as exc:  # a bug: never leave it in an unretrieved task exception
            logger.exception("link to %s: writer failed", self.peer.name)
            self.fail(f"send failed: {exc!r}")
        finally:
            self._drained.set()

    def _take(self) -> list[bytes]:
        """The queued frames for one websocket message: as many as fit in :data:`MERGE_BYTES`,
        or one larger frame alone (at most :data:`MAX_FRAME_BYTES`, the receiver's limit); the
        rest wait for the next write."""
        outbox = self._outbox
        size = 0
        count = 0
        for frame in outbox:
            size += len(frame) + 5
            if count and size > MERGE_BYTES:
                break
            count += 1
        taken, self._outbox = outbox[:count], outbox[count:]
        return taken

    async def _through(self, faults: Faults, frames: list[bytes]) -> list[bytes]:
        """Fault injection on the way out: wait the latency, then lose what it blocks."""
        latency = faults.latency()
        if latency:
            await asyncio.sleep(latency)
        me, peer = self.owner.me.name, self.peer.name
        kept = [frame for frame in frames if not faults.blocks(me, peer)]
        if len(kept) < len(frames):
            logger.debug(
                "link %s->%s: fault injection dropped %d outgoing frame(s)",
                me,
                peer,
                len(frames) - len(kept),
            )
        return kept

    async def _read(self) -> None:
        try:
            async for msg in self.ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                try:
                    frames = _frames(msg.data)
                except ValueError as exc:
                    logger.warning("link to %s: %s", self.peer.name, exc)
                    continue
                faults = self.owner.faults
                for frame in frames:
                    if faults is not None and self.owner._lost(faults, self.peer.name):
                        continue
                    self._on_frame(frame)
        except Exception:  # a bug: never leave it in an unretrieved task exception
            logger.exception("link to %s: reader failed", self.peer.name)
        finally:
            self.fail("closed by peer")

    def _on_frame(self, frame: list[Any]) -> None:
        """A frame from the peer on a link we dialled: only responses come this way."""
        if frame[0] != RESPONSE:
            return
        future = self.pending.pop(frame[1], None)
        if future is None or future.done():
            return
        if frame[2]:
            future.set_result(frame[3])
        else:
            future.set_exception(_remote_error(self.peer.name, frame[3]))

    def fail(self, why: str) -> None:
        if self.closed:
            return
        self.closed = True
        if not self.closed_by_us and not self.owner.closed:
            self.owner.count_error("broken")
        if self.writer is not asyncio.current_task():
            self.writer.cancel()
        for future in self.pending.values():
            if not future.done():
                future.set_exception(LinkError(f"link to {self.peer.name} {why}"))
        self.pending.clear()
        self.owner._forget(self)

    async def close(self) -> None:
        self.closed_by_us = True
        self.fail("closed")  # also cancels the writer
        await self.ws.close()
        self.reader.cancel()
        for task in (self.writer, self.reader):
            with contextlib.suppress(asyncio.CancelledError):
                await task


class Links:
    """All links of one node. The node owns it and calls :meth:`close` when it stops."""

    def __init__(
        self,
        me: Callable[[], NodeId],
        resolve: Callable[[str], tuple[NodeId, Address] | None],
        auth: Authenticator | None,
        session: Callable[[], aiohttp.ClientSession],
        *,
        scheme: str = "http",
        connect_timeout: float = 2.0,
        max_concurrent_requests: int = 64,
        faults: Faults | None = None,
    ) -> None:
        self._me = me
        self._resolve = resolve
        self._auth = auth
        self._session = session
        self._scheme = scheme
        self._connect_timeout = connect_timeout
        self._max_requests = max_concurrent_requests
        self._handlers: dict[str, Handler] = {}
        self._links: dict[str, _Link] = {}
        self._dialing: dict[str, asyncio.Future[_Link]] = {}
        self._served: set[web.WebSocketResponse] = set()
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False
        #: Fault injection for tests (the node's :class:`Faults`); ``None``: off.
        self.faults = faults
        #: Link errors by kind: ``"dial"`` (a link could not be opened), ``"broken"`` (an
        #: open link broke), ``"timeout"`` (a request got no answer in time).
        self.errors: dict[str, int] = {}
        #: Request round trips (seconds) by ``(hub id, kind)``, answered ones only.
        self.latency: dict[tuple[str, str], LatencyHistogram] = {}

    def count_error(self, kind: str) -> None:
        self.errors[kind] = self.errors.get(kind, 0) + 1

    @property
    def me(self) -> NodeId:
        return self._me()

    def _lost(self, faults: Faults, peer: str) -> bool:
        """Whether fault injection loses an incoming frame from ``peer`` (logged)."""
        if faults.blocks(self.me.name, peer):
            logger.debug(
                "link %s<-%s: fault injection dropped an incoming frame", self.me.name, peer
            )
            return True
        return False

    def register(self, hub_id: str, handler: Handler) -> None:
        if hub_id in self._handlers:
            raise HubError(f"a handler for hub {hub_id!r} is already registered on this node")
        self._handlers[hub_id] = handler

    def unregister(self, hub_id: str) -> None:
        self._handlers.pop(hub_id, None)

    # -- sending -------------------------------------------------------------------------------

    @staticmethod
    def pack(hub_id: str, kind: str, payload: Any) -> Packed:
        """A one-way frame packed once, to :meth:`send` to several peers."""
        return Packed(_pack([ONEWAY, 0, hub_id, kind, payload]))

    async def send(
        self, peer: str, hub_id: str, kind: str, payload: Any, *, timeout: float = 5.0
    ) -> None:
        """Deliver a one-way frame (in order with earlier ones to the same peer). ``payload``
        may be a frame from :meth:`pack` (``kind`` is then only for the logs)."""
        link = await self._link(peer, timeout)
        await link.send(
            payload if isinstance(payload, Packed) else [ONEWAY, 0, hub_id, kind, payload]
        )

    async def request(
        self, peer: str, hub_id: str, kind: str, payload: Any, *, timeout: float
    ) -> Any:
        """Send a request and wait (at most ``timeout`` seconds) for its answer."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + timeout
        try:
            async with asyncio.timeout_at(deadline):
                link = await self._link(peer, timeout)
                rid = next(link.rids)
                future: asyncio.Future[Any] = loop.create_future()
                link.pending[rid] = future
                try:
                    await link.send([REQUEST, rid, hub_id, kind, payload])
                    result = await future
                finally:
                    link.pending.pop(rid, None)
        except TimeoutError:
            self.count_error("timeout")
            raise Timeout(f"{peer} did not answer {kind!r} within {timeout}s") from None
        histogram = self.latency.get((hub_id, kind))
        if histogram is None:
            histogram = self.latency[(hub_id, kind)] = LatencyHistogram()
        histogram.observe(loop.time() - began)
        return result

    async def _link(self, peer: str, timeout: float) -> _Link:
        if self.closed:
            raise LinkError("links are closed")
        link = self._links.get(peer)
        target = self._resolve(peer)
        if target is None:
            raise NotFound(f"node {peer}")
        node_id, address = target
        if link is not None and link.peer == node_id and not link.closed:
            return link
        faults = self.faults
        if faults is not None and faults.partitioned(self.me.name, peer):
            logger.debug(
                "link %s->%s: not dialled (fault injection: partitioned)", self.me.name, peer
            )
            raise LinkError(f"cannot link to {peer}: unreachable (fault injection: partitioned)")
        if link is not None:  # a new boot of that peer: the old link is stale
            await link.close()
        dialing = self._dialing.get(peer)
        if dialing is None:
            dialing = asyncio.get_running_loop().create_future()
            self._dialing[peer] = dialing
            task = asyncio.get_running_loop().create_task(
                self._dial(peer, node_id, address, dialing)
            )
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        return await asyncio.wait_for(asyncio.shield(dialing), timeout)

    async def _dial(
        self, peer: str, node_id: NodeId, address: Address, done: asyncio.Future[_Link]
    ) -> None:
        try:
            me = self.me
            what = f"LINK {node_id.name} {node_id.boot_id}"
            headers = self._auth.sign(me.name, me.boot_id, what, b"") if self._auth else {}
            host = f"[{address.host}]" if ":" in address.host else address.host
            url = f"{self._scheme}://{host}:{address.port}{LINK_PATH}"
            ws = await self._session().ws_connect(
                url,
                headers=headers,
                max_msg_size=MAX_FRAME_BYTES,
                heartbeat=30.0,
                timeout=aiohttp.ClientWSTimeout(ws_receive=None, ws_close=self._connect_timeout),
            )
            if self._auth is not None:
                signed = self._auth.verify(ws._response.headers, f"LINKED {headers[H_NONCE]}", b"")
                if (signed.sender, signed.boot_id) != (node_id.name, node_id.boot_id):
                    await ws.close()
                    raise Unauthorized(f"{peer} answered as {signed.sender}/{signed.boot_id}")
            link = _Link(self, node_id, ws)
            self._links[peer] = link
            done.set_result(link)
        except Exception as exc:
            self.count_error("dial")
            if isinstance(exc, aiohttp.WSServerHandshakeError) and exc.status == 401:
                logger.error(
                    "node %s rejected our link (HTTP 401): it does not accept our cookie", peer
                )
            if not done.done():
                done.set_exception(LinkError(f"cannot link to {peer}: {exc!r}"))
            done.exception()  # retrieved: the dialler may have given up waiting
        except asyncio.CancelledError:  # the links are closing: release the waiters now
            if not done.done():
                done.set_exception(LinkError(f"cannot link to {peer}: links are closed"))
                done.exception()
            raise
        finally:
            self._dialing.pop(peer, None)

    def _forget(self, link: _Link) -> None:
        if self._links.get(link.peer.name) is link:
            del self._links[link.peer.name]

    async def drop(self, peer: str) -> None:
        """Close the link to ``peer`` (it left or failed)."""
        link = self._links.pop(peer, None)
        if link is not None:
            await link.close()

    # -- serving -------------------------------------------------------------------------------

    async def serve(self, request: web.Request) -> web.StreamResponse:
        """The aiohttp handler of :data:`LINK_PATH`."""
        me = self.me
        headers: dict[str, str] = {}
        if self._auth is not None:
            try:
                signed = self._auth.verify(request.headers, f"LINK {me.name} {me.boot_id}", b"")
            except Unauthorized as exc:
                logger.warning("refused a link from %s: %s", request.remote, exc)
                return web.Response(status=401, text=str(exc))
            peer = NodeId(signed.sender, signed.boot_id)
            headers = self._auth.sign(me.name, me.boot_id, f"LINKED {signed.nonce}", b"")
        else:
            peer = NodeId(request.headers.get("X-Processhub-Sender", request.remote or "?"), "")
        faults = self.faults
        if faults is not None and faults.partitioned(me.name, peer.name):
            logger.debug("link %s<-%s: refused (fault injection: partitioned)", me.name, peer.name)
            return web.Response(status=503, text="unreachable (fault injection)")
        ws = web.WebSocketResponse(max_msg_size=MAX_FRAME_BYTES, heartbeat=30.0)
        ws.headers.update(headers)
        try:
            await ws.prepare(request)
        except (ConnectionError, aiohttp.ClientError) as exc:  # the peer gave up meanwhile
            logger.debug("link %s<-%s: closed before it opened: %r", me.name, peer.name, exc)
            # not the half-prepared socket: aiohttp would fail to finish it, with a traceback
            return web.Response(status=503, text="closed before it opened")
        self._served.add(ws)
        slots = asyncio.Semaphore(self._max_requests)
        running: set[asyncio.Task[None]] = set()
        try:
            async for msg in ws:
                if msg.type != aiohttp.WSMsgType.BINARY:
                    break
                try:
                    frames = _frames(msg.data)
                except ValueError as exc:
                    logger.warning("link from %s: %s", peer.name, exc)
                    continue
                faults = self.faults
                for frame in frames:
                    if faults is not None and self._lost(faults, peer.name):
                        continue
                    await self._serve_frame(ws, peer, frame, slots, running)
                # a turn of the event loop per message: with messages buffered, neither the
                # receive nor a handler that finishes without waiting yields, and a backlog
                # would be handled in one step, too long for the membership's probes
                await asyncio.sleep(0)
        except (ConnectionError, aiohttp.ClientError) as exc:  # e.g. a pong to a closing socket
            logger.info("link from %s: connection lost: %r", peer.name, exc)
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            self._served.discard(ws)
        return ws

    async def _serve_frame(
        self,
        ws: web.WebSocketResponse,
        peer: NodeId,
        frame: list[Any],
        slots: asyncio.Semaphore,
        running: set[asyncio.Task[None]],
    ) -> None:
        if frame[0] == ONEWAY:
            try:
                await self._call(peer, frame[2], frame[3], frame[4])
            except HubError as exc:
                logger.warning("%r from %s not delivered: %s", frame[3], peer.name, exc)
            except Exception:
                logger.exception("handling %r from %s failed", frame[3], peer.name)
        elif frame[0] == REQUEST:
            await slots.acquire()
            task = asyncio.get_running_loop().create_task(self._answer(ws, peer, frame, slots))
            running.add(task)
            task.add_done_callback(running.discard)

    async def _call(self, peer: NodeId, hub_id: str, kind: str, payload: Any) -> Any:
        handler = self._handlers.get(hub_id)
        if handler is None:
            raise NotFound(f"hub {hub_id!r} on {self.me.name}")
        return await handler(peer, kind, payload)

    async def _answer(
        self, ws: web.WebSocketResponse, peer: NodeId, frame: list[Any], slots: asyncio.Semaphore
    ) -> None:
        """Run one request and send its response; nothing escapes this task."""
        try:
            data = await self._reply(peer, frame)
            faults = self.faults
            if faults is not None:
                latency = faults.latency()
                if latency:
                    await asyncio.sleep(latency)
                if faults.blocks(self.me.name, peer.name):
                    logger.debug(
                        "link %s->%s: fault injection dropped a response", self.me.name, peer.name
                    )
                    return
            if not ws.closed:
                await ws.send_bytes(data)
        except (ConnectionError, RuntimeError, aiohttp.ClientError) as exc:
            logger.debug("response to %r from %s not sent: %r", frame[3], peer.name, exc)
        except Exception:  # a bug: never leave it in an unretrieved task exception
            logger.exception("answering %r from %s failed", frame[3], peer.name)
        finally:
            slots.release()

    async def _reply(self, peer: NodeId, frame: list[Any]) -> bytes:
        """The encoded response to a request frame: its result, or an error response."""
        rid, kind = frame[1], frame[3]
        try:
            result = await self._call(peer, frame[2], kind, frame[4])
        except HubError as exc:
            return _error_response(rid, type(exc).__name__, str(exc))
        except Exception as exc:
            logger.exception("handling %r from %s failed", kind, peer.name)
            return _error_response(rid, "InternalError", repr(exc))
        try:
            return _pack([RESPONSE, rid, True, result])
        except HubError as exc:  # not msgpack data, or larger than a frame may be
            logger.warning("the reply to %r from %s could not be encoded: %s", kind, peer.name, exc)
            return _error_response(
                rid, "CallFailed", f"the reply to {kind!r} could not be encoded: {exc}"
            )

    async def close(self) -> None:
        self.closed = True
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.gather(
            *(link.close() for link in list(self._links.values())), return_exceptions=True
        )
        await asyncio.gather(*(ws.close() for ws in list(self._served)), return_exceptions=True)
