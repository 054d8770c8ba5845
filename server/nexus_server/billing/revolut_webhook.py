"""Revolut Merchant webhooks: is this body Revolut's, and what does it say.

There is no official Revolut Python package (neither for the API nor for webhooks), so this is
written against Revolut's documented scheme:

- `Revolut-Request-Timestamp` is the delivery time in unix *milliseconds*;
- `Revolut-Signature` is one or more comma-separated `v1=<hex>` values: Revolut signs with every
  signing secret active at that moment, so a rotation (old secret kept for its expiration period)
  sends one value for each;
- each value is HMAC-SHA256, keyed with the webhook's signing secret (`wsk_…`), over the bytes
  `v1.{timestamp}.{raw body}`: the body exactly as received, never re-serialised.

An event is accepted when its timestamp is within `tolerance_ms` of now (5 minutes, as Revolut
recommends; this bounds replays) and any signature matches any configured secret, so Nexus can
hold both secrets during its own rotation. Comparisons are constant-time (`hmac.compare_digest`).

The verified body is only a notification (`{"event": "ORDER_COMPLETED", "order_id": ...,
"merchant_order_ext_ref": ...}`): the handler re-reads the order from the API before crediting
anything, so the body's other fields are never trusted for amounts or state.

Error messages say what failed, never a secret or an expected signature.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Sequence
from typing import Any

VERSION = "v1"  # the only signature scheme Revolut documents; values of other versions are skipped
DEFAULT_TOLERANCE_MS = 300_000


class WebhookError(Exception):
    """A webhook Nexus will not act on; the message holds no secret."""


class SignatureInvalid(WebhookError):
    """Not signed by Revolut with a configured secret, or signed too long ago (or ahead)."""


class NotAnEvent(WebhookError):
    """Signed, but not a JSON object with a string `event` and `order_id`."""


def verified_event(
    payload: bytes,
    signature: str,
    timestamp: str,
    secrets: Sequence[str],
    *,
    now_ms: int | None = None,
    tolerance_ms: int = DEFAULT_TOLERANCE_MS,
) -> dict[str, Any]:
    """The event in `payload` once its `Revolut-Signature` (`signature`) and
    `Revolut-Request-Timestamp` (`timestamp`) headers prove it Revolut's and recent."""
    stamp = timestamp.strip()
    signed_at = _timestamp(stamp)
    now = int(time.time() * 1000) if now_ms is None else now_ms
    if abs(now - signed_at) > tolerance_ms:
        raise SignatureInvalid(
            f"the Revolut-Request-Timestamp is {abs(now - signed_at) // 1000} s away from now, "
            f"more than the {tolerance_ms // 1000} s allowed"
        )
    given = _signatures(signature)
    if not given:
        raise SignatureInvalid(f"the Revolut-Signature header holds no {VERSION}= signature")
    usable = [secret for secret in secrets if secret]
    if not usable:
        raise SignatureInvalid("no Revolut webhook signing secret is configured")
    # The header as sent, not the parsed number: Revolut signed its text.
    message = f"{VERSION}.{stamp}.".encode() + payload
    # Every pair is compared, matched or not, so the time taken says nothing about which matched.
    matched = False
    for secret in usable:
        expected = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest().encode()
        for value in given:
            matched |= hmac.compare_digest(expected, value)
    if not matched:
        raise SignatureInvalid("no Revolut-Signature value matches a configured signing secret")
    return _event(payload)


def _timestamp(value: str) -> int:
    if not value.isascii() or not value.isdigit():
        raise SignatureInvalid("the Revolut-Request-Timestamp header is not unix milliseconds")
    return int(value)


def _signatures(header: str) -> list[bytes]:
    """The hex digests of the header's `v1=` values, lower-cased; other versions are skipped."""
    found: list[bytes] = []
    for part in header.split(","):
        version, _, value = part.strip().partition("=")
        if version == VERSION and value:
            # Bytes, not str: compare_digest refuses non-ASCII str, and a header may hold anything.
            found.append(value.strip().lower().encode("utf-8", "replace"))
    return found


def _event(payload: bytes) -> dict[str, Any]:
    try:
        event = json.loads(payload)
    except ValueError:  # JSONDecodeError and UnicodeDecodeError both are
        raise NotAnEvent("the webhook body is not JSON") from None
    if not isinstance(event, dict):
        raise NotAnEvent("the webhook body is not a JSON object")
    for name in ("event", "order_id"):
        if not isinstance(event.get(name), str) or not event[name]:
            raise NotAnEvent(f"the webhook body has no string `{name}`")
    return event
