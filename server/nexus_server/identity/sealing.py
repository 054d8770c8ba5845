"""Sealing secrets at rest: AES-256-GCM with keys derived from `settings.secret_key`.

Each purpose (signing keys, TOTP secrets, queued mail) gets its own key through HKDF, so a
value sealed for one purpose cannot be opened as another. A sealed value is a 12-byte random
nonce followed by the ciphertext and tag.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


class Sealer:
    def __init__(self, secret_key: str, purpose: str):
        key = HKDF(
            algorithm=hashes.SHA256(), length=32, salt=b"nexus-sealing-v1", info=purpose.encode()
        ).derive(secret_key.encode())
        self._aead = AESGCM(key)
        self._purpose = purpose.encode()

    def seal(self, plaintext: bytes) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, self._purpose)

    def open(self, sealed: bytes) -> bytes:
        return self._aead.decrypt(sealed[:12], sealed[12:], self._purpose)
