"""The study / series / instance index in MongoDB: one scalar document per entity.

nx-27017 answers `find()` wrongly on indexed array fields, so every indexed field here
is a scalar; ModalitiesInStudy is computed from the series documents. One instance is
added in one transaction: the instance row (its unique `_id` makes concurrent stores
of one SOP Instance UID agree), its series and study rows, and their counters.
"""

from __future__ import annotations

import time
from collections import Counter
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
        return await self.instances.find_one({"_id": sop}, {"meta": 0})

    async def instance_digests(self, sops: list[str]) -> dict[str, str]:
        """SOP Instance UID -> SHA-256 of what is stored, for those already indexed."""
        if not sops:
            return {}
        cursor = self.instances.find({"_id": {"$in": sops}}, {"sha256": 1})
        return {row["_id"]: row["sha256"] async for row in cursor}

    async def add(
        self, parsed: ParsedInstance, row: InstanceRow, replace: bool = False
    ) -> tuple[Added, Document | None]:
        """Index one stored instance; raises FhirError (MB-3005/3006) when refused."""
        result = (await self.add_many([(parsed, row)], replace))[0]
        if isinstance(result, FhirError):
            raise result
        return result, None

    async def add_many(
        self, items: list[tuple[ParsedInstance, InstanceRow]], replace: bool = False
    ) -> list[Added | FhirError]:
        """Index stored instances in one transaction; per item what happened or why not."""
        for attempt in range(5):
            try:
                async with self.repository.transaction() as session:
                    return await _Batch(self, session, replace).apply(items)
            except DuplicateKeyError:
                # another process indexed one of these meanwhile: read again and redo
                if attempt == 4:
                    raise
            except OperationFailure as error:  # write conflict of concurrent transactions
                if attempt == 4 or not error.has_error_label("TransientTransactionError"):
                    raise
        raise AssertionError("unreachable")

    async def set_metadata(self, sop: str, metadata: bytes) -> None:
        async with self.repository.write_gate():
            await self.instances.update_one({"_id": sop}, {"$set": {"meta": metadata}})

    async def without_metadata(self, limit: int) -> list[Document]:
        cursor = self.instances.find({"meta": None}, {"key": 1}).limit(limit)
        return [row async for row in cursor]

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


class _Batch:
    """One transaction's worth of instances: read what exists once, write in bulk."""

    def __init__(self, index: DicomIndex, session: AsyncClientSession, replace: bool) -> None:
        self.index = index
        self.session = session
        self.replace = replace
        self.now = time.time_ns() // 1_000_000

    async def _rows(
        self, collection: AsyncCollection[Document], ids: set[str]
    ) -> dict[str, Document]:
        cursor = collection.find({"_id": {"$in": sorted(ids)}}, {"meta": 0}, session=self.session)
        return {row["_id"]: row async for row in cursor}

    async def apply(
        self, items: list[tuple[ParsedInstance, InstanceRow]]
    ) -> list[Added | FhirError]:
        index, session = self.index, self.session
        studies = await self._rows(index.studies, {p.study for p, _ in items})
        existing = await self._rows(index.instances, {p.sop for p, _ in items})
        known_series = set(await self._rows(index.series, {p.series for p, _ in items}))
        results: list[Added | FhirError] = []
        new_instances: dict[str, Document] = {}
        new_series: dict[str, Document] = {}
        series_inc: Counter[str] = Counter()
        study_series: Counter[str] = Counter()
        study_instances: Counter[str] = Counter()
        touched: set[str] = set()
        for parsed, row in items:
            study = studies.get(parsed.study)
            if study is not None and study.get("pk") != parsed.patient_key:
                results.append(
                    FhirError("MB-3006", "StudyInstanceUID is already used for another patient")
                )
                continue
            if study is None:
                studies[parsed.study] = study = {
                    "_id": parsed.study, "pk": parsed.patient_key, "new": True,
                    **_study_fields(parsed.study_attrs),
                }  # fmt: skip
            previous = existing.get(parsed.sop) or new_instances.get(parsed.sop)
            document = _instance_document(parsed, row, self.now)
            if previous is not None:
                results.append(await self._again(parsed, row, previous, document))
                touched.add(parsed.study)
                continue
            new_instances[parsed.sop] = {"_id": parsed.sop, **document}
            if parsed.series in known_series:
                series_inc[parsed.series] += 1
            elif parsed.series in new_series:
                new_series[parsed.series]["n"] += 1
            else:
                new_series[parsed.series] = {
                    "_id": parsed.series,
                    "st": parsed.study,
                    "n": 1,
                    **parsed.series_attrs,
                }
                study_series[parsed.study] += 1
                modality = parsed.series_attrs.get("Modality")
                if modality:
                    study["mods"] = _add_modality(study.get("mods", ""), str(modality))
            study_instances[parsed.study] += 1
            touched.add(parsed.study)
            results.append(Added.STORED)
        if new_instances:
            await index.instances.insert_many(list(new_instances.values()), session=session)
        if new_series:
            await index.series.insert_many(list(new_series.values()), session=session)
        for series_uid, count in series_inc.items():
            await index.series.update_one(
                {"_id": series_uid}, {"$inc": {"n": count}}, session=session
            )
        for uid in sorted(touched):
            study = studies[uid]
            counts = {"ns": study_series[uid], "ni": study_instances[uid]}
            if study.pop("new", False):
                await index.studies.insert_one(
                    {**study, **counts, "lu": self.now, "dirty": True}, session=session
                )
            else:
                changes = {"lu": self.now, "dirty": True, "mods": study.get("mods", "")}
                await index.studies.update_one(
                    {"_id": uid}, {"$inc": counts, "$set": changes}, session=session
                )
        return results

    async def _again(
        self, parsed: ParsedInstance, row: InstanceRow, previous: Document, document: Document
    ) -> Added | FhirError:
        """A SOP Instance UID seen before: same bytes, refused, or replaced (old kept)."""
        if previous["sha256"] == row.sha256:
            return Added.DUPLICATE
        if previous["st"] != parsed.study or previous["se"] != parsed.series:
            return FhirError("MB-3005", "SOP Instance UID already stored in another series")
        if not self.replace:
            return FhirError("MB-3005")
        document["previous_key"] = previous["key"]
        # $set, not replace_one: nx-27017 cannot serialize binary values in a replace
        await self.index.instances.update_one(
            {"_id": parsed.sop}, {"$set": document, "$unset": {"meta": ""}}, session=self.session
        )
        return Added.REPLACED


def _add_modality(modalities: str, modality: str) -> str:
    """ModalitiesInStudy kept as one backslash-joined scalar (never an indexed array)."""
    values = {m for m in modalities.split("\\") if m}
    values.add(modality)
    return "\\".join(sorted(values))


def _instance_document(parsed: ParsedInstance, row: InstanceRow, now: int) -> Document:
    document: Document = {
        "st": parsed.study,
        "se": parsed.series,
        "key": row.key,
        "size": row.size,
        "sha256": row.sha256,
        "ts": parsed.transfer_syntax,
        "lu": now,
        **parsed.instance_attrs,
    }
    if parsed.metadata:
        document["meta"] = parsed.metadata
    if parsed.dose:
        document["dose"] = parsed.dose  # not indexed: read back only by the FHIR upkeep
    return document
