"""Keys derived from the one master key, and encryption of app client secrets at rest."""

from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import secrets

from cryptography.fernet import Fernet, InvalidToken


def derive_key(master: bytes, purpose: str) -> bytes:
    """A 32-byte key for one purpose; knowing one derived key reveals neither master nor others."""
    return hmac.new(master, f"voicemail:{purpose}".encode(), hashlib.sha256).digest()


def new_client_secret() -> str:
    return secrets.token_urlsafe(48)  # 64 characters: long enough for HS512


class SecretBox:
    """Encrypts app client secrets so a database dump alone does not reveal them."""

    def __init__(self, master: bytes) -> None:
        self._fernet = Fernet(base64.urlsafe_b64encode(derive_key(master, "app-secrets")))
        # Every API request decrypts its app's secret; a ciphertext always decrypts to the
        # same plaintext, so remember the last few hundred (a rotated secret is a new one).
        self._decrypted = functools.lru_cache(maxsize=1024)(self._decrypt)

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, ciphertext: str) -> str:
        return self._decrypted(ciphertext)

    def _decrypt(self, ciphertext: str) -> str:
        try:
            return self._fernet.decrypt(ciphertext.encode()).decode()
        except InvalidToken as exc:
            raise ValueError(
                "cannot decrypt an app secret: was VOICEMAIL_SIGNING_KEY changed?"
            ) from exc
