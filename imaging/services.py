"""Assemble the imaging parts once: object store, index, ingest, FHIR link, DICOMweb.

`medbridge serve` builds one `Imaging`; the DIMSE listener takes `imaging.ingestor`
(C-STORE) and `imaging.index` (C-FIND / C-MOVE) from it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from access.budget import Budget
from access.failures import log_failure
from fhir_server.repository import Repository
from fhir_server.router import FhirRouter
from imaging.dicomweb.endpoint import DicomwebService
from imaging.fhir_link import StudyLinker
from imaging.index import DicomIndex
from imaging.ingest import Ingestor, IngestPolicy
from imaging.issuers import IssuerNotes
from imaging.objectstore import LocalObjectStore, ObjectStore, S3ObjectStore
from imaging.parse import Limits
from imaging.parse_pool import Parser, default_workers
from imaging.upkeep import RetryPolicy

log = logging.getLogger(__name__)


@dataclass(slots=True)
class Imaging:
    store: ObjectStore
    index: DicomIndex
    ingestor: Ingestor
    linker: StudyLinker
    dicomweb: DicomwebService
    budget: Budget = field(default_factory=Budget)
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def start(self) -> None:
        await self.index.ensure_indexes()
        await self.index.relink_unrecorded()
        self.ingestor.parser.start()
        self.tasks.append(asyncio.create_task(self.linker.run()))
        self.tasks.append(asyncio.create_task(self.fill_metadata()))

    async def fill_metadata(self, idle: float = 10.0, batch: int = 20) -> None:
        """Make the DICOM JSON of new instances while ingest is quiet (it is CPU-heavy)."""
        while True:
            await asyncio.sleep(idle)
            if time.monotonic() - self.ingestor.last_ingest < idle:
                continue
            try:
                await self.fill_metadata_once(batch)
            except Exception:
                log_failure(log, "DICOM JSON background fill failed")

    async def fill_metadata_once(self, batch: int) -> int:
        """One batch: up to `batch` instances without DICOM JSON, made on a parse worker
        and stored in one write. How many were stored."""
        rows = await self.index.without_metadata(batch)
        if not rows:
            return 0
        objects = [await self.store.get(row["key"]) for row in rows]
        made = await self.ingestor.parser.metadata_many(objects)
        metadata = [(row["_id"], meta) for row, meta in zip(rows, made, strict=True) if meta]
        await self.index.set_metadata_many(metadata)
        return len(metadata)

    async def stop(self) -> None:
        for task in self.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.ingestor.parser.stop()


def object_store(
    objects_dir: Path,
    s3_bucket: str | None = None,
    s3_endpoint_url: str | None = None,
    s3_prefix: str = "",
    s3_region: str | None = None,
) -> ObjectStore:
    """The S3-compatible store when a bucket is configured, else files under objects_dir."""
    if s3_bucket:
        return S3ObjectStore(s3_bucket, s3_endpoint_url, s3_prefix, s3_region)
    return LocalObjectStore(objects_dir)


def build_imaging(
    repository: Repository,
    router: FhirRouter,
    objects: Path | ObjectStore,
    dicomweb_base_path: str,
    dicomweb_url: Callable[[], str],
    replace_different: bool = False,
    max_instance_bytes: int = 512 * 1024 * 1024,
    parse_workers: int | None = None,
    budget: Budget | None = None,
    default_issuer: str | None = None,
    upkeep_retry: RetryPolicy | None = None,
    quarantine_prefix_bytes: int = 1024 * 1024,
) -> Imaging:
    budget = budget or Budget()
    store = LocalObjectStore(objects) if isinstance(objects, Path) else objects
    if isinstance(store, LocalObjectStore):
        store.clean_temporary()  # a crash mid-write leaves only invisible temporaries
    index = DicomIndex(repository)
    limits = Limits(max_instance_bytes=max_instance_bytes, max_inflated_bytes=max_instance_bytes)
    workers = default_workers() if parse_workers is None else parse_workers
    policy = IngestPolicy(limits, replace_different, quarantine_prefix_bytes)
    ingestor = Ingestor(store, index, policy, Parser(workers))
    linker = StudyLinker(
        router, index, dicomweb_url, IssuerNotes(repository, default_issuer), upkeep_retry
    )
    # orders that arrive after their study: the composition (medbridge/compose.py)
    # registers linker.on_fhir_write at post-commit, with every other hook
    dicomweb = DicomwebService(
        ingestor, index, store, linker, dicomweb_base_path, share_hooks_with=router.pipeline,
        budget=budget, public_url=dicomweb_url,
    )  # fmt: skip
    return Imaging(store, index, ingestor, linker, dicomweb, budget)
