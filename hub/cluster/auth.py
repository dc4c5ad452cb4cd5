"""Authentication of peer traffic: HMAC-SHA256 with the cluster cookie.

Every request and every response carries a signature over the cluster label, the sender's name
and boot id, a timestamp, a random nonce, what the message is (method and path for a request;
the request's nonce for a response, so a response cannot be replayed or reflected) and the
SHA-256 of the body. A verifier refuses a wrong signature, a timestamp outside the skew window,
and a nonce it has already seen within the window (replay).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import NamedTuple

from ..errors import Unauthorized

__all__ = ["HEADERS", "Authenticator", "Signed"]

H_CLUSTER = "X-Processhub-Cluster"
H_SENDER = "X-Processhub-Sender"
H_BOOT = "X-Processhub-Boot"
H_TIME = "X-Processhub-Time"
H_NONCE = "X-Processhub-Nonce"
H_SIGNATURE = "X-Processhub-Signature"
HEADERS = (H_CLUSTER, H_SENDER, H_BOOT, H_TIME, H_NONCE, H_SIGNATURE)

MAX_FIELD = 256  # bytes of any one header value we accept


class Signed(NamedTuple):
    """Who a verified message came from."""

    sender: str
    boot_id: str
    nonce: str


class Authenticator:
    """Signs and verifies messages for one cluster.

    ``cookie`` is the shared secret (at least 16 bytes). ``window`` bounds clock skew and how
    long nonces are remembered; ``max_nonces`` bounds that memory: when it is full of nonces
    that are still inside the window, verification fails closed.
    """

    def __init__(
        self,
        cookie: str | bytes,
        cluster: str = "processhub",
        *,
        window: float = 30.0,
        max_nonces: int = 200_000,
        clock: Callable[[], float] = time.time,
    ) -> None:
        key = cookie.encode() if isinstance(cookie, str) else bytes(cookie)
        if len(key) < 16:
            raise ValueError("the cluster cookie must be at least 16 bytes long")
        if not cluster or len(cluster) > MAX_FIELD:
            raise ValueError("the cluster label must be 1 to 256 characters")
        self._key = key
        self.cluster = cluster
        self.window = window
        self._clock = clock
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._max_nonces = max_nonces

    def _mac(self, sender: str, boot_id: str, ts: str, nonce: str, what: str, body: bytes) -> str:
        digest = hashlib.sha256(body).hexdigest()
        material = "\n".join((self.cluster, sender, boot_id, ts, nonce, what, digest))
        return hmac.new(self._key, material.encode(), hashlib.sha256).hexdigest()

    def sign(self, sender: str, boot_id: str, what: str, body: bytes) -> dict[str, str]:
        """Headers that authenticate ``body`` as sent by ``sender`` (``what``: see module doc)."""
        ts = f"{self._clock():.3f}"
        nonce = secrets.token_hex(12)
        return {
            H_CLUSTER: self.cluster,
            H_SENDER: sender,
            H_BOOT: boot_id,
            H_TIME: ts,
            H_NONCE: nonce,
            H_SIGNATURE: self._mac(sender, boot_id, ts, nonce, what, body),
        }

    def verify(self, headers: Mapping[str, str], what: str, body: bytes) -> Signed:
        """Check the headers of a received message; raise :class:`Unauthorized` with the
        reason, or return who sent it."""
        values = []
        for name in HEADERS:
            value = headers.get(name)
            if not value:
                raise Unauthorized(f"missing {name} header")
            if len(value) > MAX_FIELD:
                raise Unauthorized(f"{name} header too long")
            values.append(value)
        cluster, sender, boot_id, ts, nonce, signature = values
        if cluster != self.cluster:
            raise Unauthorized(f"wrong cluster {cluster!r}")
        expected = self._mac(sender, boot_id, ts, nonce, what, body)
        if not hmac.compare_digest(expected, signature):
            raise Unauthorized(f"bad signature from {sender!r}")
        try:
            sent_at = float(ts)
        except ValueError:
            raise Unauthorized("malformed timestamp") from None
        now = self._clock()
        if not abs(now - sent_at) <= self.window:
            raise Unauthorized(
                f"timestamp {now - sent_at:+.1f}s outside the {self.window:.0f}s window"
            )
        self._remember(nonce, now)
        return Signed(sender, boot_id, nonce)

    def _remember(self, nonce: str, now: float) -> None:
        seen = self._seen
        horizon = now - self.window
        while seen:
            oldest, at = next(iter(seen.items()))
            if at >= horizon:
                break
            del seen[oldest]
        if nonce in seen:
            raise Unauthorized("replayed message (nonce already seen)")
        if len(seen) >= self._max_nonces:
            raise Unauthorized("too many messages within the replay window; refusing")
        seen[nonce] = now
