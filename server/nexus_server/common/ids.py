"""Type-prefixed, time-sortable base62 identifiers (`usr_…`, `ten_…`, `evt_…`).

Layout: prefix + 9 base62 chars of milliseconds since the epoch (sortable until the year
~8800) + 13 base62 chars of randomness (~77 bits), so ids sort by creation time and a
B-tree index on them stays append-mostly.
"""

from __future__ import annotations

import secrets
import time
from datetime import datetime

ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_INDEX = {c: i for i, c in enumerate(ALPHABET)}
_CHARS = frozenset(ALPHABET)
_TIME_CHARS = 9
_RANDOM_CHARS = 13
# API.md's prefixes, plus ivt_ (invitations: inv_ is invoices), dlv_ (webhook deliveries),
# rvk_ (revocation feed rows) and key_ (signing keys).
PREFIXES = frozenset(
    {"usr", "ten", "ses", "evt", "sub", "whk", "inv", "txn", "rol", "grp", "req"}
    | {"ivt", "dlv", "rvk", "key"}
    | {"cs", "bps"}  # the local payment provider's checkout and portal sessions
    | {"rsv", "cpu"}  # credit reservations and purchases
)


def encode(number: int, width: int) -> str:
    chars = []
    for _ in range(width):
        number, rem = divmod(number, 62)
        chars.append(ALPHABET[rem])
    if number:
        raise ValueError("number too large for width")
    return "".join(reversed(chars))


def random_base62(length: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(length))


def new_id(prefix: str, *, now_ms: int | None = None, at: datetime | None = None) -> str:
    """A new id of `prefix`, ordered by its time: `at` (the unit of work's clock, so ids sort
    with the rows' own timestamps), `now_ms`, or the wall clock."""
    if prefix not in PREFIXES:
        raise ValueError(f"unknown id prefix {prefix!r}")
    if at is not None:
        now_ms = int(at.timestamp() * 1000)
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return f"{prefix}_{encode(ms, _TIME_CHARS)}{random_base62(_RANDOM_CHARS)}"


def is_id(value: str, prefix: str) -> bool:
    """Whether `value` is well-formed for `prefix` (shape only; says nothing of existence)."""
    head, sep, body = value.partition("_")
    return (
        sep == "_"
        and head == prefix
        and len(body) == _TIME_CHARS + _RANDOM_CHARS
        and _CHARS.issuperset(body)  # one C-level pass: this runs on every tenant lookup
    )
