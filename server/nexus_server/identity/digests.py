"""Opaque secrets handed to clients (emailed tokens, recovery codes; refresh tokens are made
in refresh_tokens.py) and the SHA-256 digests stored in their place. These are long random
strings, so a plain SHA-256 is enough: there is nothing to brute-force, unlike a password."""

from __future__ import annotations

import hashlib
import secrets

from nexus_server.common.ids import ALPHABET


def digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def new_token(prefix: str, length: int = 43) -> str:
    """`prefix` + `length` base62 characters (43 ≈ 256 bits)."""
    return prefix + "".join(secrets.choice(ALPHABET) for _ in range(length))
