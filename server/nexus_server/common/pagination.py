"""Page tokens: opaque, authenticated, bound to the RPC and query that made them.

A page token carries a position (the last row's sort key) that the next query starts after.
Clients can send anything as a token, so a token is only believed if this server made it:
the payload is followed by an HMAC-SHA256 tag under a key derived from NEXUS_SECRET_KEY,
checked in constant time before anything in it is parsed. A forged, truncated or altered
token, or one minted for another RPC or other filters, is INVALID_ARGUMENT with reason
PAGE_TOKEN_INVALID before any query runs, so no hostile value (a year 10000, a NUL in an
id) ever reaches the database.

Replicas share the key because they share NEXUS_SECRET_KEY. Tokens are not sealed for
secrecy (a position is the caller's own data) and do not survive a rotation of the secret
key: a client mid-way through a listing starts again from the first page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from typing import Any

from nexus_server.common.errors import FieldViolation, InvalidArgument

_TAG = 16  # bytes of HMAC-SHA256 kept: 128 bits, far beyond guessing
_MAX_TOKEN = 2048  # characters; real tokens are under 200
_VERSION = 1

# One key per process. `configure` sets it from the secret key when the server is built;
# the random default keeps tokens working (within one process) for code that runs without
# a server, such as unit tests.
_key = os.urandom(32)


def configure(secret_key: str) -> None:
    """Derive the page-token key from the server's secret key (a label keeps it apart from
    the keys sealing.py derives for other purposes)."""
    global _key
    _key = hmac.new(secret_key.encode(), b"nexus page tokens v1", hashlib.sha256).digest()


def _fingerprint(query: Any) -> str:
    canonical = json.dumps(query, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _mac(body: bytes) -> bytes:
    return hmac.new(_key, body, hashlib.sha256).digest()[:_TAG]


def invalid(field: str = "page_token") -> InvalidArgument:
    return InvalidArgument(
        FieldViolation(field, "is not a page token this RPC returned for this query"),
        reason="PAGE_TOKEN_INVALID",
    )


def seal(rpc: str, query: Any, position: Any) -> str:
    """A token for the page after `position` (JSON-serialisable) of `rpc` run with `query`."""
    body = json.dumps([_VERSION, rpc, _fingerprint(query), position], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(body + _mac(body)).decode().rstrip("=")


def open_token(token: str, rpc: str, query: Any, *, field: str = "page_token") -> Any:
    """The position a token of `rpc` carries, or None for an empty token (the first page).
    Anything this server did not mint for this RPC and query is PAGE_TOKEN_INVALID."""
    if not token:
        return None
    if len(token) > _MAX_TOKEN:
        raise invalid(field)
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        raise invalid(field) from None
    body, tag = raw[:-_TAG], raw[-_TAG:]
    if len(raw) <= _TAG or not hmac.compare_digest(tag, _mac(body)):
        raise invalid(field)
    try:
        version, minted_for, fingerprint, position = json.loads(body)
    except (ValueError, TypeError):  # cannot happen for a token we minted; kept for safety
        raise invalid(field) from None
    if version != _VERSION or minted_for != rpc or fingerprint != _fingerprint(query):
        raise invalid(field)
    return position
