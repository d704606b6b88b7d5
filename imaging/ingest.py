"""The one ingest path: STOW-RS, `medbridge dicom import` and C-STORE all call `ingest`.

parse + check (imaging.parse) -> duplicate check -> atomic object write -> index
transaction -> outcome. Anything unacceptable is quarantined with its reason and
answered with a failure status; nothing raises to the caller. The FHIR side
(ImagingStudy upkeep) runs after, per study, through `imaging.fhir_link.StudyLinker`.

From a pynetdicom handler thread:
    future = asyncio.run_coroutine_threadsafe(ingestor.ingest(data, "dimse:AE"), loop)
    outcome = future.result(timeout)
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field

import orjson

from fhir_server.errors import FhirError
from imaging.index import Added, DicomIndex, InstanceRow
from imaging.objectstore import ObjectStore, ObjectStoreError, instance_key, quarantine_key
from imaging.parse import Limits, ParsedInstance, parse

log = logging.getLogger(__name__)

SUCCESS = 0x0000


@dataclass(frozen=True, slots=True)
class IngestOutcome:
    """One instance's answer: DIMSE status 0 for success, else the failure reason."""

    status: int
    sop_class: str | None = None
    sop_instance: str | None = None
    study: str | None = None
    series: str | None = None
    code: str | None = None  # MB-3xxx when failed
    reason: str | None = None
    added: Added | None = None
    sha256: str | None = None

    @property
    def ok(self) -> bool:
        return self.status == SUCCESS


@dataclass(frozen=True, slots=True)
class IngestPolicy:
    limits: Limits = field(default_factory=Limits)
    replace_different: bool = False  # same SOP Instance UID, other bytes: replace or refuse


class Ingestor:
    def __init__(self, store: ObjectStore, index: DicomIndex, policy: IngestPolicy) -> None:
        self.store = store
        self.index = index
        self.policy = policy

    async def ingest(
        self, data: bytes, source: str, expected_study: str | None = None
    ) -> IngestOutcome:
        """Store one Part 10 instance; never raises, answers with a status instead."""
        sha256 = hashlib.sha256(data).hexdigest()
        parsed: ParsedInstance | None = None
        try:
            parsed = parse(data, self.policy.limits)
            if expected_study is not None and parsed.study != expected_study:
                raise FhirError("MB-3007", "StudyInstanceUID differs from the study in the URL")
            return await self._store(parsed, data, sha256)
        except FhirError as error:
            if error.code in ("MB-3005", "MB-3006", "MB-3007"):
                log.info("instance refused: %s", error.code)
            else:
                await self._quarantine(data, sha256, error.code, error.diagnostics, source)
            return _failed(parsed, error, sha256)
        except Exception as error:
            log.exception("ingest failed unexpectedly")
            failure = FhirError("MB-1000", f"internal error: {type(error).__name__}")
            await self._quarantine(data, sha256, failure.code, failure.diagnostics, source)
            return _failed(parsed, failure, sha256)

    async def _store(self, parsed: ParsedInstance, data: bytes, sha256: str) -> IngestOutcome:
        existing = await self.index.find_instance(parsed.sop)
        if existing is not None and existing["sha256"] == sha256:
            return _success(parsed, Added.DUPLICATE, sha256)
        if existing is not None and not self.policy.replace_different:
            raise FhirError("MB-3005")
        key = instance_key(parsed.study, parsed.series, parsed.sop, sha256)
        try:
            await self.store.put(key, data, sha256)
        except (ObjectStoreError, OSError) as error:
            log.error("object store write failed: %s", type(error).__name__)
            raise FhirError("MB-3008") from error
        added, _ = await self.index.add(
            parsed, InstanceRow(key, len(data), sha256), self.policy.replace_different
        )
        return _success(parsed, added, sha256)

    async def _quarantine(
        self, data: bytes, sha256: str, code: str, reason: str, source: str
    ) -> None:
        """Keep refused bytes with the reason, so nothing that was sent is lost."""
        try:
            key = quarantine_key(sha256)
            await self.store.put(key, data, sha256)
            note = {"code": code, "reason": reason, "source": source, "size": len(data)}
            await self.store.put(key.removesuffix(".bin") + ".json", orjson.dumps(note))
            await self.index.add_quarantine(sha256, key, code, reason, source)
        except Exception:
            log.exception("quarantine write failed")


def _success(parsed: ParsedInstance, added: Added, sha256: str) -> IngestOutcome:
    return IngestOutcome(
        SUCCESS, parsed.sop_class, parsed.sop, parsed.study, parsed.series,
        added=added, sha256=sha256,
    )  # fmt: skip


def _failed(parsed: ParsedInstance | None, error: FhirError, sha256: str) -> IngestOutcome:
    return IngestOutcome(
        status=error.entry.dimse,
        sop_class=parsed.sop_class if parsed else None,
        sop_instance=parsed.sop if parsed else None,
        study=parsed.study if parsed else None,
        series=parsed.series if parsed else None,
        code=error.code,
        reason=error.diagnostics,
        sha256=sha256,
    )
