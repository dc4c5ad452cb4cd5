"""A cluster node: the I/O shell around the membership state machine.

One aiohttp server per node (``AppRunner`` + ``TCPSite``; port 0 picks a free port) answers
``POST /processhub/v1/swim``; one pooled ``ClientSession`` with short explicit timeouts sends.
Every request and response is authenticated (HMAC, :mod:`hub.cluster.auth`) when the node has a
cookie; without one it binds to loopback only. Bodies are msgpack (:mod:`hub.cluster.codec`),
size-limited, strictly validated; bad input gets a 4xx answer and a log line, and the node keeps
serving. Replies to a request (an ``Ack`` to a ``Ping``) travel in its HTTP response.

``faults`` (a :class:`~hub.cluster.faults.Faults`, for tests) applies to all of the node's peer
traffic: these membership messages and the frames of its hub links alike.

The node tells subscribers (hubs) about members joining, leaving, failing and changing.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import random
import secrets
import ssl as ssl_module
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from typing import Any

import aiohttp
import msgpack  # type: ignore[import-untyped]
from aiohttp import web

from ..errors import HubClosed, InvalidSpec, Unauthorized
from .auth import H_NONCE, H_SENDER, Authenticator
from .codec import MAX_MESSAGE_BYTES, CodecError, decode_envelope, encode_envelope
from .faults import Faults
from .links import LINK_PATH, Links
from .membership import PRESETS, Config, Member, MemberEvent, Membership, NameConflict, Send
from .messages import Address, NodeId, State
from .stats import SeedWatch, Throttle, suppressed_note

__all__ = ["SWIM_PATH", "Node", "NodeEvent", "add_route_provider", "parse_address"]

logger = logging.getLogger(__name__)

#: What else a node serves besides its cluster routes: each provider adds its routes to the
#: node's application (its own, or the app it is mounted on). The layers above register theirs
#: (``hub.ops``: metrics and health; ``hub.board``: the dashboard and the control channel), so
#: this module imports none of them.
_ROUTE_PROVIDERS: list[Callable[[web.Application, Node], None]] = []


def add_route_provider(provider: Callable[[web.Application, Node], None]) -> None:
    """Have every node call ``provider(app, node)`` when it sets up its routes."""
    if provider not in _ROUTE_PROVIDERS:
        _ROUTE_PROVIDERS.append(provider)


SWIM_PATH = "/processhub/v1/swim"
NodeEvent = MemberEvent | NameConflict
_LOOPBACK = ("127.0.0.1", "::1", "localhost")
_UNSPECIFIED = ("0.0.0.0", "::", "")


def parse_address(text: str) -> Address:
    """``"host:port"`` (or ``"[v6]:port"``) to an :class:`Address`, with a clear error."""
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise InvalidSpec(f"expected 'host:port', got {text!r}")
    return Address(host, int(port))


def check_bind_address(host: str, advertise: str | None) -> tuple[str | None, int | None]:
    """The advertised ``(host, port)`` from ``advertise`` (``"host"`` or ``"host:port"``), or
    ``(None, None)`` when the node advertises the address it binds. Binding an unspecified
    address (``0.0.0.0``, ``::``) needs an explicit ``advertise``: peers cannot reach
    ``0.0.0.0``."""
    if advertise is None:
        if host in _UNSPECIFIED:
            raise InvalidSpec(
                f"host={host!r} binds every interface but peers cannot dial it: pass "
                "advertise='<address peers use>' (e.g. the machine's IP or DNS name)"
            )
        return None, None
    if not isinstance(advertise, str) or not advertise.strip("[]"):
        raise InvalidSpec(f"advertise must be 'host' or 'host:port', got {advertise!r}")
    tail = advertise.rpartition(":")[2]
    if ":" in advertise and tail.isdigit() and (advertise.count(":") == 1 or "]" in advertise):
        address = parse_address(advertise)
        adv_host, adv_port = address.host, address.port
    else:
        adv_host, adv_port = advertise.strip("[]"), 0
    if adv_host in _UNSPECIFIED:
        raise InvalidSpec(f"advertise={advertise!r} is not an address peers can dial")
    return adv_host, adv_port or None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Node:
    """One member of the cluster. ``async with Node(...)`` or ``await start()``/``stop()``."""

    def __init__(
        self,
        name: str | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        seeds: Iterable[str | Address] = (),
        cookie: str | bytes | None = None,
        cluster: str = "processhub",
        preset: str = "lan",
        config: Config | None = None,
        ssl: ssl_module.SSLContext | None = None,
        client_ssl: ssl_module.SSLContext | None = None,
        meta: Mapping[str, Any] | None = None,
        faults: Faults | None = None,
        rng: random.Random | None = None,
        max_inflight: int = 256,
        advertise: str | None = None,
        observability: bool = True,
        dashboard: bool = True,
    ) -> None:
        if preset not in PRESETS:
            raise InvalidSpec(f"preset must be one of {sorted(PRESETS)}, got {preset!r}")
        if not isinstance(observability, bool):
            raise InvalidSpec(f"observability must be True or False, got {observability!r}")
        # without a cookie the node binds loopback (below), so an unspecified host is not
        # advertised and needs no advertise=
        adv_host, adv_port = check_bind_address(
            host if cookie is not None else "127.0.0.1", advertise
        )
        if cookie is None and not _is_loopback(host):
            logger.warning(
                "no cookie given: binding to 127.0.0.1 instead of %s (unauthenticated nodes "
                "serve loopback only; pass cookie= to listen on other interfaces)",
                host,
            )
            host = "127.0.0.1"
            if adv_host is not None and not _is_loopback(adv_host):
                adv_host = None  # the loopback bind is what peers can reach
        self._requested_name = name
        self._advertise_host = adv_host
        self._advertise_port = adv_port
        #: Whether the read-only routes (``/metrics``, ``/health/*``) are served.
        self.observability = observability
        self.host = host
        self._port = port
        self.seeds = [s if isinstance(s, Address) else parse_address(s) for s in seeds]
        self.config = config or PRESETS[preset]
        self.auth = Authenticator(cookie, cluster) if cookie is not None else None
        self._server_ssl = ssl
        self._client_ssl = client_ssl
        self._meta: dict[str, Any] = dict(meta or {})
        self._faults = faults
        self._rng = rng or random.Random()
        self._max_inflight = max_inflight
        #: Whether the node serves the read-only dashboard routes (see :mod:`hub.dashboard`).
        self.dashboard = dashboard
        self.boot_id = secrets.token_hex(8)
        self.name = name or ""
        self.address = Address(adv_host or host, adv_port or port)
        self._machine: Membership | None = None
        self._mounted: web.Application | None = None  # the user's app that serves this node
        #: Hubs running on this node, by hub id (for the read-only routes and metrics).
        self.hubs: dict[str, Any] = {}
        #: Member events seen, by kind ("joined", "suspected", "failed", ...).
        self.member_events: dict[str, int] = {}
        self._joined = False
        self._seed_watch = SeedWatch(tuple(f"{s.host}:{s.port}" for s in self.seeds))
        self._auth_log = Throttle(interval=30.0)
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._kick = asyncio.Event()
        self._sends: set[asyncio.Task[None]] = set()
        self._subscribers: list[Callable[[NodeEvent], None]] = []
        self._state = "new"
        #: Persistent links to peers for hub traffic (see :mod:`hub.cluster.links`).
        self.links = Links(
            lambda: self.me,
            self._resolve,
            self.auth,
            self._client_session,
            scheme="https" if client_ssl else "http",
            faults=faults,
        )
        self.stats = {
            "sent": 0,
            "received": 0,
            "refused": 0,
            "overflow": 0,
            "bytes_out": 0,
            "bytes_in": 0,
        }

    def __repr__(self) -> str:
        return f"<Node {self.name!r} {self.host}:{self.address.port} {self._state}>"

    @property
    def me(self) -> NodeId:
        return NodeId(self.name, self.boot_id)

    @property
    def running(self) -> bool:
        """Whether the node is started and not stopping."""
        return self._state == "running"

    @property
    def faults(self) -> Faults | None:
        """Fault injection for tests, applied to membership traffic and hub links alike."""
        return self._faults

    @faults.setter
    def faults(self, faults: Faults | None) -> None:
        self._faults = faults
        self.links.faults = faults

    @property
    def membership(self) -> Membership:
        if self._machine is None:
            raise HubClosed("node is not started")
        return self._machine

    # -- lifecycle -----------------------------------------------------------------------------

    async def start(self) -> Node:
        if self._state != "new":
            raise HubClosed(f"node {self.name or self.host} was already started")
        self._state = "starting"
        if self._mounted is None:
            app = web.Application(client_max_size=MAX_MESSAGE_BYTES)
            self._add_routes(app)
            app.on_response_prepare.append(_strip_server_header)
            self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self._port, ssl_context=self._server_ssl)
            try:
                await site.start()
            except BaseException:
                await self._runner.cleanup()
                self._runner = None
                self._state = "new"
                raise
            port = self._advertise_port or self._bound_port()
        else:
            port = self._advertise_port or self._port  # the app's site binds it (see mount)
        host = self._advertise_host or self.host
        self.address = Address(host, port)
        self.name = self._requested_name or f"{host}:{port}"
        probe_wait = self.config.probe_timeout
        self._session = aiohttp.ClientSession(
            timeout=aiohttp.ClientTimeout(
                total=max(1.0, 4 * probe_wait), connect=max(0.5, 2 * probe_wait)
            ),
            connector=aiohttp.TCPConnector(
                limit=self._max_inflight, ssl=self._client_ssl if self._client_ssl else False
            ),
            skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding"),
        )
        loop = asyncio.get_running_loop()
        self._machine = Membership(
            self.me,
            self.address,
            meta=self._meta,
            config=self.config,
            rng=self._rng,
            now=loop.time(),
        )
        self._state = "running"
        if self.seeds:
            self._seed_watch.start(loop.time())
            self._dispatch(self._machine.join(self.seeds, loop.time()))
        self._loop_task = loop.create_task(self._run(), name=f"node:{self.name}:membership")
        logger.info(
            "node %s (boot %s) %s %s:%d%s%s",
            self.name,
            self.boot_id,
            "served by the application on" if self._mounted is not None else "listening on",
            self.address.host,
            port,
            " with TLS" if self._server_ssl else "",
            "" if self.auth else " without authentication (loopback only)",
        )
        return self

    # -- embedding -----------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        app.router.add_post(SWIM_PATH, self._handle)
        app.router.add_get(LINK_PATH, self._serve_link)
        for provider in _ROUTE_PROVIDERS:
            provider(app, self)

    def mount(self, app: web.Application) -> None:
        """Serve this node from ``app`` (the user's aiohttp application) instead of a server of
        its own: adds the cluster routes (and the read-only routes unless
        ``observability=False``) to ``app``. Call it before the app starts and before
        :meth:`start`. The node then does not bind: it advertises ``advertise`` (or
        ``host``) and ``port``, which must be the address the app's site listens on, so
        ``port`` (or the port in ``advertise``) is required. Start the node after the app's
        startup (``hub.attach(app)`` ties both lifecycles for you)."""
        if self._state != "new" or self._mounted is not None:
            raise HubClosed("mount() must be called once, before the node starts")
        if not (self._advertise_port or self._port):
            raise InvalidSpec(
                "a node served by an application needs the port the application listens on: "
                "Node(..., port=<the app's port>) or advertise='host:port' (port=0 is only "
                "for a node with its own server)"
            )
        if app.frozen:
            raise HubClosed("the application is already running: mount the node before it starts")
        self._add_routes(app)
        self._mounted = app

    def attach(self, app: web.Application) -> None:
        """:meth:`mount` on ``app`` and tie the node's lifecycle to it: the node starts in the
        app's startup (``cleanup_ctx``; attach the node before the hubs that share it, so it
        starts first and stops last) and stops in its cleanup."""
        self.mount(app)

        async def lifecycle(_app: web.Application) -> AsyncIterator[None]:
            await self.start()
            try:
                yield
            finally:
                await self.stop()

        app.cleanup_ctx.append(lifecycle)

    @property
    def mounted(self) -> bool:
        """Whether the node is served by a user's application (see :meth:`mount`)."""
        return self._mounted is not None

    @property
    def state(self) -> str:
        """``"new"``, ``"starting"``, ``"running"``, ``"stopping"`` or ``"stopped"``."""
        return self._state

    @property
    def joined(self) -> bool:
        """Whether this node has seen another live member since it started (a node without
        seeds counts as joined: it is a cluster of its own)."""
        return self._joined or not self.seeds

    def register_hub(self, hub: Any) -> None:
        """Called by a hub that starts on this node (for the read-only routes)."""
        self.hubs[hub.hub_id] = hub

    def unregister_hub(self, hub: Any) -> None:
        key = hub.hub_id
        if self.hubs.get(key) is hub:
            del self.hubs[key]

    def _bound_port(self) -> int:
        assert self._runner is not None
        for addr in self._runner.addresses:
            if isinstance(addr, tuple) and len(addr) >= 2:
                return int(addr[1])
        raise RuntimeError("the node's server has no bound address")

    async def stop(self, *, leave: bool = True, timeout: float = 2.0) -> None:
        """Leave the cluster gracefully (unless ``leave=False``), then stop every task."""
        if self._state in ("stopping", "stopped", "new"):
            self._state = "stopped"
            return
        self._state = "stopping"
        if leave and self._machine is not None:
            loop = asyncio.get_running_loop()
            sends = [o for o in self._machine.leave(loop.time()) if isinstance(o, Send)]
            if sends:
                await asyncio.wait(
                    [loop.create_task(self._send(s)) for s in sends], timeout=timeout
                )
        tasks = [t for t in (self._loop_task, *self._sends) if t is not None]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self.links.close()
        if self._session is not None:
            await self._session.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self._state = "stopped"
        logger.info("node %s stopped%s", self.name, " after leaving" if leave else "")

    async def __aenter__(self) -> Node:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- queries and updates -------------------------------------------------------------------

    def members(self) -> list[Member]:
        return self.membership.members()

    def alive(self) -> list[Member]:
        return self.membership.alive()

    def _resolve(self, name: str) -> tuple[NodeId, Address] | None:
        """Identity and address of a live member, for the peer links."""
        member = self._machine.get(name) if self._machine is not None else None
        if member is None or member.state not in (State.ALIVE, State.SUSPECT):
            return None
        return member.node, member.address

    def _client_session(self) -> aiohttp.ClientSession:
        if self._session is None:
            raise HubClosed("node is not started")
        return self._session

    def subscribe(self, callback: Callable[[NodeEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` for every member event; returns the unsubscribe function."""
        self._subscribers.append(callback)
        return lambda: self._subscribers.remove(callback) if callback in self._subscribers else None

    def update_meta(self, **changes: Any) -> None:
        """Change this node's metadata and tell the cluster (bounded size)."""
        meta = {**self._meta, **changes}
        if self._machine is not None:
            loop = asyncio.get_running_loop()
            self._dispatch(self._machine.update_meta(meta, loop.time()))
            self._kick.set()
        self._meta = meta

    @property
    def meta(self) -> Mapping[str, Any]:
        return self._meta

    # -- the membership loop -------------------------------------------------------------------

    async def _run(self) -> None:
        machine = self.membership
        loop = asyncio.get_running_loop()
        watch = self._seed_watch
        while True:
            now = loop.time()
            self._dispatch(machine.tick(now))
            warning = watch.tick(now)
            if warning is not None:
                logger.warning("node %s: %s", self.name, warning)
            delay = min(machine.next_deadline(), watch.due) - loop.time()
            if delay > 0:
                self._kick.clear()
                try:
                    async with asyncio.timeout(delay):
                        await self._kick.wait()
                except TimeoutError:
                    pass
            else:
                await asyncio.sleep(0)

    def _dispatch(self, outputs: Sequence[Any]) -> None:
        for output in outputs:
            if isinstance(output, Send):
                self._spawn_send(output)
            else:
                if isinstance(output, NameConflict):
                    logger.error(
                        "two live nodes claim the name %r: %s and %s; keeping the first",
                        output.name,
                        output.existing.address,
                        output.other.address,
                    )
                else:
                    m = output.member
                    kinds = self.member_events
                    kinds[output.kind] = kinds.get(output.kind, 0) + 1
                    if not self._joined and output.kind in ("joined", "alive"):
                        self._joined = True
                        if self._seed_watch.warnings:
                            logger.info(
                                "node %s: joined the cluster via %s", self.name, m.node.name
                            )
                        self._seed_watch.joined()
                    logger.info(
                        "member %s %s (%s:%d)",
                        m.node.name,
                        output.kind,
                        m.address.host,
                        m.address.port,
                    )
                    if output.kind in ("failed", "left") and self._state == "running":
                        task = asyncio.get_running_loop().create_task(self.links.drop(m.node.name))
                        self._sends.add(task)
                        task.add_done_callback(self._sends.discard)
                for callback in list(self._subscribers):
                    try:
                        callback(output)
                    except Exception:
                        logger.exception("node event subscriber %r failed", callback)

    def _spawn_send(self, send: Send) -> None:
        if self._state != "running":
            return
        if len(self._sends) >= self._max_inflight:
            self.stats["overflow"] += 1
            logger.debug("dropping a message to %s: %d sends in flight", send.to, len(self._sends))
            return
        task = asyncio.get_running_loop().create_task(self._send(send))
        self._sends.add(task)
        task.add_done_callback(self._sends.discard)

    # -- the wire ------------------------------------------------------------------------------

    async def _send(self, send: Send) -> None:
        faults = self._faults
        target_name = (
            send.target.name if send.target is not None else f"{send.to.host}:{send.to.port}"
        )
        if faults is not None:
            if faults.blocks(self.name, target_name):
                return
            latency = faults.latency()
            if latency:
                await asyncio.sleep(latency)
        body = encode_envelope(self.me, self.address, send.message)
        scheme = "https" if self._client_ssl else "http"
        url = f"{scheme}://{_host_for_url(send.to.host)}:{send.to.port}{SWIM_PATH}"
        session = self._session
        assert session is not None
        for attempt in (1, 2):
            headers = (
                self.auth.sign(self.name, self.boot_id, f"POST {SWIM_PATH}", body)
                if self.auth
                else {}
            )
            try:
                async with session.post(url, data=body, headers=headers) as resp:
                    self.stats["sent"] += 1
                    self.stats["bytes_out"] += len(body)
                    if resp.status != 200:
                        if resp.status != 204:  # 503: stopping or unreachable, like a lost packet
                            reason = (await resp.text())[:200]
                            self._refused_by(send, target_name, resp.status, reason)
                        return
                    raw = await resp.content.read(MAX_MESSAGE_BYTES + 1)
                    self.stats["bytes_in"] += len(raw)
                    self._accept_replies(send, headers.get(H_NONCE, ""), resp.headers, raw)
                    return
            except aiohttp.ServerDisconnectedError:
                # A pooled keep-alive connection the peer had closed: not evidence of failure.
                if attempt == 2:
                    return
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                logger.debug("send to %s failed: %r", send.to, exc)
                if send.target is None:  # a join push-pull to a seed
                    self._seed_watch.failed(target_name, _describe(exc))
                return

    def _refused_by(self, send: Send, peer: str, status: int, reason: str) -> None:
        """A peer answered our message with an error status: a 401 means that the peer does
        not accept our cookie (or cluster label), which is a misconfiguration: ERROR, naming
        the peer (at most once per peer per 30 s)."""
        if send.target is None:
            self._seed_watch.failed(peer, f"HTTP {status} {reason}")
        if status == 503:
            logger.debug("%s refused our message: HTTP 503 %s", send.to, reason)
            return
        if status == 401:
            quiet = self._auth_log.allow(f"out:{peer}", asyncio.get_running_loop().time())
            if quiet is not None:
                logger.error(
                    "node %s (%s) rejected our cookie: HTTP 401 %s; check that every node of "
                    "cluster %r uses the same cookie%s",
                    peer,
                    send.to,
                    reason,
                    self.auth.cluster if self.auth else "?",
                    suppressed_note(quiet),
                )
            return
        logger.warning("%s refused our message: HTTP %d %s", send.to, status, reason)

    def _rejected(self, peer: str, where: str, exc: Exception) -> None:
        """We refused a peer's signature: ERROR naming the peer (throttled per peer)."""
        quiet = self._auth_log.allow(f"in:{peer}", asyncio.get_running_loop().time())
        if quiet is not None:
            logger.error(
                "refused %s from %s: %s; check that every node uses the same cookie and "
                "cluster label (and that clocks agree within the replay window)%s",
                where,
                peer,
                exc,
                suppressed_note(quiet),
            )

    def _accept_replies(
        self, send: Send, nonce: str, headers: Mapping[str, str], raw: bytes
    ) -> None:
        if self._state != "running" or self._machine is None:
            return
        try:
            if len(raw) > MAX_MESSAGE_BYTES:
                raise CodecError("reply too large")
            if self.auth is not None:
                signed = self.auth.verify(headers, f"REPLY {nonce}", raw)
            replies = _unpack_replies(raw)
            loop = asyncio.get_running_loop()
            for item in replies:
                sender, address, message = decode_envelope(item)
                if self.auth is not None and (signed.sender, signed.boot_id) != (
                    sender.name,
                    sender.boot_id,
                ):
                    raise Unauthorized(
                        f"reply signed by {signed.sender!r} claims to be {sender.name!r}"
                    )
                self._dispatch(self._machine.receive(sender, address, message, loop.time()))
        except Unauthorized as exc:
            self.stats["refused"] += 1
            self._rejected(f"{send.to}", "a reply", exc)
        except CodecError as exc:
            self.stats["refused"] += 1
            logger.warning("refused a reply from %s: %s", send.to, exc)
        self._kick.set()

    def _unauthenticated_remote(self, request: web.Request) -> web.Response | None:
        """Without a cookie only loopback peers may talk to this node (protected mode): a node
        served by a user's application cannot choose its bind address, so the rule is checked
        per request."""
        if self.auth is None and not _is_loopback(request.remote or ""):
            self.stats["refused"] += 1
            logger.warning(
                "refused %s from %s: this node has no cookie and accepts loopback peers only",
                request.path,
                request.remote,
            )
            return web.Response(status=403, text="node without a cookie: loopback peers only")
        return None

    async def _serve_link(self, request: web.Request) -> web.StreamResponse:
        refused = self._unauthenticated_remote(request)
        if refused is not None:
            return refused
        if self._state != "running":
            return web.Response(status=503, text="node is not running")
        return await self.links.serve(request)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.remote
        refused = self._unauthenticated_remote(request)
        if refused is not None:
            return refused
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            self.stats["refused"] += 1
            logger.warning("refused an oversized message from %s", peer)
            raise
        machine = self._machine
        if machine is None or self._state != "running":
            return web.Response(status=503, text="node is not running")
        self.stats["received"] += 1
        self.stats["bytes_in"] += len(body)
        signed = None
        if self.auth is not None:
            try:
                signed = self.auth.verify(request.headers, f"POST {SWIM_PATH}", body)
            except Unauthorized as exc:
                self.stats["refused"] += 1
                claimed = request.headers.get(H_SENDER, "?")[:100]
                self._rejected(f"{claimed!r} at {peer}", "a message", exc)
                return web.Response(status=401, text=str(exc))
        try:
            sender, address, message = decode_envelope(body)
        except CodecError as exc:
            self.stats["refused"] += 1
            logger.warning("refused a malformed message from %s: %s", peer, exc)
            return web.Response(status=400, text=str(exc))
        if signed is not None and (signed.sender, signed.boot_id) != (sender.name, sender.boot_id):
            self.stats["refused"] += 1
            logger.warning(
                "refused a message from %s: signed by %r but claims to be %r",
                peer,
                signed.sender,
                sender.name,
            )
            return web.Response(status=401, text="sender does not match its signature")
        if self._faults is not None and self._faults.blocks(self.name, sender.name):
            return web.Response(status=503, text="unreachable (fault injection)")
        loop = asyncio.get_running_loop()
        outputs = machine.receive(sender, address, message, loop.time())
        replies: list[bytes] = []
        rest: list[Any] = []
        for output in outputs:
            if isinstance(output, Send) and output.target == sender and output.to == address:
                replies.append(encode_envelope(self.me, self.address, output.message))
            else:
                rest.append(output)
        self._dispatch(rest)
        self._kick.set()
        if not replies:
            return web.Response(status=204)
        raw = msgpack.packb(replies, use_bin_type=True)
        headers = {}
        if self.auth is not None and signed is not None:
            headers = self.auth.sign(self.name, self.boot_id, f"REPLY {signed.nonce}", raw)
        self.stats["bytes_out"] += len(raw)
        return web.Response(body=raw, headers=headers, content_type="application/msgpack")


async def _strip_server_header(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.pop("Server", None)  # bytes on every probe, and tells nobody anything


def _unpack_replies(raw: bytes) -> list[bytes]:
    try:
        replies = msgpack.unpackb(raw, raw=False, max_bin_len=MAX_MESSAGE_BYTES, max_array_len=64)
    except Exception as exc:  # msgpack raises several unrelated types on bad input
        raise CodecError(f"malformed reply: {exc}") from None
    if not isinstance(replies, list) or not all(isinstance(r, bytes) for r in replies):
        raise CodecError("reply must be a list of messages")
    return replies


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if isinstance(exc, OSError) else f"{type(exc).__name__}: {text}"


def _host_for_url(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
