"""The active Consents of each patient, cached per process and dropped whenever any
Consent is written, in this process or another.

Cross-process: a counter document (`consent_versions`, `_id: "consent"`) is raised by
every Consent write (a post-commit hook) and read once per request that needs Consents
(one find_one by `_id`). A cache filled under another counter value is thrown away whole,
so a Consent written through one process holds on the very next request to any other.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

import orjson

from fhir_server.repository import Repository

COLLECTION = "consent_versions"
COUNTER = "consent"
MAX_PATIENTS = 10_000


class ConsentCache:
    def __init__(self, repository: Repository, max_patients: int = MAX_PATIENTS) -> None:
        self.repository = repository
        self.max_patients = max_patients
        self._version: int | None = None
        self._consents: OrderedDict[str, list[dict[str, Any]]] = OrderedDict()

    async def current_version(self) -> int:
        found = await self.repository.db[COLLECTION].find_one({"_id": COUNTER})
        return int(found["version"]) if found is not None else 0

    async def refresh(self) -> None:
        """Once per request: forget everything if any Consent was written since."""
        version = await self.current_version()
        if version != self._version:
            self._consents.clear()
            self._version = version

    async def consents(self, patient_id: str) -> list[dict[str, Any]]:
        """The patient's active Consents as stored JSON."""
        cached = self._consents.get(patient_id)
        if cached is not None:
            self._consents.move_to_end(patient_id)
            return cached
        criteria = [("patient", f"Patient/{patient_id}"), ("status", "active")]
        found = []
        for consent_id in await self.repository.matching_ids("Consent", criteria):
            stored = await self.repository.read("Consent", consent_id)
            if stored is not None and stored.raw is not None:
                found.append(orjson.loads(stored.raw))
        self._consents[patient_id] = found
        if len(self._consents) > self.max_patients:
            self._consents.popitem(last=False)
        return found

    async def written(self) -> None:
        """A Consent was written: raise the counter (every process drops its cache) and
        drop this process's cache at once."""
        async with self.repository.write_gate():
            await self.repository.db[COLLECTION].update_one(
                {"_id": COUNTER}, {"$inc": {"version": 1}}, upsert=True
            )
        self._consents.clear()
        self._version = None
