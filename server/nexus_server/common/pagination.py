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

Every listing pages the same way: `page_size` checks and bounds the size (50 by default,
1000 at most), the store fetches `size + 1` rows after `decode`'s key, and `page` cuts them
and mints the next token from the last row's key. A key is a short tuple of strings, ints
and datetimes; `decode` is told its shape, so what a handler unpacks is always well-typed.
Short lists held in memory (catalogs, roles) page by offset with `page_of`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, TypeVar

from nexus_server.common.errors import FieldViolation, InvalidArgument
from nexus_server.common.validation import Violations

DEFAULT_PAGE = 50
MAX_PAGE = 1000

T = TypeVar("T")
Part = str | int | datetime  # one element of a sort key

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


def page_size(requested: int, bad: Violations, field: str = "page_size") -> int:
    """The page size to fetch: 0 means the default, more than the maximum is the maximum
    (AIP-158); a negative size is a violation."""
    if requested < 0:
        bad.add(field, "must not be negative")
        return DEFAULT_PAGE
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


def _dump(part: Part) -> str | int:
    return part.isoformat() if isinstance(part, datetime) else part


def _load(value: Any, kind: type, field: str) -> Part:
    # bool is an int to Python; a key never holds one.
    if kind is int and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind is str and isinstance(value, str):
        return value
    if kind is datetime and isinstance(value, str):
        try:
            return datetime.fromisoformat(value)
        except ValueError:
            pass
    raise invalid(field)


def encode(rpc: str, query: Any, key: Sequence[Part]) -> str:
    """The token of the page after the row whose sort key is `key`."""
    return seal(rpc, query, [_dump(p) for p in key])


def decode(
    token: str, rpc: str, query: Any, shape: tuple[type, ...], *, field: str = "page_token"
) -> tuple[Any, ...] | None:
    """The sort key a token names, typed as `shape` (e.g. `(datetime, str)`), or None for
    the first page. Only a token this server minted for `rpc` and `query` opens."""
    key = open_token(token, rpc, query, field=field)
    if key is None:
        return None
    if not isinstance(key, list) or len(key) != len(shape):
        raise invalid(field)
    return tuple(_load(v, kind, field) for v, kind in zip(key, shape, strict=True))


def page(
    rows: Sequence[T], size: int, rpc: str, query: Any, key: Callable[[T], Sequence[Part]]
) -> tuple[list[T], str]:
    """The page of `rows` (fetched as `size + 1`, so one more means another page) and the
    token of the next page, "" after the last."""
    kept = list(rows[:size])
    return kept, encode(rpc, query, key(kept[-1])) if len(rows) > size else ""


def page_of(rpc: str, items: Sequence[T], page_size_: int, token: str, query: Any) -> tuple[list[T], str]:
    """A page of a short list held in memory (catalogs, roles): the key is an offset."""
    with Violations() as bad:
        size = page_size(page_size_, bad)
    after = decode(token, rpc, query, (int,))
    start = after[0] if after is not None else 0
    end = start + size
    return list(items[start:end]), encode(rpc, query, [end]) if end < len(items) else ""
