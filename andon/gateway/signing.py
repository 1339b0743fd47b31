"""HMAC-SHA256 request signing for MES webhooks.

The MES sends two headers with every request:

    X-Andon-Timestamp: 1795680000              (Unix seconds when it signed)
    X-Andon-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<raw body>" with the shared secret>

The gateway recomputes the HMAC (constant-time compare), refuses a timestamp more than
``max_skew`` seconds away from its clock, and refuses a signature it has seen before (a replay;
the outbox remembers signatures for the skew window, so a replay is refused across restarts
too). An MES that retries re-signs with a new timestamp; the retry then counts as a duplicate
of the same message id, not as a new event.

The secret comes from ``ANDON_MES_SECRET`` (never from a config file).

Example:
    >>> ts, sig = sign(b'{"type": "sku.introduced"}', "s3cret", timestamp=1795680000)
    >>> verify(b'{"type": "sku.introduced"}', ts, sig, "s3cret", now=1795680010) == sig
    True
"""

from __future__ import annotations

import hashlib
import hmac
import time

from andon.errors import AndonError

TIMESTAMP_HEADER = "X-Andon-Timestamp"
SIGNATURE_HEADER = "X-Andon-Signature"
MAX_SKEW_S = 300


class SignatureError(AndonError):
    """A request whose signature is missing, wrong or expired (HTTP 401); ``reason`` is one of
    unsigned, malformed_timestamp, expired, forged."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _mac(body: bytes, timestamp: str, secret: str) -> str:
    digest = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
    return f"sha256={digest}"


def sign(body: bytes, secret: str, timestamp: int | None = None) -> tuple[str, str]:
    """(timestamp header, signature header) for ``body``."""
    ts = str(int(time.time()) if timestamp is None else timestamp)
    return ts, _mac(body, ts, secret)


def headers(body: bytes, secret: str, timestamp: int | None = None) -> dict[str, str]:
    ts, sig = sign(body, secret, timestamp)
    return {TIMESTAMP_HEADER: ts, SIGNATURE_HEADER: sig, "Content-Type": "application/json"}


def verify(
    body: bytes, timestamp: str | None, signature: str | None, secret: str, now: float | None = None,
    max_skew: float = MAX_SKEW_S,
) -> str:  # fmt: skip
    """The verified signature (the replay key); SignatureError says what is wrong."""
    if not timestamp or not signature:
        raise SignatureError("unsigned", f"unsigned request: send {TIMESTAMP_HEADER} and {SIGNATURE_HEADER}")
    if not timestamp.isdigit():
        raise SignatureError("malformed_timestamp", f"{TIMESTAMP_HEADER} must be Unix seconds")
    now = time.time() if now is None else now
    if abs(now - int(timestamp)) > max_skew:
        off = now - int(timestamp)
        raise SignatureError("expired", f"expired: the timestamp is {off:+.0f} s off (max {max_skew:.0f} s)")
    if not hmac.compare_digest(_mac(body, timestamp, secret), signature.strip()):
        raise SignatureError("forged", "forged or corrupted: the signature does not match the body")
    return signature.strip()
