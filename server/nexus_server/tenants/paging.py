"""Page tokens for the tenant RPCs: the last row's sort key, sealed by common/pagination.py.

Keyset paging keeps pages stable while rows are added; the seal makes a token from one
RPC or query useless for another, and a forged one useless everywhere (PAGE_TOKEN_INVALID).
"""

from __future__ import annotations

from typing import Any, TypeVar

from nexus_server.common import pagination

T = TypeVar("T")


def encode(rpc: str, filters: Any, key: list[str]) -> str:
    return pagination.seal(rpc, filters, key)


def decode(rpc: str, token: str, filters: Any, size: int) -> list[str] | None:
    """The sort key after which the page starts, or None for the first page. Only a token
    this server minted for `rpc` and these filters passes (pagination.py), so its parts
    need no further checks."""
    key = pagination.open_token(token, rpc, filters)
    if key is None:
        return None
    if not isinstance(key, list) or len(key) != size or not all(isinstance(k, str) for k in key):
        raise pagination.invalid()
    return [str(k) for k in key]


def page_of(rpc: str, items: list[T], page_size: int, token: str, filters: Any) -> tuple[list[T], str]:
    """A page of a short list held in memory (catalogs, roles): the token is an offset."""
    from nexus_server.tenants.rules import page_size as checked_size
    from nexus_server.tenants.rules import raise_if

    size, violations = checked_size(page_size)
    raise_if(violations)
    after = decode(rpc, token, filters, 1)
    start = int(after[0]) if after is not None and after[0].isdigit() else 0
    end = start + size
    return items[start:end], encode(rpc, filters, [str(end)]) if end < len(items) else ""
