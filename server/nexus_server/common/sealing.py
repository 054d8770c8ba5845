"""Sealing secrets at rest: AES-256-GCM with keys derived from `settings.secret_key`.

Each purpose (signing keys, TOTP secrets, queued mail) gets its own key through HKDF, so a
value sealed for one purpose cannot be opened as another. A sealed value is a 12-byte random
nonce followed by the ciphertext and tag.

Rotation: with `settings.secret_key_previous` set, `open` also accepts values the previous
key sealed, and `reseal` turns such a value into one sealed by the current key (start-up
re-seals every stored value that way, resealing.py); new values are always sealed with the
current key.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def _aead(secret_key: str, purpose: str) -> AESGCM:
    key = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"nexus-sealing-v1", info=purpose.encode()).derive(
        secret_key.encode()
    )
    return AESGCM(key)


class Sealer:
    def __init__(self, secret_key: str, purpose: str, *, previous: str | None = None):
        self._aead = _aead(secret_key, purpose)
        self._previous = _aead(previous, purpose) if previous else None
        self._purpose = purpose.encode()

    def seal(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, self._purpose)

    def open(self, sealed: bytes) -> bytes:
        """The plaintext; raises cryptography's InvalidTag if neither key sealed it."""
        try:
            return self._aead.decrypt(sealed[:12], sealed[12:], self._purpose)
        except InvalidTag:
            if self._previous is None:
                raise
            return self._previous.decrypt(sealed[:12], sealed[12:], self._purpose)

    def reseal(self, sealed: bytes) -> bytes | None:
        """`sealed` sealed again with the current key if the previous key sealed it; None if
        the current key already did (nothing to do). Raises InvalidTag if neither did."""
        try:
            self._aead.decrypt(sealed[:12], sealed[12:], self._purpose)
        except InvalidTag:
            return self.seal(self.open(sealed))
        return None
