"""Peer links between two real nodes on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from typing import Any

import pytest

from hub import HubError, NotFound, Timeout
from hub.cluster.links import MAX_ERROR_CHARS, MAX_FRAME_BYTES, LinkError, RemoteError
from hub.cluster.messages import NodeId
from hub.cluster.node import Node
from tests.conftest import wait_until

COOKIE = "links-cookie-0123456789abcdef"


@pytest.fixture
async def pair() -> AsyncIterator[tuple[Node, Node]]:
    a = await Node("a", cookie=COOKIE, preset="local").start()
    b = await Node(
        "b", cookie=COOKIE, preset="local", seeds=[f"127.0.0.1:{a.address.port}"]
    ).start()
    try:
        await wait_until(lambda: {m.node.name for m in a.alive()} == {"a", "b"})
        await wait_until(lambda: {m.node.name for m in b.alive()} == {"a", "b"})
        yield a, b
    finally:
        await b.stop()
        await a.stop()


async def test_requests_are_answered_and_one_way_frames_arrive_in_order(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    seen: list[Any] = []

    async def handler(peer: NodeId, kind: str, payload: Any) -> Any:
        if kind == "echo":
            return {"from": peer.name, "got": payload}
        seen.append(payload)
        return None

    b.links.register("h", handler)
    assert await a.links.request("b", "h", "echo", [1, "x"], timeout=5) == {
        "from": "a",
        "got": [1, "x"],
    }
    for i in range(500):
        await a.links.send("b", "h", "note", i)
    await wait_until(lambda: len(seen) == 500)
    assert seen == list(range(500))


async def test_errors_and_unknown_hubs_come_back_as_remote_errors(pair: tuple[Node, Node]) -> None:
    a, b = pair

    async def handler(peer: NodeId, kind: str, payload: Any) -> Any:
        raise NotFound(payload)

    b.links.register("h", handler)
    with pytest.raises(RemoteError, match="NotFound"):
        await a.links.request("b", "h", "x", "child-7", timeout=5)
    with pytest.raises(RemoteError, match="hub 'nope'"):
        await a.links.request("b", "nope", "x", None, timeout=5)


async def test_a_silent_peer_times_out_precisely(pair: tuple[Node, Node]) -> None:
    a, b = pair

    async def handler(peer: NodeId, kind: str, payload: Any) -> Any:
        await asyncio.Event().wait()

    b.links.register("h", handler)
    with pytest.raises(Timeout, match=r"did not answer 'slow' within 0\.2s"):
        await a.links.request("b", "h", "slow", None, timeout=0.2)
    with pytest.raises(NotFound):
        await a.links.request("ghost", "h", "x", None, timeout=1)


async def test_a_wrong_cookie_cannot_link() -> None:
    a = await Node("a", cookie=COOKIE, preset="local").start()
    try:
        mallory = Node("m", cookie="another-cookie-0123456789", preset="local")
        await mallory.start()
        try:
            mallory.links._resolve = lambda name: (a.me, a.address)  # type: ignore[method-assign]
            with pytest.raises(LinkError, match="401"):
                await mallory.links.request("a", "h", "x", None, timeout=2)
        finally:
            await mallory.stop()
    finally:
        await a.stop()


async def test_pending_requests_fail_at_once_when_the_peer_goes_away(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    started = asyncio.Event()

    async def handler(peer: NodeId, kind: str, payload: Any) -> Any:
        started.set()
        await asyncio.Event().wait()

    b.links.register("h", handler)
    call = asyncio.ensure_future(a.links.request("b", "h", "slow", None, timeout=30))
    await started.wait()
    await b.stop(leave=False)
    with pytest.raises(LinkError):
        await call


@pytest.fixture
async def loop_errors() -> AsyncIterator[list[dict[str, Any]]]:
    """What reaches the loop's exception handler ("Task exception was never retrieved"...)."""
    loop = asyncio.get_running_loop()
    errors: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: errors.append(context))
    yield errors
    loop.set_exception_handler(previous)


@pytest.mark.parametrize(
    ("reply", "why"),
    [
        (object(), "can not serialize 'object' object"),
        ({1, 2}, "can not serialize 'set' object"),
        (b"x" * (MAX_FRAME_BYTES + 1), f"exceeds {MAX_FRAME_BYTES}"),
    ],
    ids=["object", "set", "too-large"],
)
async def test_a_reply_that_cannot_be_sent_is_answered_with_call_failed(
    pair: tuple[Node, Node], loop_errors: list[dict[str, Any]], reply: Any, why: str
) -> None:
    a, b = pair

    async def handler(peer: NodeId, kind: str, payload: Any) -> Any:
        return reply if kind == "bad" else payload

    b.links.register("h", handler)
    with pytest.raises(RemoteError) as caught:
        await a.links.request("b", "h", "bad", None, timeout=5)
    assert caught.value.kind == "CallFailed"
    assert "the reply to 'bad' could not be encoded" in caught.value.message
    assert why in caught.value.message
    assert await a.links.request("b", "h", "ok", [1], timeout=5) == [1]  # the link still works
    gc.collect()  # an unretrieved task exception is reported when the task is collected
    assert loop_errors == []


