"""`private_key_jwt` client authentication (RFC 7523, SMART Backend Services).

authlib's `JWTBearerClientAssertion` does the claim checks (iss = sub = client_id, aud,
exp, jti present); this subclass adds what SMART and the hardening list ask: only
RS384/ES384 (no `none`, no HMAC keyed with a public key), no key material carried in
the header (`jwk`, `x5c`, a `jku` other than the client's registered JWK Set URL), an
expiry at most five minutes ahead, each `jti` accepted once (kept in the store until
the assertion expires), and a 64 KB cap before anything is parsed.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import httpx
from authlib.oauth2.rfc6749 import InvalidClientError
from authlib.oauth2.rfc7523 import JWTBearerClientAssertion
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from pymongo.errors import DuplicateKeyError

from smart.keys import ALGORITHMS

if TYPE_CHECKING:
    from smart.server import OAuthServer, RegisteredClient

ASSERTIONS = "smart_assertions"  # _id: "client|jti", expires_at
MAX_ASSERTION_CHARS = 64 * 1024
MAX_LIFETIME = 300  # SMART Backend Services: exp no more than five minutes ahead
HEADER_KEYS_REFUSED = ("jwk", "x5c", "x5u")
JWKS_FETCH_TIMEOUT = 5.0
MAX_JWKS_BYTES = 256 * 1024


class PrivateKeyJwt(JWTBearerClientAssertion):  # type: ignore[misc]
    CLIENT_AUTH_METHOD = "private_key_jwt"

    def __init__(self, server: OAuthServer) -> None:
        super().__init__(validate_jti=True, leeway=server.authority.options.clock_skew)
        self.server = server

    def get_audiences(self) -> list[str]:
        return [self.server.token_url()]

    def __call__(self, query_client: Any, request: Any) -> Any:
        assertion = request.form.get("client_assertion") or ""
        if len(assertion) > MAX_ASSERTION_CHARS:
            raise InvalidClientError(description="the client assertion is too large")
        if assertion:
            headers, claims = self.extract_assertion(assertion)
            jku = headers.get("jku")
            client = query_client(claims["sub"]) if isinstance(claims.get("sub"), str) else None
            if jku is not None and (client is None or jku != client.client.jwks_url):
                raise InvalidClientError(description="the assertion's jku is not registered")
        return super().__call__(query_client, request)

    def process_assertion_claims(self, assertion: str, resolve_key: Any) -> dict[str, Any]:
        headers, _ = self.extract_assertion(assertion)
        if headers.get("alg") not in ALGORITHMS:
            raise InvalidClientError(description="the assertion must be signed with RS384/ES384")
        if any(name in headers for name in HEADER_KEYS_REFUSED):
            raise InvalidClientError(description="keys in the assertion header are not trusted")
        try:
            token = jwt.decode(assertion, resolve_key, algorithms=list(ALGORITHMS))
        except (JoseError, ValueError) as error:
            raise InvalidClientError(description="the assertion's signature is wrong") from error
        self.verify_claims(token.claims)
        return token.claims

    def verify_claims(self, claims: Any) -> None:
        expires_at = claims.get("exp")
        if isinstance(expires_at, int | float) and expires_at > time.time() + MAX_LIFETIME + (
            self.leeway
        ):
            raise InvalidClientError(description="the assertion expires too far ahead")
        super().verify_claims(claims)

    def validate_jti(self, claims: Any, jti: Any) -> bool:
        if not isinstance(jti, str) or not jti or len(jti) > 256:
            return False
        identifier = f"{claims['sub']}|{jti}"
        return bool(self.server.call(self._remember(identifier, int(claims["exp"]))))

    async def _remember(self, identifier: str, expires_at: int) -> bool:
        repository = self.server.authority.tokens.repository
        async with repository.write_gate():
            try:
                await repository.db[ASSERTIONS].insert_one(
                    {"_id": identifier, "expires_at": expires_at}
                )
            except DuplicateKeyError:
                return False
        return True

    def resolve_client_public_key(self, client: RegisteredClient) -> KeySet:
        registered = client.client
        try:
            if registered.jwks is not None:
                return KeySet.import_key_set(registered.jwks)  # type: ignore[arg-type]
            if registered.jwks_url is not None:
                return KeySet.import_key_set(_fetch(registered.jwks_url))
        except (JoseError, ValueError, TypeError, httpx.HTTPError) as error:
            raise InvalidClientError(description="the client's keys cannot be loaded") from error
        raise InvalidClientError(description="the client has no registered keys")


def _fetch(url: str) -> Any:
    """The client's JWK Set from its registered URL (this runs in a worker thread)."""
    with httpx.Client(timeout=JWKS_FETCH_TIMEOUT, follow_redirects=False) as client:
        response = client.get(url)
        response.raise_for_status()
        if len(response.content) > MAX_JWKS_BYTES:
            raise ValueError("the JWK Set is too large")
        return response.json()
