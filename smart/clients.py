"""Registered client applications (SMART App Launch "client types").

- public: a browser or native app holding no secret; PKCE is its only proof.
- confidential-symmetric: a shared secret, stored hashed (smart/hashing.py).
- confidential-asymmetric: `private_key_jwt` with the client's public keys, given by
  value (a JWK Set) or by URL (fetched when an assertion arrives).
Each has its exact redirect URIs and the scopes it may be granted.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pymongo.errors import DuplicateKeyError

from smart.hashing import hash_secret, verify_secret

if TYPE_CHECKING:
    from fhir_server.repository import Repository

COLLECTION = "smart_clients"
CLIENT_ID = re.compile(r"^[A-Za-z0-9._~\-]{1,128}$")
KINDS = ("public", "confidential-symmetric", "confidential-asymmetric")
AUTH_METHODS = {  # RFC 7591 token_endpoint_auth_method of each kind
    "public": ("none",),
    "confidential-symmetric": ("client_secret_basic", "client_secret_post"),
    "confidential-asymmetric": ("private_key_jwt",),
}
LOOPBACK = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True, slots=True)
class Client:
    client_id: str
    kind: str
    redirect_uris: tuple[str, ...]
    scope: str  # the scopes it may be granted, space separated
    secret: dict[str, Any] | None = None  # hashed
    jwks: dict[str, Any] | None = None
    jwks_url: str | None = None

    @property
    def auth_methods(self) -> tuple[str, ...]:
        return AUTH_METHODS[self.kind]

    def check_secret(self, secret: str) -> bool:
        return self.secret is not None and verify_secret(secret, self.secret)

    def describe(self) -> dict[str, Any]:
        """What `clients add` answers: no secret, hashed or not."""
        return {"client_id": self.client_id, "type": self.kind,
                "redirect_uris": list(self.redirect_uris), "scope": self.scope,
                "jwks_url": self.jwks_url}  # fmt: skip


class Clients:
    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.collection = repository.db[COLLECTION]

    async def add(
        self,
        client_id: str,
        redirect_uris: list[str],
        scope: str,
        secret: str | None = None,
        jwks: dict[str, Any] | None = None,
        jwks_url: str | None = None,
    ) -> Client:
        """Register a client: public unless given exactly one of secret, jwks, jwks_url."""
        # hashing a secret takes ~0.1 s: off the event loop
        client = await asyncio.to_thread(
            new_client, client_id, redirect_uris, scope, secret, jwks, jwks_url
        )
        document = {"_id": client.client_id, "kind": client.kind,
                    "redirect_uris": list(client.redirect_uris), "scope": client.scope,
                    "secret": client.secret, "jwks": client.jwks,
                    "jwks_url": client.jwks_url}  # fmt: skip
        async with self.repository.write_gate():
            try:
                await self.collection.insert_one(document)
            except DuplicateKeyError:
                raise ValueError(f"client {client_id!r} exists already") from None
        return client

    async def register_public(self, client_id: str, redirect_uris: list[str], scope: str) -> Client:
        """Register or re-register a public client the server itself runs (the portal,
        portal/; the image viewer, viewer/client.py): its redirect URI follows the public
        base URL, which may change between starts."""
        client = new_client(client_id, redirect_uris, scope, None, None, None)
        document = {"_id": client.client_id, "kind": client.kind,
                    "redirect_uris": list(client.redirect_uris), "scope": client.scope,
                    "secret": None, "jwks": None, "jwks_url": None}  # fmt: skip
        async with self.repository.write_gate():
            await self.collection.replace_one({"_id": client_id}, document, upsert=True)
        return client

    async def get(self, client_id: str) -> Client | None:
        if not CLIENT_ID.match(client_id):
            return None
        document = await self.collection.find_one({"_id": client_id})
        if document is None:
            return None
        return Client(
            client_id, str(document["kind"]), tuple(document["redirect_uris"]),
            str(document["scope"]), document.get("secret"), document.get("jwks"),
            document.get("jwks_url"),
        )  # fmt: skip


def new_client(
    client_id: str,
    redirect_uris: list[str],
    scope: str,
    secret: str | None,
    jwks: dict[str, Any] | None,
    jwks_url: str | None,
) -> Client:
    """A checked `Client` (ValueError naming what is wrong); the secret hashed."""
    if not CLIENT_ID.match(client_id):
        raise ValueError("client id: 1-128 characters of A-Z a-z 0-9 . _ ~ -")
    if sum(value is not None for value in (secret, jwks, jwks_url)) > 1:
        raise ValueError("give at most one of a secret, a JWK Set, a JWK Set URL")
    for uri in redirect_uris:
        check_url(uri, "redirect URI")
    if not scope.split():
        raise ValueError("a client needs the scopes it may be granted")
    if secret is not None:
        if len(secret) < 16:
            raise ValueError("client secret: at least 16 characters")
        kind, hashed = "confidential-symmetric", hash_secret(secret)
        return Client(client_id, kind, tuple(redirect_uris), " ".join(scope.split()), hashed)
    if jwks is not None or jwks_url is not None:
        if jwks is not None:
            check_public_jwks(jwks)
        if jwks_url is not None:
            check_url(jwks_url, "JWK Set URL")
        return Client(client_id, "confidential-asymmetric", tuple(redirect_uris),
                      " ".join(scope.split()), None, jwks, jwks_url)  # fmt: skip
    if not redirect_uris:
        raise ValueError("a public client needs at least one redirect URI")
    return Client(client_id, "public", tuple(redirect_uris), " ".join(scope.split()))


def check_url(uri: str, what: str) -> None:
    """Absolute https (http on loopback only), no fragment: RFC 6749 3.1.2, RFC 8252 7.3."""
    parts = urlsplit(uri)
    if parts.fragment or not parts.hostname:
        raise ValueError(f"{what} {uri!r}: absolute, without a fragment")
    if parts.scheme != "https" and not (parts.scheme == "http" and parts.hostname in LOOPBACK):
        raise ValueError(f"{what} {uri!r}: https (http only on loopback)")


def check_public_jwks(jwks: dict[str, Any]) -> None:
    """A JWK Set of public RSA/EC keys, each with a kid."""
    keys = jwks.get("keys") if isinstance(jwks, dict) else None
    if not isinstance(keys, list) or not keys:
        raise ValueError("the JWK Set has no keys")
    for key in keys:
        if not isinstance(key, dict) or key.get("kty") not in ("RSA", "EC") or not key.get("kid"):
            raise ValueError("every key of the JWK Set must be RSA or EC and have a kid")
        if "d" in key:
            raise ValueError("the JWK Set holds a private key: register the public keys only")
    try:
        KeySet.import_key_set(jwks)  # type: ignore[arg-type]
    except (JoseError, ValueError, TypeError) as error:
        raise ValueError(f"the JWK Set does not load: {error}") from error
