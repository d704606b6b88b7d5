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

import asyncio
import hashlib
import logging
import time
from dataclasses import dataclass, field

import orjson

from access.errors import AccessError
from access.failures import log_failure
from imaging.index import Added, DicomIndex, Document, InstanceRow
from imaging.objectstore import ObjectStore, ObjectStoreError, instance_key, quarantine_key
from imaging.parse import Limits, ParsedInstance
from imaging.parse_pool import Parser
from imaging.same_instance import same_data_set

log = logging.getLogger(__name__)

SUCCESS = 0x0000
THREADED_DIGEST = 256 * 1024
# a study sent again (a modality retrying, a PACS re-pushing) turns the duplicate
# check's read back on after one repeat, and it stays on for ~20 new instances after
REPEATS_DECAY = 0.9
REPEATS_FOR_READ = 0.01


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
    # an instance over the size cap is kept in quarantine only up to this many bytes: the
    # header says what it was, and a 600 MB refusal must not cost 600 MB of disk
    quarantine_prefix_bytes: int = 1024 * 1024


@dataclass(frozen=True, slots=True)
class Oversize:
    """An instance received over the size cap and not kept whole (imaging/dimse/part10.py):
    its first bytes, its size and the SHA-256 of everything sent."""

    prefix: bytes
    size: int
    sha256: str


