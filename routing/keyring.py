"""The key ring that encrypts provider secrets at rest.

Keys are Fernet keys listed newest first in DS2API_ENCRYPTION_KEYS. Each ciphertext row records the id of
the key that wrote it (a short digest of the key), so decryption picks the right key directly and
`gateway rotate-keys` can tell which rows still need re-encrypting. The ring is never derived from
Django's SECRET_KEY.
"""

import hashlib
from dataclasses import dataclass
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured


class KeyRingError(Exception):
    """A secret cannot be decrypted with the configured keys."""


def key_id_for(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()[:12]


def generate_key() -> str:
    return Fernet.generate_key().decode()


@dataclass(frozen=True)
class KeyRing:
    keys: tuple[tuple[str, Fernet], ...]  # (key id, cipher), newest first

    @classmethod
    def from_keys(cls, raw_keys: list[str]) -> "KeyRing":
        if not raw_keys:
            raise ImproperlyConfigured(
                "DS2API_ENCRYPTION_KEYS is not set: provider secrets cannot be stored. "
                "Generate a key with `python manage.py gateway generate-key` (make run does this for you)."
            )
        ring = []
        for position, key in enumerate(raw_keys):
            try:
                ring.append((key_id_for(key), Fernet(key.encode())))
            except (ValueError, TypeError) as exc:
                raise ImproperlyConfigured(
                    f"DS2API_ENCRYPTION_KEYS entry #{position + 1} is not a valid Fernet key "
                    "(32 url-safe base64-encoded bytes)."
                ) from exc
        return cls(tuple(ring))

    @property
    def current_id(self) -> str:
        return self.keys[0][0]

    def encrypt(self, plaintext: str) -> tuple[str, str]:
        key_id, cipher = self.keys[0]
        return key_id, cipher.encrypt(plaintext.encode()).decode()

    def decrypt(self, key_id: str, ciphertext: str) -> str:
        for candidate_id, cipher in self.keys:
            if candidate_id == key_id:
                try:
                    return cipher.decrypt(ciphertext.encode()).decode()
                except InvalidToken as exc:
                    raise KeyRingError(f"ciphertext under key {key_id} failed authentication") from exc
        raise KeyRingError(
            f"secret was encrypted with key id {key_id}, which is not in DS2API_ENCRYPTION_KEYS "
            f"(configured ids: {', '.join(k for k, _ in self.keys)})"
        )


@lru_cache(maxsize=4)
def _ring_for(keys: tuple[str, ...]) -> KeyRing:
    return KeyRing.from_keys(list(keys))


def get_keyring() -> KeyRing:
    return _ring_for(tuple(settings.DS2API_ENCRYPTION_KEYS))
