"""Opaque page tokens for ListApiKeys: the last position, bound to the filters that made it."""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import datetime

from nexus_server.common.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE = 50
MAX_PAGE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument(FieldViolation("page_size", "must not be negative"))
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


def _fingerprint(filters: str) -> str:
    return hashlib.sha256(filters.encode()).hexdigest()[:16]


def encode(position: tuple[datetime, str], filters: str) -> str:
    time, key_id = position
    raw = json.dumps({"t": time.isoformat(), "i": key_id, "f": _fingerprint(filters)})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode(token: str, filters: str) -> tuple[datetime, str] | None:
    if not token:
        return None
    bad = InvalidArgument(
        FieldViolation("page_token", "is malformed or came from a request with other filters"),
        reason="PAGE_TOKEN_INVALID",
    )
    try:
        raw = json.loads(base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)))
        time = datetime.fromisoformat(raw["t"])
        key_id, fingerprint = raw["i"], raw["f"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(key_id, str) or fingerprint != _fingerprint(filters) or time.tzinfo is None:
        raise bad
    return time, key_id