class Ingestor:
    def __init__(
        self,
        store: ObjectStore,
        index: DicomIndex,
        policy: IngestPolicy,
        parser: Parser | None = None,
    ) -> None:
        self.store = store
        self.index = index
        self.policy = policy
        self.parser = parser or Parser()  # inline unless given worker processes
        self.last_ingest = 0.0  # monotonic time of the last ingest: background work waits
        self._repeats = 0.0  # recent share of instances already stored (see `optimistic`)

    async def ingest(
        self, data: bytes, source: str, expected_study: str | None = None
    ) -> IngestOutcome:
        """Store one Part 10 instance; never raises, answers with a status instead."""
        return (await self.ingest_many([data], source, expected_study))[0]

    async def refuse(self, oversize: Oversize, source: str) -> IngestOutcome:
        """An instance over the size cap that was not kept whole: refused as the ingest
        refuses it (MB-3003), its prefix quarantined under the digest of all of it."""
        self.last_ingest = time.monotonic()
        error = AccessError("MB-3003", f"instance of {oversize.size} bytes over the limit")
        await self._quarantine(
            oversize.prefix, oversize.sha256, error.code, error.diagnostics, source,
            size=oversize.size,
        )  # fmt: skip
        return _failed(None, error, oversize.sha256)

    async def ingest_many(
        self, items: list[bytes], source: str, expected_study: str | None = None
    ) -> list[IngestOutcome]:
        """Store several instances (one STOW request): objects in parallel, one index write."""
        self.last_ingest = time.monotonic()
        try:
            return await self._ingest_many(items, source, expected_study)
        except Exception as error:
            log_failure(log, "ingest failed unexpectedly")
            failure = AccessError("MB-1000", f"internal error: {type(error).__name__}")
            outcomes = []
            for data in items:
                sha256 = hashlib.sha256(data).hexdigest()
                await self._quarantine(data, sha256, failure.code, failure.diagnostics, source)
                outcomes.append(_failed(None, failure, sha256))
            return outcomes

    async def _ingest_many(
        self, items: list[bytes], source: str, expected_study: str | None
    ) -> list[IngestOutcome]:
        outcomes: list[IngestOutcome | None] = [None] * len(items)
        accepted: list[tuple[int, ParsedInstance, str]] = []
        digests, answers = await asyncio.gather(
            _digests(items),
            self.parser.parse_many(items, self.policy.limits),
        )
        for position, data in enumerate(items):
            sha256 = digests[position]
            answer = answers[position]
            parsed = answer if isinstance(answer, ParsedInstance) else None
            try:
                if isinstance(answer, AccessError):
                    raise answer
                assert parsed is not None
                if expected_study is not None and parsed.study != expected_study:
                    raise AccessError(
                        "MB-3007", "StudyInstanceUID differs from the study in the URL"
                    )
                accepted.append((position, parsed, sha256))
            except AccessError as error:
                if error.code != "MB-3007":
                    await self._quarantine(data, sha256, error.code, error.diagnostics, source)
                outcomes[position] = _failed(parsed, error, sha256)
        # the duplicate check's read and the object writes go at once: a key names its
        # content, so an object already there is left as it is (same bytes: no second
        # copy), and an object this call created for an instance then refused goes again
        writing = self._put_many(
            [(items[position], parsed, sha256) for position, parsed, sha256 in accepted]
        )
        stored: dict[str, Document]
        if self.optimistic:
            # while instances are new, the read is skipped: the index's unique _id
            # catches one already stored, and its group is then redone from a fresh read
            stored, written = {}, await writing
        else:
            stored, written = await asyncio.gather(
                self.index.stored_instances([parsed.sop for _, parsed, _ in accepted]),
                writing,
            )
        known = {sop: row["sha256"] for sop, row in stored.items()}
        indexable = []
        for (position, parsed, sha256), result in zip(accepted, written, strict=True):
            if known.get(parsed.sop) == sha256:
                outcomes[position] = _success(parsed, Added.DUPLICATE, sha256)
            elif parsed.sop in known and await self._same_as_stored(
                stored[parsed.sop], items[position]
            ):
                # the same data set through another door (other File Meta Information)
                outcomes[position] = _success(parsed, Added.DUPLICATE, sha256)
                await self._discard(result)
            elif parsed.sop in known and not self.policy.replace_different:
                outcomes[position] = _failed(parsed, AccessError("MB-3005"), sha256)
                await self._discard(result)
            elif isinstance(result, AccessError):
                outcomes[position] = _failed(parsed, result, sha256)
            else:
                indexable.append((position, parsed, sha256, result))
        if indexable:
            results = await self.index.add_many(
                [(parsed, row) for _, parsed, _, (row, _) in indexable],
                self.policy.replace_different,
                seen=set(known),
            )
            for (position, parsed, sha256, put), added in zip(indexable, results, strict=True):
                if (
                    isinstance(added, AccessError)
                    and added.code == "MB-3005"
                    and await self._same_as_stored(
                        await self.index.find_instance(parsed.sop), items[position]
                    )
                ):
                    # indexed meanwhile (or not read: see `optimistic`) from another door
                    outcomes[position] = _success(parsed, Added.DUPLICATE, sha256)
                    await self._discard(put)
                elif isinstance(added, AccessError):
                    log.info("instance refused: %s", added.code)
                    outcomes[position] = _failed(parsed, added, sha256)
                    await self._discard(put)
                else:
                    outcomes[position] = _success(parsed, added, sha256)
        if accepted:
            self._remember_repeats(
                len(accepted), sum(1 for position, _, _ in accepted if _repeat(outcomes[position]))
            )
        return [outcome for outcome in outcomes if outcome is not None]

    @property
    def optimistic(self) -> bool:
        """Skip the duplicate check's read: instances sent again have been rare lately."""
        return self._repeats < REPEATS_FOR_READ

    def _remember_repeats(self, count: int, repeats: int) -> None:
        """The recent share of instances that were already stored (decays per instance)."""
        kept = REPEATS_DECAY**count
        self._repeats = self._repeats * kept + (1 - kept) * repeats / count

    async def _put_many(
        self, items: list[tuple[bytes, ParsedInstance, str]]
    ) -> list[tuple[InstanceRow, bool] | AccessError]:
        """Each instance's object (kept when already there): its row and whether this
        call created it, or MB-3008."""
        if not items:
            return []
        try:
            keys = [instance_key(p.study, p.series, p.sop, sha256) for _, p, sha256 in items]
            done = await self.store.put_many(
                [(key, data, sha256) for key, (data, _, sha256) in zip(keys, items, strict=True)],
                keep_existing=True,
            )
        except (ObjectStoreError, OSError) as error:
            log.error("object store write failed: %s", type(error).__name__)
            return [AccessError("MB-3008") for _ in items]
        return [
            (InstanceRow(key, len(data), sha256), put.created)
            for key, (data, _, sha256), put in zip(keys, items, done, strict=True)
        ]

    async def _same_as_stored(self, row: Document | None, data: bytes) -> bool:
        """The stored copy has the same data set (imaging.same_instance): read only when
        the digests of the whole files differ, which a second door's copy always does."""
        if row is None or "key" not in row:
            return False
        try:
            stored = await self.store.get(row["key"])
        except (ObjectStoreError, OSError):
            log.warning("stored copy unreadable for the duplicate check")
            return False
        return await asyncio.to_thread(same_data_set, stored, data)

    async def _discard(self, written: tuple[InstanceRow, bool] | AccessError) -> None:
        """Remove an object this call created for an instance that was then refused."""
        if isinstance(written, AccessError) or not written[1]:
            return
        try:
            await self.store.delete(written[0].key)
        except Exception:
            log_failure(log, "removing a refused instance's object failed")

    async def _quarantine(
        self, data: bytes, sha256: str, code: str, reason: str, source: str, size: int | None = None
    ) -> None:
        """Keep refused bytes with the reason, so nothing that was sent is lost (`size`:
        of what was sent, when `data` is already only its prefix)."""
        size = len(data) if size is None else size
        if size > self.policy.limits.max_instance_bytes:
            data = data[: self.policy.quarantine_prefix_bytes]
        try:
            key = quarantine_key(sha256)  # the digest of everything sent, not of the prefix
            await self.store.put(key, data)
            note = {"code": code, "reason": reason, "source": source, "size": size,
                    "kept_bytes": len(data)}  # fmt: skip
            await self.store.put(key.removesuffix(".bin") + ".json", orjson.dumps(note))
            await self.index.add_quarantine(sha256, key, code, reason, source)
        except Exception:
            log_failure(log, "quarantine write failed")


async def _digests(items: list[bytes]) -> list[str]:
    """SHA-256 of each item; large ones on threads (hashlib lets go of the GIL there)."""
    loop = asyncio.get_running_loop()

    async def one(data: bytes) -> str:
        if len(data) < THREADED_DIGEST:
            return hashlib.sha256(data).hexdigest()
        return await loop.run_in_executor(None, lambda: hashlib.sha256(data).hexdigest())

    return list(await asyncio.gather(*(one(data) for data in items)))


def _repeat(outcome: IngestOutcome | None) -> bool:
    """The instance was stored before (same bytes, refused other bytes, or replaced)."""
    if outcome is None:
        return False
    return outcome.added in (Added.DUPLICATE, Added.REPLACED) or outcome.code == "MB-3005"


def _success(parsed: ParsedInstance, added: Added, sha256: str) -> IngestOutcome:
    return IngestOutcome(
        SUCCESS, parsed.sop_class, parsed.sop, parsed.study, parsed.series,
        added=added, sha256=sha256,
    )  # fmt: skip


def _failed(parsed: ParsedInstance | None, error: AccessError, sha256: str) -> IngestOutcome:
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
