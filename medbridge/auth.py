"""Token enforcement as the server starts: the token validator the settings describe,
and the rule that a server without it listens on loopback only."""

from __future__ import annotations

import base64
import binascii
import ipaddress
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

import orjson

from medbridge.settings import Settings
from smart.claims import Claims, TokenInvalid, TokenValidator
from smart.jwt_validator import (
    FileKeys,
    JwtRules,
    JwtValidator,
    KeySource,
    RemoteKeys,
    key_url_is_safe,
)

# a shared secret or no signature at all would let anyone holding the key mint tokens
REFUSED_ALGORITHMS = frozenset({"none", "HS256", "HS384", "HS512"})
NO_AUTH_WARNING = (
    "WARNING: authentication is OFF (--no-auth / MEDBRIDGE_AUTH=false): every FHIR and "
    "DICOMweb request is answered without a token. For development on this machine only."
)


class AuthRefused(Exception):
    """The settings would expose patient data without authentication: do not start."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_binding(settings: Settings) -> str | None:
    """The warning to print when auth is off on loopback; `AuthRefused` (with the reason)
    when it is off on any other address; None when auth is on."""
    if settings.auth:
        _algorithms(settings)
        _key_transport(settings)
        return None
    if not is_loopback(settings.host):
        raise AuthRefused(
            f"refusing to start: authentication is off (--no-auth / MEDBRIDGE_AUTH=false) "
            f"and the listeners would bind {settings.host!r}, which is not a loopback "
            f"address. Patient data would be open to the network: turn auth on, or bind "
            f"127.0.0.1 / ::1 for local development."
        )
    return NO_AUTH_WARNING


class NoIssuer:
    """The validator when no issuer is configured: every token is refused, with why."""

    async def validate(self, token: str) -> Claims:
        raise TokenInvalid("no token issuer is configured on this server")


class Issuers:
    """Tokens of this server's own authorization server and, when one is configured, of
    an external OpenID Connect issuer: each token goes to the validator of the issuer it
    names (`iss`, read unverified only to choose), which then checks it completely."""

    def __init__(self, own: tuple[Callable[[], str], TokenValidator]) -> None:
        self.own = own
        self.external: dict[str, TokenValidator] = {}

    def add(self, issuer: str, validator: TokenValidator) -> None:
        self.external[issuer] = validator

    async def validate(self, token: str) -> Claims:
        named = _issuer_named(token)
        own_issuer, own = self.own
        if named == own_issuer():
            return await own.validate(token)
        if named is not None and named in self.external:
            return await self.external[named].validate(token)
        raise TokenInvalid("the token is not from an issuer this server accepts")


# tokens whose issuer is remembered, and the longest remembered (at most ~4 MB held,
# whatever tokens a client makes up); longer ones are decoded every time
ISSUERS_KEPT = 1024
KEPT_TOKEN_CHARS = 4096


def _issuer_named(token: str) -> str | None:
    # a client sends one token with many requests: its payload is decoded once (the
    # validator the issuer names then checks the token completely, every time)
    if len(token) <= KEPT_TOKEN_CHARS:
        return _kept_issuer(token)
    return _read_issuer(token)


@lru_cache(maxsize=ISSUERS_KEPT)
def _kept_issuer(token: str) -> str | None:
    return _read_issuer(token)


def _read_issuer(token: str) -> str | None:
    parts = token.split(".")
    if len(parts) != 3 or len(parts[1]) > 65536:
        return None
    try:
        payload = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    issuer = payload.get("iss") if isinstance(payload, dict) else None
    return issuer if isinstance(issuer, str) else None


def token_validator(
    settings: Settings, fhir_base: Callable[[], str], own: tuple[Callable[[], str], TokenValidator]
) -> TokenValidator:
    """Tokens of this server's own authorization server (`own`: its issuer and validator)
    and of `MEDBRIDGE_AUTH_ISSUER` when set, checked with its JWKS; `fhir_base()` (this
    server's public FHIR base URL) is the audience unless one is configured."""
    issuers = Issuers(own)
    if settings.auth_issuer is not None:
        issuers.add(settings.auth_issuer, external_validator(settings, fhir_base))
    return issuers


def external_validator(settings: Settings, fhir_base: Callable[[], str]) -> TokenValidator:
    assert settings.auth_issuer is not None
    algorithms = _algorithms(settings)
    audience = settings.auth_audience

    def audiences() -> frozenset[str]:
        return frozenset({audience or fhir_base()})

    rules = JwtRules(
        issuer=settings.auth_issuer,
        audiences=audiences,
        algorithms=algorithms,
        leeway_seconds=settings.auth_leeway_seconds,
        scope_claim=settings.auth_scope_claim,
        fhir_user_claim=settings.auth_fhir_user_claim,
        patient_claim=settings.auth_patient_claim,
    )
    return JwtValidator(rules, key_source(settings))


def _algorithms(settings: Settings) -> tuple[str, ...]:
    algorithms = tuple(a.strip() for a in settings.auth_algorithms.split(",") if a.strip())
    refused = {a for a in algorithms if a in REFUSED_ALGORITHMS or a.upper().startswith("HS")}
    if refused or not algorithms:
        raise AuthRefused(
            f"refusing to start: MEDBRIDGE_AUTH_ALGORITHMS must name public-key algorithms "
            f"(RS256, ES256 ...), not {sorted(refused) or 'nothing'}"
        )
    return algorithms


def _key_transport(settings: Settings) -> None:
    """The external issuer's keys are fetched over HTTPS (plain HTTP only on loopback)."""
    jwks = settings.auth_jwks
    remote = jwks if jwks is None or jwks.startswith(("http://", "https://")) else None
    url = remote or (settings.auth_issuer if jwks is None else None)
    if url is not None and not key_url_is_safe(url):
        raise AuthRefused(
            f"refusing to start: the token issuer's keys would be fetched from {url!r} "
            f"over plain HTTP, where anyone on the path could replace them: use https:// "
            f"(MEDBRIDGE_AUTH_ISSUER, MEDBRIDGE_AUTH_JWKS), or a JWKS file"
        )


def key_source(settings: Settings) -> KeySource:
    jwks, issuer = settings.auth_jwks, settings.auth_issuer or ""
    if jwks is not None and not jwks.startswith(("http://", "https://")):
        return FileKeys(Path(jwks))
    return RemoteKeys(
        issuer,
        jwks,
        refresh_seconds=settings.auth_jwks_refresh_seconds,
        max_age_seconds=settings.auth_jwks_max_age_seconds,
    )