async def test_an_error_response_carries_a_bounded_message(pair: tuple[Node, Node]) -> None:
    a, b = pair

    async def handler(peer: NodeId, kind: str, payload: Any) -> Any:
        raise HubError("x" * (10 * MAX_ERROR_CHARS))

    b.links.register("h", handler)
    with pytest.raises(RemoteError) as caught:
        await a.links.request("b", "h", "x", None, timeout=5)
    assert caught.value.kind == "HubError"
    assert caught.value.message == "x" * MAX_ERROR_CHARS + "..."


async def test_queued_frames_are_merged_into_messages_of_at_most_merge_bytes(
    pair: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The writer merges what is queued (fewer messages), but never beyond ``MERGE_BYTES``
    unless one frame is larger by itself: the receiver decodes a message in one go."""
    from hub.cluster import links as links_module
    from hub.cluster.links import MERGE_BYTES

    a, b = pair
    messages: list[tuple[int, int]] = []  # (bytes, frames) per websocket message received
    decode = links_module._frames

    def spy(data: bytes) -> list[list[Any]]:
        frames = decode(data)
        messages.append((len(data), len(frames)))
        return frames

    monkeypatch.setattr(links_module, "_frames", spy)
    seen: list[int] = []

    async def handler(peer: NodeId, kind: str, payload: Any) -> None:
        seen.append(len(payload))

    b.links.register("h", handler)
    await a.links.request("b", "h", "note", "", timeout=5)  # the link is up
    messages.clear()
    sizes = [100_000] * 40 + [3 * MERGE_BYTES]  # 4 MB of small frames, then one large one
    await asyncio.gather(*(a.links.send("b", "h", "note", "x" * n) for n in sizes))
    await wait_until(lambda: len(seen) >= len(sizes) + 1)
    assert sorted(seen[1:]) == sorted(sizes)
    assert any(frames > 1 for _, frames in messages)  # merged
    assert all(size <= MERGE_BYTES + 64 or frames == 1 for size, frames in messages)


async def test_a_bytes_payload_is_a_payload_and_a_packed_frame_goes_as_it_is(
    pair: tuple[Node, Node],
) -> None:
    a, b = pair
    seen: list[Any] = []

    async def handler(peer: NodeId, kind: str, payload: Any) -> None:
        seen.append((kind, payload))

    b.links.register("h", handler)
    await a.links.send("b", "h", "raw", b"\x93\x01\x02")  # bytes that look like msgpack
    await a.links.send("b", "h", "ignored", a.links.pack("h", "packed", [1, 2]))
    await wait_until(lambda: len(seen) == 2)
    assert seen == [("raw", b"\x93\x01\x02"), ("packed", [1, 2])]


async def test_a_link_that_closes_while_it_opens_is_not_an_aiohttp_traceback(
    pair: tuple[Node, Node], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """Under load a peer can give up on a link while this node is still upgrading it (the
    upgrade was written, the connection then broke): that is a debug line here, not an
    "Unhandled exception" traceback from aiohttp finishing a half-prepared websocket."""
    from aiohttp import web

    a, b = pair
    real = web.WebSocketResponse._post_start
    broken: list[bool] = []

    def breaks(self: web.WebSocketResponse, request: Any, *args: Any) -> Any:
        if not broken:
            broken.append(True)
            assert request.transport is not None
            request.transport.close()
            raise ConnectionResetError("peer gone")
        return real(self, request, *args)

    monkeypatch.setattr(web.WebSocketResponse, "_post_start", breaks)

    async def echo(peer: NodeId, kind: str, payload: Any) -> Any:
        return payload

    b.links.register("h", echo)
    with caplog.at_level("DEBUG"):
        with contextlib.suppress(HubError):  # this link broke as it opened
            await a.links.request("b", "h", "echo", 1, timeout=2)
        assert broken == [True]
        assert await a.links.request("b", "h", "echo", 2, timeout=5) == 2  # the next one opens
    assert any("closed before it opened" in r.getMessage() for r in caplog.records)
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert errors == []
