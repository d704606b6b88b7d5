"""Access tokens: minted as signed JWTs (RFC 9068 shape), validated with an explicit
algorithm list, exact issuer and audience and a small clock skew, and checked against
the revoked token ids in the store on every request.

No cache of the revocation list: one primary-key read per request is what makes a
revocation take effect on the next request in every process, not only this one. The
signature and claim checks are cached per token until it expires: a token's bytes
cannot change, and verifying costs more than the read (joserfc decode: RS384 0.6 ms,
ES384 4.6 ms, ES256 0.8 ms on the loaded shared 2-core machine, Dec 2026).
"""

from __future__ import annotations

import contextlib
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from joserfc import jws, jwt
from joserfc.errors import JoseError
from pymongo.errors import DuplicateKeyError

from smart.claims import Claims, TokenInvalid
from smart.keys import ALGORITHMS, SigningKeys

if TYPE_CHECKING:
    from fhir_server.repository import Repository

REVOKED = "smart_revoked"  # _id: jti, expires_at: when the entry stops mattering
ISSUED = "smart_issued"  # _id: jti, family, expires_at: what a family revocation reaches
# RFC 9068: an id_token (same key) is never taken for an access token
TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
MAX_TOKEN_CHARS = 16 * 1024  # refused before any decoding
VERIFIED_TOKENS = 4096  # tokens whose signature and claims were checked, least recent out


@dataclass(frozen=True, slots=True)
class Grant:
    """What one access token is for: who, through which app, with which scopes and
    launch context. `family` names the authorization it comes from (code or refresh
    chain), so a replayed code or refresh token can revoke everything it issued."""

    client_id: str
    subject: str
    scope: str
    patient: str | None = None
    encounter: str | None = None
    fhir_user: str | None = None
    family: str | None = None


@dataclass(frozen=True, slots=True)
class Minted:
    token: str
    token_id: str
    expires_in: int


