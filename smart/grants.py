"""Authorizations and the credentials that carry them between requests: authorization
codes (single use) and refresh tokens (opaque, rotated on every use).

One authorization is a *family*: its code, the refresh tokens it chains into and the
access tokens each of them issued. A code or refresh token presented a second time is
a sign it was stolen (RFC 9700 2.1.1, 4.14.2): the whole family is revoked, access
tokens included. Codes and refresh tokens are stored only as their SHA-256, so the
store never holds a usable credential.
"""

from __future__ import annotations

import hashlib
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from pymongo.asynchronous.collection import AsyncCollection

from smart.tokens import Grant, TokenService

if TYPE_CHECKING:
    from fhir_server.repository import Repository

FAMILIES = "smart_families"
CODES = "smart_codes"
REFRESH = "smart_refresh"
CODE_SECONDS = 60  # RFC 6749 4.1.2: short-lived, ten minutes at most


@dataclass(frozen=True, slots=True)
class CodeRecord:
    grant: Grant
    redirect_uri: str
    code_challenge: str | None
    code_challenge_method: str | None
    nonce: str | None


def digest(credential: str) -> str:
    return hashlib.sha256(credential.encode()).hexdigest()


class Grants:
    def __init__(
        self,
        repository: Repository,
        tokens: TokenService,
        refresh_lifetime: int = 30 * 24 * 3600,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repository = repository
        self.tokens = tokens
        self.refresh_lifetime = refresh_lifetime
        self.clock = clock
        self.families = repository.db[FAMILIES]
        self.codes = repository.db[CODES]
        self.refresh = repository.db[REFRESH]

    async def open(self, grant: Grant) -> Grant:
        """Record a new authorization; the grant with its family id."""
        family = secrets.token_urlsafe(18)
        document = {"_id": family, "revoked": False, "created": self.clock(),
                    **_fields(grant)}  # fmt: skip
        async with self.repository.write_gate():
            await self.families.insert_one(document)
        return replace(grant, family=family)

    async def save_code(
        self, grant: Grant, redirect_uri: str, challenge: str | None, method: str | None,
        nonce: str | None, code: str | None = None,
    ) -> str:  # fmt: skip
        """Store an authorization code (a new one unless given) for `grant`, a new family."""
        opened = await self.open(grant)
        code = code or secrets.token_urlsafe(32)
        document = {"_id": digest(code), "family": opened.family, "redirect_uri": redirect_uri,
                    "code_challenge": challenge, "code_challenge_method": method,
                    "nonce": nonce, "expires_at": self.clock() + CODE_SECONDS,
                    "used": False}  # fmt: skip
        async with self.repository.write_gate():
            await self.codes.insert_one(document)
        return code

    async def redeem_code(self, code: str, client_id: str) -> CodeRecord | None:
        """The code's record, consumed; None if unknown, expired, of another client or
        used before (then its family is revoked: a replayed code)."""
        found = await self._consume(self.codes, code, client_id)
        if found is None:
            return None
        document, grant = found
        return CodeRecord(grant, str(document["redirect_uri"]), document["code_challenge"],
                          document["code_challenge_method"], document["nonce"])  # fmt: skip

    async def issue_refresh(self, grant: Grant) -> str:
        """A new refresh token of `grant`'s family."""
        if grant.family is None:
            raise ValueError("a refresh token belongs to an authorization")
        token = secrets.token_urlsafe(32)
        document = {"_id": digest(token), "family": grant.family, "used": False,
                    "expires_at": self.clock() + self.refresh_lifetime}  # fmt: skip
        async with self.repository.write_gate():
            await self.refresh.insert_one(document)
        return token

    async def redeem_refresh(self, token: str, client_id: str) -> Grant | None:
        """The grant a refresh token carries, the token consumed (rotation); None if
        unknown, expired, revoked or of another client. A token used before revokes
        its family."""
        found = await self._consume(self.refresh, token, client_id)
        return None if found is None else found[1]

    async def _consume(
        self, stored: AsyncCollection[Any], credential: str, client_id: str
    ) -> tuple[dict[str, Any], Grant] | None:
        """Use up a single-use credential (a code, a refresh token): its row and grant;
        None if unknown, expired, revoked or of another client. One used before revokes
        its whole family: whoever replays it may hold a stolen copy."""
        async with self.repository.write_gate():
            document = await stored.find_one_and_update(
                {"_id": digest(credential), "used": False}, {"$set": {"used": True}}
            )
        if document is None:
            used = await stored.find_one({"_id": digest(credential)}, {"family": 1})
            if used is not None:
                await self.revoke_family(str(used["family"]))
            return None
        grant = await self._family(str(document["family"]))
        if grant is None or grant.client_id != client_id:
            return None
        if float(document["expires_at"]) <= self.clock():
            return None
        return document, grant

    async def revoke_refresh(self, token: str, client_id: str | None = None) -> bool:
        """Revoke the family of a refresh token (RFC 7009 2.1); False if unknown or,
        when `client_id` is given, another client's."""
        document = await self.refresh.find_one({"_id": digest(token)}, {"family": 1})
        if document is None:
            return False
        if client_id is not None:
            family = await self.families.find_one({"_id": document["family"]}, {"client_id": 1})
            if family is None or family["client_id"] != client_id:
                return False
        await self.revoke_family(str(document["family"]))
        return True

    async def revoke_family(self, family: str) -> None:
        async with self.repository.write_gate():
            await self.families.update_one({"_id": family}, {"$set": {"revoked": True}})
        await self.tokens.revoke_family(family)

    async def _family(self, family: str) -> Grant | None:
        document = await self.families.find_one({"_id": family})
        if document is None or document.get("revoked"):
            return None
        return Grant(
            client_id=str(document["client_id"]), subject=str(document["subject"]),
            scope=str(document["scope"]), patient=document.get("patient"),
            encounter=document.get("encounter"), fhir_user=document.get("fhir_user"),
            family=family,
        )  # fmt: skip


def _fields(grant: Grant) -> dict[str, Any]:
    return {"client_id": grant.client_id, "subject": grant.subject, "scope": grant.scope,
            "patient": grant.patient, "encounter": grant.encounter,
            "fhir_user": grant.fhir_user}  # fmt: skip
