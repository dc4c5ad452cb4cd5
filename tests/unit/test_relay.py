"""The relay of messages for children that left a node (pure bookkeeping, virtual time)."""

from __future__ import annotations

import pytest

from hub import MailboxFull
from hub.relay import Relay


def relay(limit: int = 3) -> Relay:
    return Relay(limit=limit, hold_for=30.0, forward_for=10.0)


def test_held_messages_go_to_where_the_child_went_in_order_after_the_moved_mailbox() -> None:
    r = relay(limit=10)
    r.hold("c", [], now=0.0, moving=True)
    assert r.offer("c", "m3") == ""  # held here
    r.prepend("c", ["m1", "m2"])  # the old mailbox's leftovers go first
    assert r.offer("c", "m4") == ""
    # the move carried the two leftovers itself: only what came after is forwarded
    assert r.forward("c", "b", now=1.0, skip=2) == ["m3", "m4"]
    assert r.offer("c", "m5") == "b"  # from now on: forwarded at once
    assert r.target("c") == "b"


def test_a_held_stub_is_bounded_and_says_so() -> None:
    r = relay(limit=2)
    r.hold("c", ["a"], now=0.0, moving=True)
    r.offer("c", "b")
    with pytest.raises(MailboxFull):
        r.offer("c", "c")


def test_a_failed_move_keeps_the_messages_until_the_child_shows_up_or_their_time_is_up() -> None:
    r = relay()
    r.hold("c", ["a"], now=0.0, moving=True)
    assert r.waiting() == []  # the move in flight resolves it
    r.give_up("c")
    assert r.waiting() == ["c"]
    assert r.expire(now=29.0) == []
    assert r.expire(now=31.0) == [("c", 1)]  # dropped, and counted
    assert "c" not in r


def test_a_forwarding_stub_expires_silently_and_a_new_hold_replaces_it() -> None:
    r = relay()
    r.hold("c", [], now=0.0, moving=True)
    r.forward("c", "b", now=0.0)
    r.hold("c", ["x"], now=5.0, moving=True)  # it moves on from here again
    assert r.target("c") is None
    assert r.offer("c", "y") == ""
    assert r.release("c") == ["x", "y"]
    r.hold("d", [], now=0.0, moving=True)
    r.forward("d", "b", now=0.0)
    assert r.expire(now=11.0) == []  # nothing held: nothing lost
    assert len(r) == 0


def test_no_stub_means_not_the_relays_message() -> None:
    assert relay().offer("unknown", "m") is None


async def test_forwarded_messages_keep_their_order_and_one_that_cannot_travel_is_counted() -> None:
    from typing import Any

    from hub import Hub
    from hub.messaging import Messenger

    sent: list[tuple[str, str, Any]] = []

    async def send(node: str, kind: str, payload: Any) -> bool:
        sent.append((node, kind, payload))
        return True

    async def request(node: str, kind: str, payload: Any, timeout: float) -> Any:
        return None

    def route(child_id: str) -> str:
        return "b"

    async with Hub("h", host=None) as hub:
        messenger = Messenger(
            "h",
            hub.runtime,
            send=send,
            request=request,
            route=route,
            expects=lambda cid: True,
            hold_for=30.0,
            forward_for=10.0,
        )
        messenger.forward("b", "c", [1, object(), 2], 0)
        messenger.forward("b", "c", [3], 0)
        await messenger.flushed("b")
    assert sent == [("b", "casts", [["c", 1, 0], ["c", 2, 0], ["c", 3, 0]])]
    assert messenger.lost == 1  # the object() could not travel: dropped, counted, logged
