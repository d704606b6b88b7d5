"""Password and client-secret hashing: stdlib scrypt, a memory-hard KDF.

Parameters (RFC 7914; OWASP's minimum for scrypt): N = 2**15, r = 8, p = 1, a 16-byte
random salt, a 32-byte key: 32 MiB of memory and ~0.1 s per guess on one core. They are
stored with each hash, so raising them later leaves old hashes verifiable.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from typing import Any

N, R, P = 2**15, 8, 1
KEY_BYTES = 32
MAX_MEMORY = 64 * 1024 * 1024  # above 128 * N * r (32 MiB), which OpenSSL needs
MAX_SECRET_BYTES = 1024  # longer input is refused, not hashed


def hash_secret(secret: str) -> dict[str, Any]:
    """A stored form of `secret`: salt, parameters and the derived key (hex)."""
    salt = secrets.token_bytes(16)
    derived = _derive(secret, salt, N, R, P)
    return {"kdf": "scrypt", "n": N, "r": R, "p": P, "salt": salt.hex(), "hash": derived.hex()}


def verify_secret(secret: str, stored: dict[str, Any]) -> bool:
    """Whether `secret` matches the stored form, compared in constant time."""
    if stored.get("kdf") != "scrypt" or len(secret.encode()) > MAX_SECRET_BYTES:
        return False
    derived = _derive(secret, bytes.fromhex(stored["salt"]), stored["n"], stored["r"], stored["p"])
    return hmac.compare_digest(derived.hex(), str(stored["hash"]))


def _derive(secret: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=n, r=r, p=p, maxmem=MAX_MEMORY, dklen=KEY_BYTES
    )