class TokenService:
    """Mints and validates this server's access tokens (`smart.claims.TokenValidator`)."""

    def __init__(
        self,
        repository: Repository,
        keys: SigningKeys,
        issuer: Callable[[], str],
        audience: Callable[[], str],
        lifetime: int = 3600,
        clock_skew: int = 30,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repository = repository
        self.keys = keys
        self.issuer = issuer
        self.audience = audience
        self.lifetime = lifetime
        self.clock_skew = clock_skew
        self.clock = clock
        self.revoked = repository.db[REVOKED]
        self.issued = repository.db[ISSUED]
        # token -> (kid, claims) of the tokens checked in this process
        self._verified: OrderedDict[str, tuple[str | None, dict[str, Any]]] = OrderedDict()

    async def ensure_indexes(self) -> None:
        await self.issued.create_index("family")

    async def know_signer(self, token: str) -> None:
        """Load keys made by another process before judging a token one of them signed."""
        kid = _kid(token)
        if kid is not None and not self.keys.knows(kid):
            await self.keys.refresh()

    def now(self) -> int:
        return int(self.clock())

    async def mint(self, grant: Grant, lifetime: int | None = None) -> Minted:
        """A signed access token for `grant`, living `lifetime` seconds (default setting)."""
        seconds = min(lifetime or self.lifetime, self.lifetime)
        issued_at = self.now()
        token_id = secrets.token_urlsafe(18)
        claims: dict[str, Any] = {
            "iss": self.issuer(),
            "aud": self.audience(),
            "sub": grant.subject,
            "client_id": grant.client_id,
            "scope": grant.scope,
            "jti": token_id,
            "iat": issued_at,
            "exp": issued_at + seconds,
        }
        for name, value in (
            ("patient", grant.patient),
            ("encounter", grant.encounter),
            ("fhirUser", grant.fhir_user),
        ):
            if value:
                claims[name] = value
        if grant.family is not None:
            async with self.repository.write_gate():
                await self.issued.insert_one(
                    {"_id": token_id, "family": grant.family, "expires_at": claims["exp"]}
                )
        key = self.keys.signing
        header = {"alg": key.alg, "kid": key.kid, "typ": TOKEN_TYPE}
        token = jwt.encode(header, claims, key, algorithms=list(ALGORITHMS))
        return Minted(token, token_id, seconds)

    def decode(self, token: str, check_expiry: bool = True) -> dict[str, Any]:
        """The claims of a token this server signed for its FHIR base, or `TokenInvalid`."""
        if not token or len(token) > MAX_TOKEN_CHARS:
            raise TokenInvalid("the token is missing or too long")
        try:
            decoded = jwt.decode(token, self.keys.verifying, algorithms=list(ALGORITHMS))
        except (JoseError, ValueError, TypeError) as error:
            raise TokenInvalid("the token is malformed or its signature is wrong") from error
        if decoded.header.get("typ") != TOKEN_TYPE:
            raise TokenInvalid("not an access token")
        options: dict[str, Any] = {
            "iss": {"essential": True, "value": self.issuer()},
            "aud": {"essential": True, "value": self.audience()},
            "exp": {"essential": True},
            "sub": {"essential": True},
            "jti": {"essential": True},
            "client_id": {"essential": True},
        }
        issued_at = decoded.claims.get("iat")
        if check_expiry or not isinstance(issued_at, int):
            now: Callable[[], int] = self.now
        else:  # judged as at its issue: all but the expiry still checked
            now = lambda: issued_at  # noqa: E731
        registry = jwt.JWTClaimsRegistry(now=now, leeway=self.clock_skew, **options)
        try:
            registry.validate(decoded.claims)
        except JoseError as error:
            raise TokenInvalid(_reason(error)) from error
        return decoded.claims

    async def validate(self, token: str) -> Claims:
        claims = self._verified_before(token)
        if claims is None:
            await self.know_signer(token)
            claims = self.decode(token)
            self._verified[token] = (_kid(token), claims)
            if len(self._verified) > VERIFIED_TOKENS:
                self._verified.popitem(last=False)
        if await self.revoked.find_one({"_id": claims["jti"]}, {"_id": 1}) is not None:
            raise TokenInvalid("the token was revoked")
        return to_claims(claims)

    def _verified_before(self, token: str) -> dict[str, Any] | None:
        """The claims of a token this process checked already, if it has not expired
        since (the same skew as `decode`) and its key still verifies."""
        verified = self._verified.get(token)
        if verified is None:
            return None
        kid, claims = verified
        if claims["exp"] < self.now() - self.clock_skew or kid is None or not self.keys.knows(kid):
            del self._verified[token]
            return None  # judged again by decode, which says why it fails
        self._verified.move_to_end(token)
        return claims

    async def revoke_access(self, token: str) -> bool:
        """Revoke an access token of this server (expired or not); False if it is not one."""
        try:
            await self.know_signer(token)
            claims = self.decode(token, check_expiry=False)
        except TokenInvalid:
            return False
        await self.revoke_ids([(str(claims["jti"]), int(claims["exp"]))])
        return True

    async def revoke_ids(self, entries: list[tuple[str, int]]) -> None:
        """Revoke token ids (jti, exp): refused from the next request on."""
        async with self.repository.write_gate():
            for token_id, expires_at in entries:
                with contextlib.suppress(DuplicateKeyError):  # revoked already
                    await self.revoked.insert_one({"_id": token_id, "expires_at": expires_at})

    async def revoke_family(self, family: str) -> None:
        """Revoke every access token issued under `family`."""
        issued = await self.issued.find({"family": family}).to_list(None)
        await self.revoke_ids([(str(row["_id"]), int(row["expires_at"])) for row in issued])

    async def introspect(self, token: str) -> dict[str, Any]:
        """RFC 7662: the token's claims with `active: true`, or exactly `{"active": false}`."""
        try:
            await self.know_signer(token)
            claims = self.decode(token)
            if await self.revoked.find_one({"_id": claims["jti"]}, {"_id": 1}) is not None:
                return {"active": False}
        except TokenInvalid:
            return {"active": False}
        answer = {"active": True, "token_type": "Bearer"}
        for name in ("scope", "client_id", "sub", "aud", "iss", "exp", "iat", "jti"):
            answer[name] = claims[name]
        for name in ("patient", "encounter", "fhirUser"):
            if name in claims:
                answer[name] = claims[name]
        return answer


def _kid(token: str) -> str | None:
    """The `kid` of a compact JWS header, read without trusting anything else in it."""
    if len(token) > MAX_TOKEN_CHARS:
        return None
    try:
        kid = jws.extract_compact(token.encode()).protected.get("kid")
    except (JoseError, ValueError, TypeError):
        return None
    return kid if isinstance(kid, str) else None


def to_claims(claims: dict[str, Any]) -> Claims:
    """The `Claims` the enforcement hooks read, from a validated payload."""
    scope = claims.get("scope", "")
    if not isinstance(scope, str):
        raise TokenInvalid("the scope claim is not a string")
    return Claims(
        issuer=str(claims["iss"]),
        subject=str(claims["sub"]),
        client_id=str(claims["client_id"]),
        scopes=frozenset(scope.split()),
        expires_at=int(claims["exp"]),
        token_id=str(claims["jti"]),
        patient=_text(claims.get("patient")),
        encounter=_text(claims.get("encounter")),
        fhir_user=_text(claims.get("fhirUser")),
    )


def _text(value: object) -> str | None:
    return value if isinstance(value, str) and value else None


def _reason(error: JoseError) -> str:
    """A reason safe to show: which claim failed, never the token."""
    name = type(error).__name__
    if name == "ExpiredTokenError":
        return "the token has expired"
    if name == "InvalidClaimError":
        return f"the token is not for this server ({error.description})"
    return f"the token's claims are invalid ({error.description})"
