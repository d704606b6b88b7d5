"""The authorization server's signing keys, kept in the store so every process signs
and verifies with the same ones.

Generated on first start (RS384 by default, ES384 on request), each with a `kid` (its
RFC 7638 thumbprint). Several keys may be held at once: the newest signs, all verify,
and `/auth/jwks` publishes the public halves of all, so a rotation never strands a
token signed a moment before.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any

from joserfc.jwk import ECKey, KeySet, RSAKey
from pymongo.errors import DuplicateKeyError

if TYPE_CHECKING:
    from fhir_server.repository import Repository

ALGORITHMS = ("RS384", "ES384")  # what this server signs with, and all it accepts
COLLECTION = "smart_keys"
REFRESH_SECONDS = 5.0
RSA_BITS = 3072  # NIST SP 800-57: 128-bit security past 2030

SigningKey = RSAKey | ECKey


def generate(algorithm: str) -> SigningKey:
    """A new private key for `algorithm`, its kid its thumbprint."""
    if algorithm not in ALGORITHMS:
        raise ValueError(f"signing algorithm must be one of {', '.join(ALGORITHMS)}")
    key: SigningKey
    if algorithm == "RS384":
        key = RSAKey.generate_key(RSA_BITS, private=True)
    else:
        key = ECKey.generate_key("P-384", private=True)
    return type(key).import_key(
        key.as_dict(private=True), {"kid": key.thumbprint(), "alg": algorithm, "use": "sig"}
    )


class SigningKeys:
    """The keys of the store's `smart_keys` collection; `load()` before use."""

    def __init__(self, repository: Repository, algorithm: str = "RS384") -> None:
        if algorithm not in ALGORITHMS:
            raise ValueError(f"signing algorithm must be one of {', '.join(ALGORITHMS)}")
        self.repository = repository
        self.algorithm = algorithm
        self.collection = repository.db[COLLECTION]
        self._keys: list[SigningKey] = []  # oldest first
        self._set = KeySet([])
        self._refreshed = -REFRESH_SECONDS

    async def load(self) -> None:
        """Read the stored keys; generate the first one if there is none."""
        await self._read()
        if not self._keys:
            await self.add(self.algorithm)

    async def add(self, algorithm: str | None = None) -> str:
        """Generate and store a new key, which signs from now on (rotation); its kid."""
        key = generate(algorithm or self.algorithm)
        document = {"_id": key.kid, "created": time.time(), "jwk": key.as_dict(private=True)}
        async with self.repository.write_gate():
            # another process may have stored the same key: keep it
            with contextlib.suppress(DuplicateKeyError):
                await self.collection.insert_one(document)
        await self._read()
        return str(key.kid)

    async def _read(self) -> None:
        documents = await self.collection.find({}).sort("created", 1).to_list(None)
        keys: list[SigningKey] = []
        for document in documents:
            stored: dict[str, Any] = document["jwk"]
            keys.append(
                RSAKey.import_key(stored) if stored["kty"] == "RSA" else ECKey.import_key(stored)
            )
        self._keys = keys
        self._set = KeySet(list(keys))

    def knows(self, kid: str) -> bool:
        return any(key.kid == kid for key in self._keys)

    async def refresh(self) -> None:
        """Read the stored keys again, at most every REFRESH_SECONDS: a key another
        process made (its first start, a rotation) becomes known here on first sight
        of a token it signed, and a flood of unknown kids costs one read per period."""
        now = time.monotonic()
        if now - self._refreshed >= REFRESH_SECONDS:
            self._refreshed = now
            await self._read()

    @property
    def signing(self) -> SigningKey:
        """The newest key: the one that signs."""
        if not self._keys:
            raise RuntimeError("signing keys not loaded")
        return self._keys[-1]

    @property
    def verifying(self) -> KeySet:
        return self._set

    def jwks(self) -> dict[str, Any]:
        """The public JWK Set (RFC 7517) of every key held."""
        return {"keys": [key.as_dict(private=False) for key in self._keys]}
