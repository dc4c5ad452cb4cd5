"""Bad input against a real node endpoint: each refused with a 4xx and a log line; the node
keeps serving."""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator

import aiohttp
import msgpack
import pytest

from hub.cluster.auth import Authenticator
from hub.cluster.codec import MAX_MESSAGE_BYTES, decode_envelope, encode_envelope
from hub.cluster.messages import Address, NodeId, Ping
from hub.cluster.node import SWIM_PATH, Node

COOKIE = "bad-input-cookie-0123456789"
WHAT = f"POST {SWIM_PATH}"


@pytest.fixture
async def node() -> AsyncIterator[Node]:
    async with Node("target", cookie=COOKIE, preset="local") as n:
        yield n


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
        yield session


def url(node: Node) -> str:
    return f"http://127.0.0.1:{node.address.port}{SWIM_PATH}"


def ping_for(node: Node, sender: str = "prober") -> bytes:
    return encode_envelope(NodeId(sender, "boot-p"), Address("127.0.0.1", 9), Ping(1, node.me, ()))


async def post(
    http: aiohttp.ClientSession,
    node: Node,
    body: bytes,
    *,
    auth: Authenticator | None = None,
    sender: str = "prober",
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    if headers is None:
        headers = (auth or Authenticator(COOKIE)).sign(sender, "boot-p", WHAT, body)
    async with http.post(url(node), data=body, headers=headers) as resp:
        return resp.status, await resp.read()


async def assert_still_serving(http: aiohttp.ClientSession, node: Node) -> None:
    status, raw = await post(http, node, ping_for(node))
    assert status == 200
    replies = msgpack.unpackb(raw, raw=False)
    sender, _, message = decode_envelope(replies[0])
    assert sender == node.me
    assert type(message).__name__ == "Ack"


@pytest.mark.parametrize(
    "body",
    [
        os.urandom(200),
        b"\x94\x01\x92",  # an array that ends early
        msgpack.packb([1, ["prober", "boot-p"], ["127.0.0.1", "9"], [0, 1, ["t", "b"], []]]),
        msgpack.packb([1, ["prober", "boot-p"], ["127.0.0.1", 9], [99, 1]]),
        msgpack.packb({"not": "an envelope"}),
        b"",
    ],
    ids=["random-bytes", "cut-short", "port-as-string", "unknown-type", "map", "empty"],
)
async def test_malformed_bodies_get_400_and_a_log_line(
    node: Node, http: aiohttp.ClientSession, body: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hub.cluster.node"):
        status, _ = await post(http, node, body)
    assert status == 400
    assert any("malformed" in r.getMessage() for r in caplog.records)
    await assert_still_serving(http, node)


async def test_a_truncated_valid_message_gets_400(node: Node, http: aiohttp.ClientSession) -> None:
    body = ping_for(node)
    status, _ = await post(http, node, body[: len(body) // 2])
    assert status == 400
    await assert_still_serving(http, node)


async def test_oversized_bodies_get_413(node: Node, http: aiohttp.ClientSession) -> None:
    status, _ = await post(http, node, b"\x00" * (MAX_MESSAGE_BYTES + 10))
    assert status == 413
    await assert_still_serving(http, node)


async def test_a_wrong_cookie_gets_401(
    node: Node, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="hub.cluster.node"):
        status, _ = await post(http, node, ping_for(node), auth=Authenticator("x" * 20))
    assert status == 401
    assert any("bad signature" in r.getMessage() for r in caplog.records)
    await assert_still_serving(http, node)


async def test_a_missing_signature_gets_401(node: Node, http: aiohttp.ClientSession) -> None:
    status, _ = await post(http, node, ping_for(node), headers={})
    assert status == 401


async def test_a_replayed_message_gets_401(node: Node, http: aiohttp.ClientSession) -> None:
    body = ping_for(node)
    headers = Authenticator(COOKIE).sign("prober", "boot-p", WHAT, body)
    assert (await post(http, node, body, headers=headers))[0] == 200
    status, text = await post(http, node, body, headers=headers)
    assert status == 401
    assert b"replayed" in text
    await assert_still_serving(http, node)


async def test_a_skewed_timestamp_gets_401(node: Node, http: aiohttp.ClientSession) -> None:
    import time

    late = Authenticator(COOKIE, clock=lambda: time.time() - 120)
    status, text = await post(http, node, ping_for(node), auth=late)
    assert status == 401
    assert b"outside" in text


async def test_a_sender_that_does_not_match_its_signature_gets_401(
    node: Node, http: aiohttp.ClientSession
) -> None:
    status, _ = await post(http, node, ping_for(node, sender="alice"), sender="mallory")
    assert status == 401


async def test_a_node_without_a_cookie_serves_loopback_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with caplog.at_level(logging.WARNING, logger="hub.cluster.node"):
        node = Node("open", host="0.0.0.0", preset="local")
    assert node.host == "127.0.0.1"
    assert any("loopback" in r.getMessage() for r in caplog.records)
