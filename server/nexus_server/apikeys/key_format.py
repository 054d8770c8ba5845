"""The API key's shape: `eco_api_<22 base62>.<32 base62 secret><6 base62 CRC32>`.

The checksum (GitHub's token design) lets a mistyped or truncated key be refused from its
text alone, before any cache or database is asked. Only the SHA-256 digest of the full key
is ever stored.
"""

from __future__ import annotations

import hashlib
import re
import time
import zlib
from dataclasses import dataclass

from nexus_server.common.ids import ALPHABET, encode, random_base62

PREFIX = "eco_api_"
ID_BODY = 22
ID_LENGTH = len(PREFIX) + ID_BODY  # 30
SECRET_RANDOM = 32
CHECKSUM = 6  # 62**6 > 2**32, so every CRC32 fits
SECRET_LENGTH = SECRET_RANDOM + CHECKSUM
KEY_LENGTH = ID_LENGTH + 1 + SECRET_LENGTH  # 69
START_LENGTH = ID_LENGTH + 1 + 4  # the id, the dot, 4 characters of the secret
_BASE62 = frozenset(ALPHABET)
_TIME_CHARS = 9
# The whole shape in one match (ASCII only: `[0-9A-Za-z]` is exactly ALPHABET).
_SHAPE = re.compile(rf"{PREFIX}[0-9A-Za-z]{{{ID_BODY}}}\.[0-9A-Za-z]{{{SECRET_LENGTH}}}")


@dataclass(frozen=True)
class ParsedKey:
    key_id: str
    full_key: str


def new_key_id(now_ms: int | None = None) -> str:
    """A time-sortable id like the other Nexus ids: 9 chars of milliseconds, 13 random."""
    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return PREFIX + encode(ms, _TIME_CHARS) + random_base62(ID_BODY - _TIME_CHARS)


def _checksum(text: str) -> str:
    # encode(crc, 6) unrolled: this runs on every authenticated call (62**5 = 916132832).
    n, a = zlib.crc32(text.encode("ascii")), ALPHABET
    return (
        a[n // 916132832]
        + a[n // 14776336 % 62]
        + a[n // 238328 % 62]
        + a[n // 3844 % 62]
        + a[n // 62 % 62]
        + a[n % 62]
    )


def new_full_key(key_id: str) -> str:
    body = f"{key_id}.{random_base62(SECRET_RANDOM)}"
    return body + _checksum(body)


def is_key_id(value: str) -> bool:
    return (
        len(value) == ID_LENGTH
        and value.startswith(PREFIX)
        and all(c in _BASE62 for c in value[len(PREFIX) :])
    )


def parse(full_key: str) -> ParsedKey | None:
    """The key's id if `full_key` is well formed and its checksum matches; None otherwise.
    Pure text work: no cache, no database."""
    key_id = key_id_of(full_key)
    return ParsedKey(key_id, full_key) if key_id is not None else None


def key_id_of(full_key: str) -> str | None:
    """`parse` without the wrapper, for the auth path."""
    if len(full_key) != KEY_LENGTH or _SHAPE.fullmatch(full_key) is None:
        return None
    if _checksum(full_key[:-CHECKSUM]) != full_key[-CHECKSUM:]:
        return None
    return full_key[:ID_LENGTH]


def digest(full_key: str) -> str:
    """What is stored: the hex SHA-256 of the full key (secrets are random, so no salt)."""
    return hashlib.sha256(full_key.encode("ascii")).hexdigest()


def start_of(full_key: str) -> str:
    return full_key[:START_LENGTH]
