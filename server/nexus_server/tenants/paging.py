"""Opaque page tokens: the last row's sort key and a fingerprint of the query's filters.

Keyset paging keeps pages stable while rows are added; the fingerprint makes a token
from one query useless for another (PAGE_TOKEN_INVALID), as the contract asks.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime
from typing import Any, TypeVar

from nexus_server.common.errors import FieldViolation, InvalidArgument

T = TypeVar("T")


def _fingerprint(filters: Any) -> str:
    return hashlib.sha256(json.dumps(filters, sort_keys=True, default=str).encode()).hexdigest()[:16]


def encode(filters: Any, key: list[str]) -> str:
    body = json.dumps({"f": _fingerprint(filters), "k": key}, separators=(",", ":"))
    return base64.urlsafe_b64encode(body.encode()).decode().rstrip("=")


def decode(token: str, filters: Any, size: int, *, times: tuple[int, ...] = ()) -> list[str] | None:
    """The sort key after which the page starts, or None for the first page. Tokens can be
    forged, so every part is checked: printable ASCII, and ISO times at `times`."""
    if not token:
        return None
    try:
        if len(token) > 2048:
            raise ValueError("too long")
        body = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        key = body["k"]
        if body["f"] != _fingerprint(filters) or not isinstance(key, list) or len(key) != size:
            raise ValueError("other query")
        if not all(isinstance(k, str) and k.isascii() and k.isprintable() and len(k) <= 200 for k in key):
            raise ValueError("bad key")
        if any(datetime.fromisoformat(key[i]).tzinfo is None for i in times):
            raise ValueError("naive time")
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise InvalidArgument(
            FieldViolation("page_token", "is malformed or belongs to another query"),
            reason="PAGE_TOKEN_INVALID",
        ) from None
    return [str(k) for k in key]


def page_of(items: list[T], page_size: int, token: str, filters: Any) -> tuple[list[T], str]:
    """A page of a short list held in memory (catalogs, roles): the token is an offset."""
    from nexus_server.tenants.rules import page_size as checked_size
    from nexus_server.tenants.rules import raise_if

    size, violations = checked_size(page_size)
    raise_if(violations)
    after = decode(token, filters, 1)
    start = int(after[0]) if after is not None and after[0].isdigit() else 0
    if after is not None and not after[0].isdigit():
        raise InvalidArgument(FieldViolation("page_token", "is malformed"), reason="PAGE_TOKEN_INVALID")
    end = start + size
    return items[start:end], encode(filters, [str(end)]) if end < len(items) else ""
