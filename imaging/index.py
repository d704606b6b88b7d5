"""The study / series / instance index in MongoDB: one scalar document per entity.

nx-27017 answers `find()` wrongly on indexed array fields, so every indexed field here
is a scalar; ModalitiesInStudy is computed from the series documents. One instance is
added in one transaction: the instance row (its unique `_id` makes concurrent stores
of one SOP Instance UID agree), its series and study rows, and their counters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pymongo import ASCENDING, DESCENDING
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import DuplicateKeyError, OperationFailure

from fhir_server.errors import FhirError
from fhir_server.repository import Repository
from imaging.parse import ParsedInstance, fold

Document = dict[str, Any]
STUDIES, SERIES, INSTANCES, QUARANTINE = (
    "dicom_studies",
    "dicom_series",
    "dicom_instances",
    "dicom_quarantine",
)


class Added(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same bytes already there: success, no second copy
    REPLACED = "replaced"


@dataclass(frozen=True, slots=True)
class InstanceRow:
    key: str
    size: int
    sha256: str


class DicomIndex:
    def __init__(self, repository: Repository) -> None:
        # the repository's write gate and transactions: the embedded store needs every
        # writer in the process to take turns (see fhir_server.repository)
        self.repository = repository
        self.db: AsyncDatabase[Document] = repository.db
        self.studies: AsyncCollection[Document] = self.db[STUDIES]
        self.series: AsyncCollection[Document] = self.db[SERIES]
        self.instances: AsyncCollection[Document] = self.db[INSTANCES]
        self.quarantine: AsyncCollection[Document] = self.db[QUARANTINE]

    async def ensure_indexes(self) -> None:
        for field in ("PatientID", "StudyDate", "AccessionNumber", "_pn", "lu", "pk", "dirty"):
            await self.studies.create_index([(field, ASCENDING)])
        for field in ("st", "Modality", "SeriesNumber"):
            await self.series.create_index([(field, ASCENDING)])
        await self.instances.create_index([("st", ASCENDING), ("se", ASCENDING)])
        await self.instances.create_index([("se", ASCENDING), ("InstanceNumber", ASCENDING)])
        await self.quarantine.create_index([("at", DESCENDING)])

    async def find_instance(self, sop: str) -> Document | None:
        return await self.instances.find_one({"_id": sop})

    async def add(
        self, parsed: ParsedInstance, row: InstanceRow, replace: bool = False
    ) -> tuple[Added, Document | None]:
        """Index one stored instance; (what happened, the row it replaced if any)."""
        for attempt in range(5):
            try:
                async with self.repository.transaction() as session:
                    return await self._add(session, parsed, row, replace)
            except DuplicateKeyError:
                if attempt == 4:
                    raise
            except OperationFailure as error:  # write conflict of concurrent transactions
                if attempt == 4 or not error.has_error_label("TransientTransactionError"):
                    raise
        raise AssertionError("unreachable")

    async def _add(
        self, session: AsyncClientSession, parsed: ParsedInstance, row: InstanceRow, replace: bool
    ) -> tuple[Added, Document | None]:
        now = time.time_ns() // 1_000_000
        study = await self.studies.find_one({"_id": parsed.study}, session=session)
        if study is not None and study.get("pk") != parsed.patient_key:
            raise FhirError("MB-3006", "StudyInstanceUID is already used for another patient")
        existing = await self.instances.find_one({"_id": parsed.sop}, session=session)
        if existing is not None:
            if existing["sha256"] == row.sha256:
                return Added.DUPLICATE, existing
            if existing["st"] != parsed.study or existing["se"] != parsed.series:
                raise FhirError("MB-3005", "SOP Instance UID already stored in another series")
            if not replace:
                raise FhirError("MB-3005")
        instance_doc = {
            "st": parsed.study,
            "se": parsed.series,
            "key": row.key,
            "size": row.size,
            "sha256": row.sha256,
            "ts": parsed.transfer_syntax,
            "meta": parsed.metadata,
            "lu": now,
            **parsed.instance_attrs,
        }
        if existing is not None:
            instance_doc["previous_key"] = existing["key"]
            # $set, not replace_one: nx-27017 cannot serialize binary values in a replace
            await self.instances.update_one(
                {"_id": parsed.sop}, {"$set": instance_doc}, session=session
            )
            await self.studies.update_one(
                {"_id": parsed.study}, {"$set": {"lu": now, "dirty": True}}, session=session
            )
            return Added.REPLACED, existing
        await self.instances.insert_one({"_id": parsed.sop, **instance_doc}, session=session)
        series = await self.series.find_one({"_id": parsed.series}, {"_id": 1}, session=session)
        if series is None:
            await self.series.insert_one(
                {"_id": parsed.series, "st": parsed.study, "n": 1, **parsed.series_attrs},
                session=session,
            )
        else:
            await self.series.update_one(
                {"_id": parsed.series}, {"$inc": {"n": 1}}, session=session
            )
        new_series = 1 if series is None else 0
        if study is None:
            await self.studies.insert_one(
                {
                    "_id": parsed.study,
                    "pk": parsed.patient_key,
                    "lu": now,
                    "dirty": True,
                    "ns": new_series,
                    "ni": 1,
                    **_study_fields(parsed.study_attrs),
                },
                session=session,
            )
        else:
            await self.studies.update_one(
                {"_id": parsed.study},
                {"$inc": {"ns": new_series, "ni": 1}, "$set": {"lu": now, "dirty": True}},
                session=session,
            )
        return Added.STORED, None

    async def mark_linked(self, study: str, lu: int, fhir_id: str) -> None:
        """Clear the dirty flag unless another instance arrived since `lu`."""
        async with self.repository.write_gate():
            await self.studies.update_one(
                {"_id": study, "lu": lu}, {"$set": {"dirty": False, "fhir": fhir_id}}
            )

    async def studies_by_accession(self, accession: str) -> list[str]:
        cursor = self.studies.find({"AccessionNumber": accession}, {"_id": 1})
        return [doc["_id"] async for doc in cursor]

    async def dirty_studies(self, limit: int = 100) -> list[str]:
        cursor = self.studies.find({"dirty": True}, {"_id": 1}).limit(limit)
        return [doc["_id"] async for doc in cursor]

    async def study_tree(self, study: str) -> tuple[Document | None, list[Document]]:
        """The study row and its series rows, each with its instance rows (no metadata)."""
        study_doc = await self.studies.find_one({"_id": study})
        if study_doc is None:
            return None, []
        series_docs = [doc async for doc in self.series.find({"st": study})]
        by_series: dict[str, list[Document]] = {doc["_id"]: [] for doc in series_docs}
        cursor = self.instances.find({"st": study}, {"meta": 0})
        async for doc in cursor:
            by_series.setdefault(doc["se"], []).append(doc)
        for doc in series_docs:
            doc["instances"] = by_series.get(doc["_id"], [])
        return study_doc, series_docs

    async def add_quarantine(
        self, sha256: str, key: str, code: str, reason: str, source: str
    ) -> None:
        now = time.time_ns() // 1_000_000
        async with self.repository.write_gate():
            await self.quarantine.update_one(
                {"_id": sha256},
                {"$set": {"key": key, "code": code, "reason": reason, "source": source, "at": now}},
                upsert=True,
            )


def _study_fields(attrs: dict[str, Any]) -> Document:
    fields = dict(attrs)
    for keyword, folded in (("PatientName", "_pn"), ("ReferringPhysicianName", "_rpn")):
        if keyword in attrs:
            fields[folded] = fold(str(attrs[keyword]))
    return fields
