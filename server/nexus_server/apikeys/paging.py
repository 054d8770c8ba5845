"""Page tokens for ListApiKeys: the last position, sealed by common/pagination.py."""

from __future__ import annotations

from datetime import datetime

from nexus_server.common import pagination
from nexus_server.common.errors import FieldViolation, InvalidArgument

DEFAULT_PAGE = 50
MAX_PAGE = 1000


def page_size(requested: int) -> int:
    if requested < 0:
        raise InvalidArgument(FieldViolation("page_size", "must not be negative"))
    return min(requested or DEFAULT_PAGE, MAX_PAGE)


def encode(position: tuple[datetime, str], filters: str) -> str:
    time, key_id = position
    return pagination.seal("ListApiKeys", filters, [time.isoformat(), key_id])


def decode(token: str, filters: str) -> tuple[datetime, str] | None:
    """The position a token names; only tokens this server minted pass (pagination.py)."""
    position = pagination.open_token(token, "ListApiKeys", filters)
    if position is None:
        return None
    time, key_id = position
    return datetime.fromisoformat(time), key_id
