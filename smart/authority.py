"""The authorization server's parts, built once by the composition root."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

from smart.accounts import Accounts
from smart.assertions import ASSERTIONS
from smart.clients import Clients
from smart.grants import CODES, REFRESH, Grants
from smart.keys import SigningKeys
from smart.launches import LAUNCHES, Launches
from smart.tokens import ISSUED, REVOKED, TokenService

if TYPE_CHECKING:
    from fhir_server.repository import Repository

AUTH_PATH = "/auth"
FHIR_PATH = "/fhir"


@dataclass(frozen=True, slots=True)
class AuthorityOptions:
    """The settings of the authorization server (medbridge/settings.py `smart_*`)."""

    signing_algorithm: str = "RS384"
    token_lifetime: int = 3600
    backend_token_lifetime: int = 300
    refresh_lifetime: int = 30 * 24 * 3600
    clock_skew: int = 30
    lockout_failures: int = 5
    lockout_minutes: float = 15.0
    launch_lifetime: int = 300


class SecurityAudit(Protocol):
    """Where sign-ins and token issues are recorded (audit/security.py, wired by the
    composition root). Each call returns once the event is durable and raises when it
    cannot be: the caller then fails closed (no sign-in, no token)."""

    async def sign_in(
        self,
        *,
        user: str | None,
        fhir_user: str | None,
        client_id: str | None,
        address: str | None,
        succeeded: bool,
        reason: str | None = None,
    ) -> None: ...

    async def token_issued(
        self,
        *,
        client_id: str,
        grant_type: str,
        scope: str,
        token_id: str,
        subject: str,
        fhir_user: str | None,
        patient: str | None,
        address: str | None,
    ) -> None: ...


@dataclass(frozen=True, slots=True)
class Authority:
    """`public_base()` is the server's configured `scheme://host:port`: the issuer is
    `{base}/auth`, the audience of every access token the FHIR base `{base}/fhir`."""

    public_base: Callable[[], str]
    options: AuthorityOptions
    keys: SigningKeys
    tokens: TokenService
    grants: Grants
    accounts: Accounts
    clients: Clients
    launches: Launches
    audit: SecurityAudit | None = None  # None with MEDBRIDGE_AUDIT=false

    def issuer(self) -> str:
        return self.public_base() + AUTH_PATH

    def audience(self) -> str:
        return self.public_base() + FHIR_PATH


async def build_authority(
    repository: Repository,
    public_base: Callable[[], str],
    options: AuthorityOptions,
    clock: Callable[[], float] = time.time,
) -> Authority:
    """Load (or make, on first start) the signing keys and assemble the parts."""
    keys = SigningKeys(repository, options.signing_algorithm)
    await keys.load()

    def issuer() -> str:
        return public_base() + AUTH_PATH

    def audience() -> str:
        return public_base() + FHIR_PATH

    tokens = TokenService(
        repository, keys, issuer, audience, options.token_lifetime, options.clock_skew, clock
    )
    await tokens.ensure_indexes()
    grants = Grants(repository, tokens, options.refresh_lifetime, clock)
    accounts = Accounts(repository, options.lockout_failures, options.lockout_minutes, clock)
    await purge_expired(repository, clock() - options.clock_skew)
    launches = Launches(repository, options.launch_lifetime, clock)
    return Authority(
        public_base, options, keys, tokens, grants, accounts, Clients(repository), launches
    )


async def purge_expired(repository: Repository, before: float) -> int:
    """Drop the rows that no longer decide anything: revoked ids, issued ids, replay
    guards, codes, refresh tokens and EHR launches whose credential expired before `before`. Run at
    start; what expires while the server runs goes at the next start."""
    removed = 0
    for name in (REVOKED, ISSUED, ASSERTIONS, CODES, REFRESH, LAUNCHES):
        async with repository.write_gate():
            result = await repository.db[name].delete_many({"expires_at": {"$lt": before}})
        removed += result.deleted_count
    return removed
