"""What the consent engine reads from the store, cached per process and dropped whole
whenever a resource it is built from is written, in this process or another.

Per patient: the Patient (family doctor, birth date, deceased), who takes part in its
in-progress Encounters (care), its active Consents. Per signed-in user: the active
PractitionerRoles of a Practitioner (and their Organizations), the RelatedPerson of a
RelatedPerson user. A write of any type in `SOURCES` (the `consent.written` post-commit
hook) raises a counter document (`consent_versions`, `_id: "consent"`) and drops this
process's cache at once; every request that shows a patient's items compares the counter
with the value the cache was filled under and drops everything when it moved. So a
write through one process holds on the very next request to any other.

The counter is read once per request at most, and a read another request started after
this one arrived serves it too: whatever was written before this request arrived is in
that read (`refresh`). A fill that began before a drop is not kept (`_generation`).

A process that holds the write gate (`Repository.serializes_writes`: the embedded store,
or MongoDB with `MEDBRIDGE_SERIALIZE_WRITES=true`) is the only one writing the store, so
its own post-commit drop is the whole invalidation: it neither reads nor raises the
counter, and a signed-in user's request costs no store read for consent at all.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from fhir_server.repository import Repository
from fhir_server.search.extract import index_rows
from fhir_server.search.keys import key

COLLECTION = "consent_versions"
COUNTER = "consent"
MAX_PATIENTS = 10_000
# the resource types the engine's inputs are read from (docs/consent.md, "Inputs")
SOURCES = frozenset({"Consent", "Patient", "Encounter", "PractitionerRole", "RelatedPerson"})
PARTICIPANT = key("participant", "")  # the index rows of Encounter.participant.individual

T = TypeVar("T")
Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class PatientRecord:
    """What consent knows of one patient."""

    resource: Document | None  # the Patient as stored (None: not stored, or deleted)
    participants: frozenset[str]  # references taking part in its in-progress Encounters
    consents: tuple[Document, ...]  # its active Consents as stored


@dataclass(frozen=True, slots=True)
class ActorRecord:
    """What consent knows of one signed-in user (its `fhirUser`)."""

    roles: frozenset[str]  # a Practitioner's active PractitionerRoles
    organizations: frozenset[str]  # the Organizations of those roles
    resource: Document | None  # a RelatedPerson user's RelatedPerson


@dataclass(frozen=True, slots=True)
class _Read:
    started: float  # time.monotonic() when the counter read was sent
    version: int


class ConsentCache:
    def __init__(
        self, repository: Repository, max_patients: int = MAX_PATIENTS, shared: bool | None = None
    ) -> None:
        self.repository = repository
        self.max_patients = max_patients
        # other processes write the same store: unless this one holds the write gate
        self.shared = not repository.serializes_writes if shared is None else shared
        self._version: int | None = None
        self._generation = 0  # raised by every drop
        self._patients: OrderedDict[str, PatientRecord] = OrderedDict()
        self._actors: OrderedDict[str, ActorRecord] = OrderedDict()
        self._last: _Read | None = None  # the newest counter read that completed
        self._pending: dict[float, asyncio.Task[_Read]] = {}  # counter reads under way

    async def current_version(self) -> int:
        found = await self.repository.db[COLLECTION].find_one({"_id": COUNTER})
        return int(found["version"]) if found is not None else 0

    def prefetch(self, since: float) -> None:
        """Send the counter read of a request that arrived at `since` now, so that it
        runs beside the request's act instead of after it (the consent-decide hook)."""
        if self.shared and self._usable(since) is None:
            self._start()

    async def refresh(self, since: float | None = None) -> None:
        """Once per request: drop everything if a source was written since the cache was
        filled. `since` is when the request arrived (`time.monotonic()`): a counter read
        sent after it, finished or under way, answers for it as well as its own would."""
        if not self.shared:
            return  # every write is this process's, and `written` dropped what it changed
        found = self._usable(since) if since is not None else None
        if isinstance(found, _Read):
            read = found
        else:
            # shielded: a request that goes away leaves the read to the others awaiting it
            read = await asyncio.shield(found if found is not None else self._start())
        if self._last is None or read.started >= self._last.started:
            self._last = read
            if read.version != self._version:
                self._drop()
                self._version = read.version

    def _usable(self, since: float) -> _Read | asyncio.Task[_Read] | None:
        """The counter read sent at or after `since`: the newest finished one, else the
        first one under way."""
        if self._last is not None and self._last.started >= since:
            return self._last
        for started, task in self._pending.items():  # in the order they were sent
            if started >= since:
                return task
        return None

    def _start(self) -> asyncio.Task[_Read]:
        started = time.monotonic()
        task = asyncio.ensure_future(self._read(started))
        task.add_done_callback(_retrieved)
        self._pending[started] = task
        return task

    async def _read(self, started: float) -> _Read:
        try:
            return _Read(started, await self.current_version())
        finally:
            self._pending.pop(started, None)

    async def patient(self, patient_id: str) -> PatientRecord:
        cached = self._patients.get(patient_id)
        if cached is not None:
            self._patients.move_to_end(patient_id)
            return cached
        return await self._fill(self._patients, patient_id, lambda: self._load(patient_id))

    async def actor(self, fhir_user: str) -> ActorRecord:
        cached = self._actors.get(fhir_user)
        if cached is not None:
            self._actors.move_to_end(fhir_user)
            return cached
        return await self._fill(self._actors, fhir_user, lambda: self._load_actor(fhir_user))

    async def consents(self, patient_id: str) -> list[Document]:
        """The patient's active Consents as stored JSON."""
        return list((await self.patient(patient_id)).consents)

    async def _fill(
        self, table: OrderedDict[str, T], name: str, load: Callable[[], Awaitable[T]]
    ) -> T:
        generation = self._generation
        loaded = await load()
        # read before a drop: may predate the write that caused it, so it is not kept
        if generation == self._generation:
            table[name] = loaded
            if len(table) > self.max_patients:
                table.popitem(last=False)
        return loaded

    async def _load(self, patient_id: str) -> PatientRecord:
        reference = f"Patient/{patient_id}"
        patient = await self._resource("Patient", patient_id)
        criteria = [("patient", patient_id), ("status", "in-progress")]
        participants: set[str] = set()
        for encounter in await self._all("Encounter", criteria):
            # as the `participant` search parameter has them, which rule 1 once searched
            participants.update(
                row["k"][len(PARTICIPANT) :]
                for row in index_rows(encounter)
                if row["k"].startswith(PARTICIPANT)
            )
        consents = await self._all("Consent", [("patient", reference), ("status", "active")])
        return PatientRecord(patient, frozenset(participants), tuple(consents))

    async def _load_actor(self, fhir_user: str) -> ActorRecord:
        resource_type, _, resource_id = fhir_user.partition("/")
        if resource_type == "RelatedPerson" and resource_id:
            person = await self._resource(resource_type, resource_id)
            return ActorRecord(frozenset(), frozenset(), person)
        if resource_type != "Practitioner" or not resource_id:
            return ActorRecord(frozenset(), frozenset(), None)
        roles, organizations = set(), set()
        criteria = [("practitioner", fhir_user)]
        for role_id in await self.repository.matching_ids("PractitionerRole", criteria):
            role = await self._resource("PractitionerRole", role_id)
            if role is None or role.get("active") is False:
                continue
            roles.add(f"PractitionerRole/{role_id}")
            organization = role.get("organization", {}).get("reference")
            if isinstance(organization, str):
                organizations.add(organization)
        return ActorRecord(frozenset(roles), frozenset(organizations), None)

    async def _resource(self, resource_type: str, resource_id: str) -> Document | None:
        stored = await self.repository.read(resource_type, resource_id)
        if stored is None or stored.raw is None:
            return None
        parsed: Document = orjson.loads(stored.raw)
        return parsed

    async def _all(self, resource_type: str, criteria: list[tuple[str, str]]) -> list[Document]:
        found = []
        for resource_id in await self.repository.matching_ids(resource_type, criteria):
            resource = await self._resource(resource_type, resource_id)
            if resource is not None:
                found.append(resource)
        return found

    async def written(self) -> None:
        """A source was written: raise the counter (every process drops its cache) and
        drop this process's cache at once."""
        if not self.shared:
            self._drop()
            return
        async with self.repository.write_gate():
            await self.repository.db[COLLECTION].update_one(
                {"_id": COUNTER}, {"$inc": {"version": 1}}, upsert=True
            )
        self._drop()
        self._version = None
        self._last = None  # requests that arrive from now on read the counter anew

    def _drop(self) -> None:
        self._patients.clear()
        self._actors.clear()
        self._generation += 1


def _retrieved(task: asyncio.Task[_Read]) -> None:
    # a prefetched read whose request never awaited it (refused, or not shown) must not
    # log "exception was never retrieved": the requests that await it get the exception
    if not task.cancelled():
        task.exception()
