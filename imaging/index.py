"""The study / series / instance index in MongoDB: one scalar document per entity.

nx-27017 answers `find()` wrongly on indexed array fields, so every indexed field here
is a scalar; ModalitiesInStudy is computed from the series documents. Instances are
planned per group (the instances of concurrent callers share their reads, see
imaging.coalesce), and each group's writes - the instance rows (a unique `_id` makes
concurrent stores of one SOP Instance UID agree), their series and study rows, and
their counters - are one write unit of the repository's one write path
(fhir_server.group_commit), committed atomically, in the same batch as concurrent
FHIR units where the store takes group commit.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pymongo import ASCENDING, DESCENDING, UpdateOne
from pymongo.asynchronous.collection import AsyncCollection
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    DuplicateKeyError,
    OperationFailure,
)

from access.errors import AccessError
from fhir_server import store_errors
from fhir_server.group_commit import Write, insert
from fhir_server.repository import Repository
from imaging.coalesce import Coalescer
from imaging.parse import ParsedInstance, fold

Document = dict[str, Any]
STUDIES, SERIES, INSTANCES, QUARANTINE = (
    "dicom_studies",
    "dicom_series",
    "dicom_instances",
    "dicom_quarantine",
)
INSTANCE_FIELDS = {"sha256": 1, "st": 1, "se": 1, "key": 1}
# an instance row whose DICOM JSON (`meta`) is still to be made; indexed, removed with it
NO_METADATA = "nm"
CACHE_LIMIT = 100_000  # studies' owners and known series remembered by the index
# the upkeep's failure record on a study row (see mark_failed)
UPKEEP_UNSET = {"tries": "", "reason": "", "next": "", "parked": "", "failed_at": ""}


class Added(StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"  # same bytes already there: success, no second copy
    REPLACED = "replaced"


@dataclass(frozen=True, slots=True)
class InstanceRow:
    key: str
    size: int
    sha256: str


# (instance, stored object, replace different bytes?, found indexed before the object write?)
Pending = tuple[ParsedInstance, "InstanceRow", bool, bool]


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
        self._study_owners: dict[str, str] = {}  # study -> patient key, fixed once stored
        self._known_series: set[str] = set()  # series rows that exist (never removed)
        self._reader: Coalescer[str, Document | None] = Coalescer(self._read_instances)
        self._writer: Coalescer[Pending, Added | AccessError] = Coalescer(self._write_group)

    async def ensure_indexes(self) -> None:
        # `patient`: the study's FHIR Patient id, which a patient restriction matches on
        for field in (
            "PatientID", "StudyDate", "AccessionNumber", "_pn", "lu", "pk", "dirty", "patient",
        ):  # fmt: skip
            await self.studies.create_index([(field, ASCENDING)])
        for field in ("st", "Modality", "SeriesNumber"):
            await self.series.create_index([(field, ASCENDING)])
        await self.instances.create_index([("st", ASCENDING), ("se", ASCENDING)])
        await self.instances.create_index([("se", ASCENDING), ("InstanceNumber", ASCENDING)])
        await self.instances.create_index([(NO_METADATA, ASCENDING)])
        await self.quarantine.create_index([("at", DESCENDING)])

    async def find_instance(self, sop: str) -> Document | None:
        return await self.instances.find_one({"_id": sop}, {"meta": 0})

    async def instance_digests(self, sops: list[str]) -> dict[str, str]:
        """SOP Instance UID -> SHA-256 of what is stored, for those already indexed."""
        rows = await self.stored_instances(sops)
        return {sop: row["sha256"] for sop, row in rows.items()}

    async def stored_instances(self, sops: list[str]) -> dict[str, Document]:
        """SOP Instance UID -> its row (digest, study, series, key), for those indexed;
        concurrent callers share one read."""
        rows = await self._reader.submit(sops)
        return {sop: row for sop, row in zip(sops, rows, strict=True) if row is not None}

    async def _read_instances(self, sops: list[str]) -> list[Document | None]:
        cursor = self.instances.find({"_id": {"$in": sorted(set(sops))}}, INSTANCE_FIELDS)
        found = {row["_id"]: row async for row in cursor}
        return [found.get(sop) for sop in sops]

    async def add(
        self, parsed: ParsedInstance, row: InstanceRow, replace: bool = False
    ) -> tuple[Added, Document | None]:
        """Index one stored instance; raises AccessError (MB-3005/3006) when refused."""
        result = (await self.add_many([(parsed, row)], replace))[0]
        if isinstance(result, AccessError):
            raise result
        return result, None

    async def add_many(
        self,
        items: list[tuple[ParsedInstance, InstanceRow]],
        replace: bool = False,
        seen: set[str] | None = None,
    ) -> list[Added | AccessError]:
        """Index stored instances; per item what happened or why not. Instances of
        concurrent callers go in one transaction. `seen`: the SOP Instance UIDs the
        caller found indexed (None: unknown, read them all)."""
        return await self._writer.submit(
            [(parsed, row, replace, seen is None or parsed.sop in seen) for parsed, row in items]
        )

    async def _write_group(self, items: list[Pending]) -> list[Added | AccessError]:
        for attempt in range(5):
            try:
                return await _Batch(self, fresh=attempt > 0).apply(items)
            except DuplicateKeyError:
                # another process indexed one of these meanwhile: read again and redo
                if attempt == 4:
                    raise
            except OperationFailure as error:  # write conflict of concurrent transactions
                if attempt == 4 or not store_errors.transient(error):
                    raise
                await store_errors.pause(attempt)
        raise AssertionError("unreachable")

    async def _commit(self, writes: list[Write]) -> None:
        """The group's writes as one unit of the repository's one write path: queued to
        its group commit with concurrent FHIR units where it has one, else one
        transaction of their own (the store's bulkWrite when it speaks it)."""
        await self.repository.apply_writes(writes)

    async def set_metadata(self, sop: str, metadata: bytes) -> None:
        await self.set_metadata_many([(sop, metadata)])

    async def set_metadata_many(self, metadata: list[tuple[str, bytes]]) -> None:
        """Several instances' DICOM JSON in one store request and one turn of the write
        gate (the background fill: each of its writes held the gate, and every HL7 and
        FHIR write waited behind it)."""
        if not metadata:
            return
        updates = [
            UpdateOne({"_id": sop}, {"$set": {"meta": meta}, "$unset": {NO_METADATA: ""}})
            for sop, meta in metadata
        ]
        async with self.repository.write_gate():
            await self.instances.bulk_write(updates, ordered=False)

    async def without_metadata(self, limit: int) -> list[Document]:
        """Instances whose DICOM JSON is still to be made, by their indexed flag: a filter
        on `meta` itself read every instance row of the archive (the store has no index
        on it) each time the filler looked, 10 s after every quiet spell."""
        cursor = self.instances.find({NO_METADATA: 1}, {"key": 1}).limit(limit)
        return [row async for row in cursor]

    async def mark_linked(
        self,
        study: str,
        lu: int,
        fhir_id: str,
        had_failed: bool = False,
        patient: str | None = None,
    ) -> None:
        """Clear the dirty flag unless another instance arrived since `lu`; forget the
        failed attempts of the upkeep either way (it has just succeeded). `patient`: the
        FHIR Patient id the ImagingStudy names as subject, recorded whatever arrived
        since (a patient-restricted access sees the study through it)."""
        async with self.repository.write_gate():
            changes: Document = {"dirty": False, "fhir": fhir_id}
            if patient is not None:
                changes["patient"] = patient
            found = await self.studies.update_one({"_id": study, "lu": lu}, {"$set": changes})
            if patient is not None and not found.matched_count:
                await self.studies.update_one({"_id": study}, {"$set": {"patient": patient}})
            if had_failed:
                await self.studies.update_one({"_id": study}, {"$unset": UPKEEP_UNSET})

    async def relink_unrecorded(self) -> int:
        """Mark for the upkeep the studies linked before their patient was recorded on
        the row (`fhir` set, `patient` not): until it runs, a patient-restricted access
        does not see them. Once per start; nothing to do after the first."""
        where: Document = {"fhir": {"$exists": True}, "patient": {"$exists": False}}
        found = [row["_id"] async for row in self.studies.find(where, {"_id": 1})]
        if found:
            async with self.repository.write_gate():
                await self.studies.update_many({"_id": {"$in": found}}, {"$set": {"dirty": True}})
        return len(found)

    async def mark_failed(
        self, study: str, reason: str, delay: Callable[[int], float | None]
    ) -> tuple[int, bool]:
        """Count a failed upkeep of `study`: its next try after `delay(attempts)` seconds,
        or parked (None) until an operator retries. (attempts, parked)."""
        row = await self.studies.find_one({"_id": study}, {"tries": 1})
        attempts = int((row or {}).get("tries", 0)) + 1
        wait = delay(attempts)
        now = time.time_ns() // 1_000_000
        changes: Document = {"tries": attempts, "reason": reason, "failed_at": now}
        changes["parked"] = wait is None
        changes["next"] = now + int((wait or 0) * 1000)
        async with self.repository.write_gate():
            await self.studies.update_one({"_id": study}, {"$set": changes})
        return attempts, wait is None

    async def upkeep_rows(self, limit: int = 1000) -> list[Document]:
        """Studies waiting for the ImagingStudy upkeep: marked, failed or parked."""
        fields = {"dirty": 1, "tries": 1, "reason": 1, "next": 1, "parked": 1, "failed_at": 1}
        cursor = self.studies.find({"$or": [{"dirty": True}, {"parked": True}]}, fields).limit(
            limit
        )
        return [row async for row in cursor]

    async def unpark(self, studies: list[str] | None) -> list[str]:
        """Make parked (or the named) studies due now, their attempts forgotten."""
        where: Document = {"parked": True} if studies is None else {"_id": {"$in": studies}}
        found = [row["_id"] async for row in self.studies.find(where, {"_id": 1})]
        if found:
            async with self.repository.write_gate():
                await self.studies.update_many(
                    {"_id": {"$in": found}}, {"$set": {"dirty": True}, "$unset": UPKEEP_UNSET}
                )
        return found

    async def studies_by_accession(self, accession: str) -> list[str]:
        cursor = self.studies.find({"AccessionNumber": accession}, {"_id": 1})
        return [doc["_id"] async for doc in cursor]

    async def dirty_studies(self, limit: int = 100) -> list[str]:
        """Studies the upkeep should sync now: marked, not parked, their retry due."""
        now = time.time_ns() // 1_000_000
        due = {"$or": [{"next": {"$exists": False}}, {"next": {"$lte": now}}]}
        cursor = self.studies.find(
            {"dirty": True, "parked": {"$ne": True}, **due}, {"_id": 1}
        ).limit(limit)
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
    """One transaction's worth of instances: read only what the caches do not know,
    then write everything in one bulk."""

    def __init__(self, index: DicomIndex, fresh: bool) -> None:
        self.index = index
        self.fresh = fresh  # after a conflict: trust no cache, read everything again
        self.now = time.time_ns() // 1_000_000

    async def _rows(
        self, collection: AsyncCollection[Document], ids: set[str]
    ) -> dict[str, Document]:
        if not ids:
            return {}
        cursor = collection.find({"_id": {"$in": sorted(ids)}}, {"meta": 0})
        return {row["_id"]: row async for row in cursor}

    async def apply(self, items: list[Pending]) -> list[Added | AccessError]:
        # no other index writer runs meanwhile in this process (the index's Coalescer runs
        # one group at a time), and another process's insert makes the bulk fail on a
        # unique _id, which redoes the group fresh
        index, fresh = self.index, self.fresh
        owners = index._study_owners
        known_series = index._known_series
        new_series_uids = {p.series for p, *_ in items if fresh or p.series not in known_series}
        found_series = set(await self._rows(index.series, new_series_uids))
        series_exist = {uid for uid in new_series_uids if uid in found_series} | (
            {p.series for p, *_ in items} - new_series_uids
        )
        # a study row is read when its owner is unknown or a series joins it (its
        # ModalitiesInStudy is rewritten)
        read_studies = {
            p.study
            for p, *_ in items
            if fresh or p.study not in owners or p.series not in series_exist
        }
        studies = await self._rows(index.studies, read_studies)
        existing = await self._rows(
            index.instances, {p.sop for p, _, _, seen in items if seen or fresh}
        )
        results: list[Added | AccessError] = []
        writes: list[Write] = []
        new_instances: dict[str, Document] = {}
        new_series: dict[str, Document] = {}
        series_inc: Counter[str] = Counter()
        study_series: Counter[str] = Counter()
        study_instances: Counter[str] = Counter()
        touched: set[str] = set()
        new_studies: dict[str, Document] = {}
        for parsed, row, replace, _ in items:
            study = studies.get(parsed.study) or new_studies.get(parsed.study)
            if study is not None:
                owner = study.get("pk")
            else:  # read and not there: a new study, whatever the cache remembers
                owner = None if parsed.study in read_studies else owners.get(parsed.study)
            if owner is not None and owner != parsed.patient_key:
                results.append(
                    AccessError("MB-3006", "StudyInstanceUID is already used for another patient")
                )
                continue
            if study is None and owner is None:
                new_studies[parsed.study] = study = {
                    "_id": parsed.study, "pk": parsed.patient_key,
                    **_study_fields(parsed.study_attrs),
                }  # fmt: skip
            previous = existing.get(parsed.sop) or new_instances.get(parsed.sop)
            document = _instance_document(parsed, row, self.now)
            if previous is not None:
                results.append(self._again(parsed, row, previous, document, replace, writes))
                touched.add(parsed.study)
                continue
            new_instances[parsed.sop] = {"_id": parsed.sop, **document}
            if parsed.series in series_exist:
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
                assert study is not None  # read above: a series joins it
                if modality:
                    study["mods"] = _add_modality(study.get("mods", ""), str(modality))
            study_instances[parsed.study] += 1
            touched.add(parsed.study)
            results.append(Added.STORED)
        writes += [insert(INSTANCES, doc) for doc in new_instances.values()]
        writes += [insert(SERIES, doc) for doc in new_series.values()]
        writes += [
            Write(SERIES, "update", {"$inc": {"n": count}}, {"_id": uid})
            for uid, count in series_inc.items()
        ]
        for uid in sorted(touched):
            counts = {"ns": study_series[uid], "ni": study_instances[uid]}
            if uid in new_studies:
                document = {**new_studies[uid], **counts, "lu": self.now, "dirty": True}
                writes.append(insert(STUDIES, document))
                continue
            changes: Document = {"lu": self.now, "dirty": True}
            if uid in studies:
                changes["mods"] = studies[uid].get("mods", "")
            writes.append(Write(STUDIES, "update", {"$inc": counts, "$set": changes}, {"_id": uid}))
        if writes:
            await index._commit(writes)
        # what is written stays: a study's patient and a series' existence never change
        if len(owners) > CACHE_LIMIT or len(known_series) > CACHE_LIMIT:
            owners.clear()
            known_series.clear()
        for parsed, *_ in items:
            study = studies.get(parsed.study) or new_studies.get(parsed.study)
            if study is not None and parsed.study not in owners:
                owners[parsed.study] = str(study.get("pk"))
        known_series.update(series_exist, new_series)
        return results

    def _again(
        self,
        parsed: ParsedInstance,
        row: InstanceRow,
        previous: Document,
        document: Document,
        replace: bool,
        writes: list[Write],
    ) -> Added | AccessError:
        """A SOP Instance UID seen before: same bytes, refused, or replaced (old kept)."""
        if previous["sha256"] == row.sha256:
            return Added.DUPLICATE
        if previous["st"] != parsed.study or previous["se"] != parsed.series:
            return AccessError("MB-3005", "SOP Instance UID already stored in another series")
        if not replace:
            return AccessError("MB-3005")
        document["previous_key"] = previous["key"]
        # $set, not replace_one: nx-27017 cannot serialize binary values in a replace
        writes.append(
            Write(
                INSTANCES, "update", {"$set": document, "$unset": {"meta": ""}}, {"_id": parsed.sop}
            )
        )
        previous.update(document)  # a later item of this group sees this version
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
    else:
        document[NO_METADATA] = 1
    if parsed.dose:
        document["dose"] = parsed.dose  # not indexed: read back only by the FHIR upkeep
    return document
