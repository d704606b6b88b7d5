"""Local user accounts of the authorization server.

A user signs in on the authorization page; the account names the FHIR resource the
user is (`fhirUser`: a Patient, Practitioner or RelatedPerson), which becomes the
`fhirUser` claim and, for a Patient, the launch context. Passwords are hashed with
scrypt (smart/hashing.py). After `lockout_failures` wrong passwords in a row the
account refuses every sign-in, right or wrong, for `lockout_minutes`.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

from pymongo.errors import DuplicateKeyError

from smart.hashing import MAX_SECRET_BYTES, hash_secret, verify_secret

if TYPE_CHECKING:
    from fhir_server.repository import Repository

COLLECTION = "smart_users"
FHIR_USER = re.compile(r"^(Patient|Practitioner|RelatedPerson)/[A-Za-z0-9\-.]{1,64}$")
USER_NAME = re.compile(r"^[A-Za-z0-9._@\-]{1,64}$")
MIN_PASSWORD_CHARS = 8


@cache
def _decoy() -> dict[str, Any]:
    return hash_secret("a password no account has")


@dataclass(frozen=True, slots=True)
class Account:
    name: str
    fhir_user: str

    @property
    def patient(self) -> str | None:
        """The Patient id when the user is a patient: the launch context of their tokens."""
        kind, _, identifier = self.fhir_user.partition("/")
        return identifier if kind == "Patient" else None


class AccountLocked(Exception):
    """Too many failed sign-ins: refused until `until` (epoch seconds)."""

    def __init__(self, until: float) -> None:
        super().__init__("the account is locked after repeated failed sign-ins")
        self.until = until


class Accounts:
    def __init__(
        self,
        repository: Repository,
        lockout_failures: int = 5,
        lockout_minutes: float = 15.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.repository = repository
        self.collection = repository.db[COLLECTION]
        self.lockout_failures = lockout_failures
        self.lockout_seconds = lockout_minutes * 60
        self.clock = clock

    async def add(self, name: str, password: str, fhir_user: str) -> Account:
        """Create a user; ValueError if the name is taken or a value is not acceptable."""
        check_account(name, password, fhir_user)
        hashed = await asyncio.to_thread(hash_secret, password)  # ~0.1 s: off the event loop
        document = {"_id": name, "fhir_user": fhir_user, "password": hashed,
                    "failures": 0, "locked_until": 0.0}  # fmt: skip
        async with self.repository.write_gate():
            try:
                await self.collection.insert_one(document)
            except DuplicateKeyError:
                raise ValueError(f"user {name!r} exists already") from None
        return Account(name, fhir_user)

    async def get(self, name: str) -> Account | None:
        document = await self.collection.find_one({"_id": name}, {"fhir_user": 1})
        return None if document is None else Account(name, str(document["fhir_user"]))

    async def authenticate(self, name: str, password: str) -> Account | None:
        """The account if the password is right; None if not (or no such user);
        `AccountLocked` while locked out, whatever the password."""
        document = await self.collection.find_one({"_id": name})
        if document is None:
            # the same work as for a real user, so timing does not tell which names exist
            await asyncio.to_thread(verify_secret, password, _decoy())
            return None
        now = self.clock()
        if float(document.get("locked_until", 0)) > now:
            raise AccountLocked(float(document["locked_until"]))
        if await asyncio.to_thread(verify_secret, password, document["password"]):
            if document.get("failures"):
                await self._set(name, {"failures": 0, "locked_until": 0.0})
            return Account(name, str(document["fhir_user"]))
        failures = int(document.get("failures", 0)) + 1
        changes: dict[str, Any] = {"failures": failures}
        if failures >= self.lockout_failures:
            changes = {"failures": 0, "locked_until": now + self.lockout_seconds}
        await self._set(name, changes)
        return None

    async def _set(self, name: str, changes: dict[str, Any]) -> None:
        async with self.repository.write_gate():
            await self.collection.update_one({"_id": name}, {"$set": changes})


def check_account(name: str, password: str, fhir_user: str) -> None:
    """ValueError naming what is wrong with a new account's values."""
    if not USER_NAME.match(name):
        raise ValueError("user name: 1-64 letters, digits or . _ @ -")
    if not FHIR_USER.match(fhir_user):
        raise ValueError("fhir user: Patient/ID, Practitioner/ID or RelatedPerson/ID")
    if len(password) < MIN_PASSWORD_CHARS or len(password.encode()) > MAX_SECRET_BYTES:
        raise ValueError(f"password: {MIN_PASSWORD_CHARS} to {MAX_SECRET_BYTES} bytes")
