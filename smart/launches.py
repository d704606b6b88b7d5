"""EHR launch contexts (SMART App Launch 2.x, "EHR launch"): the EHR records who is
in context (a patient, optionally an encounter and the user) and gets an opaque
`launch` value it hands to the app; the app sends it back in `/auth/authorize`.

A launch is short-lived and single use, and may be bound to one client: it is stored
as its SHA-256 only (the store never holds a usable value), looked at while the pages
run (`find`) and consumed atomically when the user approves (`redeem`), so two apps
(or two tabs) racing with one value get one grant between them.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from smart.grants import digest

if TYPE_CHECKING:
    from fhir_server.repository import Repository

LAUNCHES = "smart_launches"
FHIR_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")
MAX_LAUNCH_CHARS = 256  # ours are 43; anything longer is not one of ours, unread


@dataclass(frozen=True, slots=True)
class LaunchContext:
    """What the EHR put in context; `user` an account name, `client_id` the only app
    that may use it (None: any registered app, once)."""

    patient: str
    encounter: str | None = None
    user: str | None = None
    client_id: str | None = None


class LaunchRefused(Exception):
    """Why a `launch` value cannot be used; the message is safe to show the app."""


class Launches:
    def __init__(
        self, repository: Repository, lifetime: int = 300, clock: Callable[[], float] = time.time
    ) -> None:
        self.repository = repository
        self.lifetime = lifetime
        self.clock = clock
        self.collection = repository.db[LAUNCHES]

    async def create(self, context: LaunchContext) -> str:
        """Record a launch context; the opaque `launch` value for it."""
        for name, value in (("patient", context.patient), ("encounter", context.encounter)):
            if value is not None and not FHIR_ID.match(value):
                raise ValueError(f"{name}: a FHIR id (1-64 letters, digits, - or .)")
        launch = secrets.token_urlsafe(32)
        document = {"_id": digest(launch), "patient": context.patient,
                    "encounter": context.encounter, "user": context.user,
                    "client_id": context.client_id, "used": False,
                    "expires_at": self.clock() + self.lifetime}  # fmt: skip
        async with self.repository.write_gate():
            await self.collection.insert_one(document)
        return launch

    async def find(self, launch: str, client_id: str) -> LaunchContext:
        """The context of a launch `client_id` may still use; `LaunchRefused` if not."""
        document = await self._document(launch)
        return self._usable(document, client_id)

    async def redeem(self, launch: str, client_id: str) -> LaunchContext:
        """As `find`, and the launch is spent: a second redemption is refused."""
        context = await self.find(launch, client_id)  # another app's attempt spends nothing
        async with self.repository.write_gate():
            document = await self.collection.find_one_and_update(
                {"_id": digest(launch), "used": False}, {"$set": {"used": True}}
            )
        if document is None:
            raise LaunchRefused("the launch was used already")
        return context

    async def _document(self, launch: str) -> dict[str, Any]:
        if len(launch) > MAX_LAUNCH_CHARS:
            raise LaunchRefused("unknown launch")
        document = await self.collection.find_one({"_id": digest(launch)})
        if document is None:
            raise LaunchRefused("unknown launch")
        return document

    def _usable(
        self, document: dict[str, Any], client_id: str, check_used: bool = True
    ) -> LaunchContext:
        if check_used and document.get("used"):
            raise LaunchRefused("the launch was used already")
        if float(document["expires_at"]) <= self.clock():
            raise LaunchRefused("the launch expired")
        bound = document.get("client_id")
        if bound is not None and bound != client_id:
            # the same words as an unknown one: another app learns nothing about it
            raise LaunchRefused("unknown launch")
        return LaunchContext(str(document["patient"]), document.get("encounter"),
                             document.get("user"), bound)  # fmt: skip
