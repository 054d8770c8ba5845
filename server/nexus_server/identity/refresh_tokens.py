"""Refresh tokens: `nxr_<session id>.<secret>.<tag>` (base64url), opaque to clients.

- The secret of a session's first token is random; each successor's is a keyed function of
  the token it replaces, so a client that retries a refresh whose answer it lost gets the
  same successor again (the grace window for the immediate predecessor).
- The tag is a MAC of the session id and secret under a server key: a token that is not the
  session's current one can still be recognised as one this server issued to that session,
  so its replay is reuse (the session ends), while a made-up token is merely invalid and
  costs no database read. This is what lets the session row hold only the digests of its
  current token and its predecessor, instead of a row per token ever issued.

Only SHA-256 digests of tokens are stored (digests.digest), never a token or its secret.
"""

from __future__ import annotations

import base64
import hmac
import secrets

from nexus_server.common.ids import is_id

PREFIX = "nxr_"
MAX_CHARS = 128
_SECRET_BYTES = 32  # 43 base64url characters
_TAG_BYTES = 16  # a truncated HMAC-SHA-256: 22 characters
_SECRET_CHARS = 43


def _text(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _mac(key: bytes, label: bytes, message: str) -> bytes:
    # Labels keep the secret's derivation and the tag apart under one server key.
    return hmac.digest(key, label + message.encode(), "sha256")


def _token(key: bytes, session_id: str, secret: str) -> str:
    body = f"{session_id}.{secret}"
    return f"{PREFIX}{body}.{_text(_mac(key, b'tag:', body)[:_TAG_BYTES])}"


def first(key: bytes, session_id: str) -> str:
    """The first refresh token of a new session."""
    return _token(key, session_id, _text(secrets.token_bytes(_SECRET_BYTES)))


def successor(key: bytes, session_id: str, token: str) -> str:
    """The token that replaces `token` (always the same one for the same token)."""
    return _token(key, session_id, _text(_mac(key, b"next:", token)))


def session_of(key: bytes, token: str) -> str | None:
    """The session id of a token this server issued (current or spent); None for anything
    else, which then needs no lookup."""
    if not token.startswith(PREFIX) or len(token) > MAX_CHARS or not token.isascii():
        return None
    parts = token[len(PREFIX) :].split(".")
    if len(parts) != 3:
        return None
    session_id, secret, _ = parts
    if not is_id(session_id, "ses") or len(secret) != _SECRET_CHARS:
        return None
    return session_id if hmac.compare_digest(_token(key, session_id, secret), token) else None
