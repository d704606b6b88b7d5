"""Access tokens that are JWTs signed by a key of a JWKS: an external OpenID Connect
issuer's (Keycloak ...), or any issuer whose public keys are configured.

The rules are settings (issuer, audience, algorithms, clock skew, which claims carry
the scopes, the user and the patient); the keys come from a JWKS file, a JWKS URL, or
the issuer's OpenID Connect discovery document (`jwks_uri`). An unknown `kid` fetches
the remote JWKS again (key rotation), at most once per `refresh_seconds`; keys older
than `max_age_seconds` are fetched again (a withdrawn key stops working).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

import httpx
from joserfc import jwt
from joserfc.errors import ExpiredTokenError, InvalidKeyIdError, JoseError
from joserfc.jwk import KeySet

from smart.claims import Claims, TokenInvalid

# far above any real access token; a longer header is refused before any parsing
MAX_TOKEN_CHARS = 16 * 1024
# tokens whose signature and claims were checked, kept until they expire: a client sends
# one token with many requests, and checking an ES256 signature costs ~0.2 ms
CHECKED_TOKENS = 4096
DISCOVERY = "/.well-known/openid-configuration"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class JwtRules:
    issuer: str
    audiences: Callable[[], Collection[str]]  # the FHIR base URL, known once listening
    algorithms: tuple[str, ...] = ("RS256", "RS384", "ES256", "ES384")
    leeway_seconds: int = 60
    scope_claim: str = "scope"
    fhir_user_claim: str = "fhirUser"
    patient_claim: str = "patient"


class KeySource(Protocol):
    async def keys(self, refresh: bool) -> KeySet:
        """The issuer's public keys; `refresh` asks for a fresh copy (an unknown kid)."""
        ...


class FileKeys:
    """A JWKS read from a file at start (keys rotate by restarting)."""

    def __init__(self, path: Path) -> None:
        self._keys = KeySet.import_key_set(_public_only(path.read_bytes()))

    async def keys(self, refresh: bool) -> KeySet:
        return self._keys


