"""Signatures of outbound webhooks, as the Standard Webhooks spec defines them, so receivers
verify them with any of its libraries (the tests use the `standardwebhooks` package).

A request carries `webhook-id` (the event id, the same on every retry, for the receiver's
deduplication), `webhook-timestamp` (unix seconds) and `webhook-signature`: space-separated
`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, one per signing secret. While a
secret is rotated both the new and the previous secret sign, so a receiver configured with
either accepts the request and can switch without a failed delivery.

Secrets are `whsec_` + base64 of 24 to 64 random bytes; the HMAC key is the decoded bytes.
No function here logs or echoes a secret.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets as random
from collections.abc import Mapping, Sequence

PREFIX = "whsec_"
MIN_BYTES, MAX_BYTES = 24, 64
TOLERANCE_SECONDS = 300


class SignatureInvalid(Exception):
    """The request is not signed by any of the secrets, or its timestamp is too far off."""


def new_secret(length: int = 32) -> str:
    if not MIN_BYTES <= length <= MAX_BYTES:
        raise ValueError(f"a signing secret has {MIN_BYTES} to {MAX_BYTES} random bytes")
    return PREFIX + base64.b64encode(random.token_bytes(length)).decode()


def secret_key(secret: str) -> bytes:
    """The HMAC key a `whsec_…` secret stands for."""
    if not secret.startswith(PREFIX):
        raise ValueError("not a webhook signing secret (whsec_…)")
    try:
        key = base64.b64decode(secret.removeprefix(PREFIX), validate=True)
    except binascii.Error:
        raise ValueError("a webhook signing secret is base64 after whsec_") from None
    if not MIN_BYTES <= len(key) <= MAX_BYTES:
        raise ValueError(f"a webhook signing secret has {MIN_BYTES} to {MAX_BYTES} bytes")
    return key


def _signature(key: bytes, message_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{message_id}.{timestamp}.".encode() + body
    return "v1," + base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()


def sign(message_id: str, timestamp: int, body: bytes, secrets: Sequence[str]) -> dict[str, str]:
    """The three headers for `body`, signed by each secret in order (current first)."""
    if not secrets:
        raise ValueError("at least one signing secret is needed")
    if not message_id or not message_id.isprintable() or not message_id.isascii():
        raise ValueError("a webhook id is printable ASCII: it goes into a header")
    signatures = " ".join(_signature(secret_key(s), message_id, timestamp, body) for s in secrets)
    return {"webhook-id": message_id, "webhook-timestamp": str(timestamp), "webhook-signature": signatures}


def verify(
    headers: Mapping[str, str],
    body: bytes,
    secrets: Sequence[str],
    *,
    now: int,
    tolerance: int = TOLERANCE_SECONDS,
) -> str:
    """The message id, once one signature matches one secret and the timestamp is within
    `tolerance` seconds of `now` (what `nexus webhooks listen` checks)."""
    if not secrets:
        raise ValueError("at least one signing secret is needed")  # a configuration mistake
    lowered = {k.lower(): v for k, v in headers.items()}
    message_id = lowered.get("webhook-id", "")
    raw = lowered.get("webhook-timestamp", "")
    if not (raw.isascii() and raw.isdigit()):
        raise SignatureInvalid("webhook-timestamp is missing or not a number")
    timestamp = int(raw)
    if not message_id:
        raise SignatureInvalid("webhook-id is missing")
    if abs(now - timestamp) > tolerance:
        raise SignatureInvalid("webhook-timestamp is too far from now")
    # Compared as bytes: compare_digest refuses non-ASCII str, and a header may carry any.
    offered = [c.encode("utf-8", "replace") for c in lowered.get("webhook-signature", "").split()]
    for secret in secrets:
        expected = _signature(secret_key(secret), message_id, timestamp, body).encode()
        if any(hmac.compare_digest(expected, candidate) for candidate in offered):
            return message_id
    raise SignatureInvalid("no signature matches a configured secret")
