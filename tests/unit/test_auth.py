from __future__ import annotations

import pytest

from hub import Unauthorized
from hub.cluster.auth import H_SIGNATURE, H_TIME, Authenticator

COOKIE = "0123456789abcdef-secret"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def pair() -> tuple[Authenticator, Authenticator, Clock]:
    clock = Clock()
    return Authenticator(COOKIE, clock=clock), Authenticator(COOKIE, clock=clock), clock


def test_a_signed_message_verifies_and_names_its_sender() -> None:
    a, b, _ = pair()
    headers = a.sign("node-a", "boot1", "POST /swim", b"body")
    signed = b.verify(headers, "POST /swim", b"body")
    assert (signed.sender, signed.boot_id) == ("node-a", "boot1")


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        (lambda h, body, what: (h, b"other", what), "bad signature"),
        (lambda h, body, what: (h, body, "POST /other"), "bad signature"),
        (lambda h, body, what: ({**h, H_SIGNATURE: "0" * 64}, body, what), "bad signature"),
        (lambda h, body, what: ({**h, "X-Processhub-Sender": "mallory"}, body, what), "bad sig"),
        (lambda h, body, what: ({**h, "X-Processhub-Cluster": "x"}, body, what), "wrong cluster"),
        (
            lambda h, body, what: ({k: v for k, v in h.items() if k != H_TIME}, body, what),
            "missing",
        ),
    ],
)
def test_any_tampering_is_refused(tamper, reason) -> None:  # type: ignore[no-untyped-def]
    a, b, _ = pair()
    headers = a.sign("node-a", "boot1", "POST /swim", b"body")
    h, body, what = tamper(headers, b"body", "POST /swim")
    with pytest.raises(Unauthorized, match=reason):
        b.verify(h, what, body)


def test_a_wrong_cookie_is_refused() -> None:
    clock = Clock()
    mallory = Authenticator("not-the-cookie-at-all", clock=clock)
    b = Authenticator(COOKIE, clock=clock)
    with pytest.raises(Unauthorized, match="bad signature"):
        b.verify(mallory.sign("node-a", "b", "w", b""), "w", b"")


def test_replays_are_refused_within_the_window() -> None:
    a, b, clock = pair()
    headers = a.sign("node-a", "boot1", "w", b"x")
    b.verify(headers, "w", b"x")
    with pytest.raises(Unauthorized, match="replayed"):
        b.verify(headers, "w", b"x")
    clock.now += 31  # and after the window, the timestamp itself is refused
    with pytest.raises(Unauthorized, match="outside"):
        b.verify(headers, "w", b"x")


def test_skewed_timestamps_are_refused_both_ways() -> None:
    a, b, clock = pair()
    headers = a.sign("node-a", "boot1", "w", b"x")
    clock.now -= 60
    with pytest.raises(Unauthorized, match="outside"):
        b.verify(headers, "w", b"x")


def test_the_nonce_memory_is_bounded_and_fails_closed() -> None:
    clock = Clock()
    a = Authenticator(COOKIE, clock=clock)
    b = Authenticator(COOKIE, clock=clock, max_nonces=3)
    for _ in range(3):
        b.verify(a.sign("n", "b", "w", b""), "w", b"")
    with pytest.raises(Unauthorized, match="too many"):
        b.verify(a.sign("n", "b", "w", b""), "w", b"")
    clock.now += 31  # old nonces expire and make room
    b.verify(a.sign("n", "b", "w", b""), "w", b"")


def test_short_cookies_are_rejected() -> None:
    with pytest.raises(ValueError, match="16 bytes"):
        Authenticator("short")