class RemoteKeys:
    """A JWKS fetched over HTTP(S): from `jwks_url`, or from the `jwks_uri` of the
    issuer's discovery document when no URL is given.

    Three clocks, because an issuer rotates and withdraws keys without telling anyone:
    an unknown kid fetches again at once, but at most once per `refresh_seconds` (a flood
    of made-up kids costs the issuer one request per interval, and the first rotation
    after a start is never delayed by the start's own fetch); keys older than
    `max_age_seconds` are fetched again at the next use, so a withdrawn key stops
    working; after a failed fetch none is tried for `refresh_seconds`, so requests do
    not queue behind one timeout each while the issuer is down, and while a fetch is
    under way, tokens of known keys do not wait for it."""

    def __init__(
        self,
        issuer: str,
        jwks_url: str | None,
        refresh_seconds: float = 10.0,
        max_age_seconds: float = 300.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.issuer = issuer.rstrip("/")
        self.jwks_url = jwks_url
        self.refresh_seconds = refresh_seconds
        self.max_age_seconds = max_age_seconds
        self.clock = clock
        self._keys: KeySet | None = None
        self._fetched = float("-inf")  # the last fetch that succeeded
        self._refreshed = float("-inf")  # the last fetch an unknown kid asked for
        self._failed = float("-inf")  # the last fetch that failed
        self._lock = asyncio.Lock()

    async def keys(self, refresh: bool) -> KeySet:
        if self._keys is not None and not refresh and self._lock.locked():
            # a fetch is under way (perhaps waiting out a timeout): the keys held serve
            return self._keys
        async with self._lock:
            now = self.clock()
            if self._keys is None:
                return await self._load(now)
            if refresh and now - self._refreshed >= self.refresh_seconds:
                self._refreshed = now
                return await self._load(now)
            if now - self._fetched >= self.max_age_seconds:
                try:
                    return await self._load(now)
                except TokenInvalid:
                    # an issuer that is down does not stop the keys already known
                    return self._keys
            return self._keys

    async def _load(self, now: float) -> KeySet:
        if now - self._failed < self.refresh_seconds:
            raise TokenInvalid("the issuer's keys could not be fetched")
        try:
            keys = await self._fetch()
        except TokenInvalid:
            self._failed = now
            raise
        self._keys, self._fetched = keys, now
        return keys

    async def _fetch(self) -> KeySet:
        try:
            async with httpx.AsyncClient(timeout=10.0) as client:
                url = self.jwks_url or await _jwks_uri(client, self.issuer)
                _check_transport(url)
                answer = await client.get(url)
                answer.raise_for_status()
                return KeySet.import_key_set(_public_only(answer.content))
        except (
            httpx.HTTPError,
            ValueError,
            JoseError,
            KeyError,
            TypeError,
            AttributeError,
        ) as failure:
            # the operator learns which issuer and why (documents of any shape, as a
            # misconfigured proxy serves them); the client only that its token could not
            # be checked
            log.warning("the keys of issuer %s could not be fetched: %r", self.issuer, failure)
            raise TokenInvalid("the issuer's keys could not be fetched") from failure


def key_url_is_safe(url: str) -> bool:
    """Keys come over HTTPS; plain HTTP only from this machine (a local issuer, the
    tests): anyone on the path of a plain fetch could hand over keys of their own."""
    parts = urlsplit(url)
    if parts.scheme == "https":
        return bool(parts.hostname)
    if parts.scheme != "http" or not parts.hostname:
        return False
    if parts.hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(parts.hostname).is_loopback
    except ValueError:
        return False


def _check_transport(url: str) -> None:
    if not key_url_is_safe(url):
        raise ValueError(f"keys over plain HTTP from another machine: {url}")


async def _jwks_uri(client: httpx.AsyncClient, issuer: str) -> str:
    _check_transport(issuer + DISCOVERY)
    answer = await client.get(issuer + DISCOVERY)
    answer.raise_for_status()
    document = answer.json()
    if document.get("issuer", "").rstrip("/") != issuer:
        raise ValueError("discovery document of another issuer")
    uri = document["jwks_uri"]
    if not isinstance(uri, str):
        raise ValueError("jwks_uri is not a string")
    return uri


def _public_only(raw: bytes) -> Any:
    document = json.loads(raw)
    # a JWKS file that holds private parts would make this server able to sign; keys for
    # encryption (Keycloak publishes an RSA-OAEP one beside its signing key) verify nothing
    keys = [{k: v for k, v in key.items() if k not in ("d", "p", "q", "dp", "dq", "qi")}
            for key in document.get("keys", []) if key.get("use") != "enc"]  # fmt: skip
    return {"keys": keys}


class JwtValidator:
    """`TokenValidator` for JWT access tokens (RFC 9068 and OpenID Connect issuers)."""

    def __init__(
        self, rules: JwtRules, keys: KeySource, clock: Callable[[], float] = time.time
    ) -> None:
        self.rules = rules
        self.source = keys
        self.clock = clock
        self._checked: OrderedDict[str, Claims] = OrderedDict()

    async def validate(self, token: str) -> Claims:
        if len(token) > MAX_TOKEN_CHARS:
            raise TokenInvalid("token too long")
        checked = self._checked.get(token)
        if checked is not None:
            if checked.expires_at + self.rules.leeway_seconds < self.clock():
                del self._checked[token]
                raise TokenInvalid("the token has expired")
            self._checked.move_to_end(token)
            return checked
        claims = await self._validate(token)
        self._checked[token] = claims
        if len(self._checked) > CHECKED_TOKENS:
            self._checked.popitem(last=False)
        return claims

    async def _validate(self, token: str) -> Claims:
        try:
            decoded = jwt.decode(token, await self.source.keys(False), self.rules.algorithms)
        except InvalidKeyIdError:
            decoded = self._decode_again(token, await self.source.keys(True))
        except (JoseError, ValueError, TypeError, KeyError):
            raise TokenInvalid("not a JWT signed by the issuer's keys") from None
        self._check(decoded.claims)
        return self._claims(decoded.claims)

    def _decode_again(self, token: str, keys: KeySet) -> jwt.Token:
        try:
            return jwt.decode(token, keys, self.rules.algorithms)
        except (JoseError, ValueError, TypeError, KeyError):
            raise TokenInvalid("not a JWT signed by the issuer's keys") from None

    def _check(self, claims: dict[str, Any]) -> None:
        registry = jwt.JWTClaimsRegistry(
            now=int(self.clock()),
            leeway=self.rules.leeway_seconds,
            iss={"essential": True, "value": self.rules.issuer},
            aud={"essential": True, "values": list(self.rules.audiences())},
            exp={"essential": True},
            sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except ExpiredTokenError:
            raise TokenInvalid("the token has expired") from None
        except JoseError as failure:
            # which claim failed (iss, aud, nbf ...), never its value
            claim = getattr(failure, "claim", None) or "a claim"
            raise TokenInvalid(f"{claim} is not valid for this server") from None

    def _claims(self, claims: dict[str, Any]) -> Claims:
        rules = self.rules
        subject = _text(claims, "sub") or ""
        return Claims(
            issuer=rules.issuer,
            subject=subject,
            client_id=_text(claims, "client_id") or _text(claims, "azp") or subject,
            scopes=_scopes(claims.get(rules.scope_claim)),
            expires_at=int(claims["exp"]),
            token_id=_text(claims, "jti") or "",
            patient=_text(claims, rules.patient_claim),
            encounter=_text(claims, "encounter"),
            fhir_user=_text(claims, rules.fhir_user_claim),
            purpose_of_use=_text(claims, "purpose_of_use"),
        )


def _text(claims: dict[str, Any], name: str) -> str | None:
    value = claims.get(name)
    return value if isinstance(value, str) and value else None


def _scopes(value: Any) -> frozenset[str]:
    """`scope` is one space-separated string (RFC 9068); some issuers send a list (`scp`)."""
    if isinstance(value, str):
        return frozenset(value.split())
    if isinstance(value, list):
        return frozenset(v for v in value if isinstance(v, str))
    return frozenset()
