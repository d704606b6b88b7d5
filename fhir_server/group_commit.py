"""Group commit: the writes of concurrent requests applied as one bulkWrite, one transaction.

The one write path of the process: FHIR versions and transaction bundles, HL7 archive
records and the DICOM index's instance groups are all `Write` units queued here, and
one batch may hold units of every kind.

On the embedded store every MongoDB operation costs a round trip through a Python
server (~0.7 ms) and a transaction ~2 ms more, while a document inside a bulk costs
~0.1 ms. So a write unit (one version, one transaction bundle, one archive record) is
queued, and one committer task applies everything queued so far as a single client
bulkWrite inside a single transaction under the write gate. Units arriving while it
commits form the next batch, so batches grow with load and a lone request waits for
nothing but its own commit.

Every unit succeeds or fails alone: when one unit's write fails (a duplicate `_id`,
an update whose guard no longer matches), the transaction is aborted, that unit gets
the error and the others are applied again without it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Any

from pymongo import AsyncMongoClient, DeleteMany, InsertOne, UpdateOne
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import (
    ClientBulkWriteException,
    CollectionInvalid,
    DuplicateKeyError,
    OperationFailure,
    WriteError,
)

from fhir_server import store_errors

log = logging.getLogger(__name__)
Document = dict[str, Any]
Gate = Callable[[], AbstractAsyncContextManager[None]]
# Bounds one transaction: the embedded store holds its lock for the whole commit.
MAX_MODELS = 2000
DUPLICATE_KEY = 11000


@dataclass(frozen=True, slots=True)
class Write:
    """One write of a unit, runnable alone or as part of a client-level bulkWrite.

    An update must match exactly one document: its filter is the guard (e.g. the
    version read) that makes a concurrent writer fail instead of being overwritten.
    """

    collection: str
    kind: str  # insert | update | delete
    document: Document  # the document to insert, or the update
    filter: Document = field(default_factory=dict)

    def model(self, database: str) -> InsertOne[Document] | UpdateOne | DeleteMany:
        namespace = f"{database}.{self.collection}"
        if self.kind == "insert":
            return InsertOne(self.document, namespace=namespace)
        if self.kind == "update":
            return UpdateOne(self.filter, self.document, namespace=namespace)
        return DeleteMany(self.filter, namespace=namespace)


def insert(collection: str, document: Document) -> Write:
    return Write(collection, "insert", document)


class UnitFailed(Exception):
    """Which write of which unit failed, and the error to hand to that unit."""

    def __init__(self, unit: int, error: BaseException) -> None:
        super().__init__(unit)
        self.unit = unit
        self.error = error


@dataclass(slots=True)
class _Unit:
    writes: list[Write]
    done: asyncio.Future[None]


class GroupCommit:
    """Applies queued write units in batches; `submit` returns once its unit is durable."""

    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        gate: Gate,
    ) -> None:
        self.client = client
        self.database = database
        self.gate = gate
        self._queue: list[_Unit] = []
        self._committer: asyncio.Task[None] | None = None
        self._collections: set[str] = set()  # known to exist (see _create_collections)
        self.batches = 0  # counters for benchmarks and tests
        self.units = 0

    @property
    def waiting(self) -> int:
        """Units queued for the next batch (tests use it to line units up)."""
        return len(self._queue)

    async def submit(self, writes: list[Write]) -> None:
        """Apply `writes` atomically; raises DuplicateKeyError (`details["idx"]` within
        `writes`) when one of them collides, or whatever else failed."""
        if not writes:
            return
        unit = _Unit(writes, asyncio.get_running_loop().create_future())
        self._queue.append(unit)
        if self._committer is None or self._committer.done():
            # a context of its own: none of this request's bundle or gate state
            self._committer = asyncio.create_task(self._run(), context=contextvars.Context())
        await asyncio.shield(unit.done)

    async def _run(self) -> None:
        while self._queue:
            batch: list[_Unit] = []
            size = 0
            while self._queue and (not batch or size + len(self._queue[0].writes) <= MAX_MODELS):
                unit = self._queue.pop(0)
                batch.append(unit)
                size += len(unit.writes)
            await self._commit(batch)

    async def _commit(self, batch: list[_Unit]) -> None:
        # A failed unit hears of it only after the others are committed: told earlier,
        # it could look for the winner of its conflict before the winner is visible.
        pending = batch
        failed: list[tuple[_Unit, BaseException]] = []
        try:
            await self._create_collections(batch)
            while pending:
                try:
                    async with self._transaction() as session:
                        await self._bulk(session, [u.writes for u in pending])
                except UnitFailed as failure:
                    failed.append((pending[failure.unit], failure.error))
                    pending = pending[: failure.unit] + pending[failure.unit + 1 :]
                    continue
                self.batches += 1
                self.units += len(pending)
                for unit in pending:
                    _settle(unit, None)
                pending = []
        except BaseException as error:  # the store failed: every unit left hears of it
            for unit in pending:
                _settle(unit, error)
            if not isinstance(error, Exception):
                raise
        finally:
            for unit, error_ in failed:
                _settle(unit, error_)

    async def _create_collections(self, batch: list[_Unit]) -> None:
        """Every collection the batch writes exists before its transaction starts.

        nx-27017 creates a missing collection's table inside the transaction of its
        first write; when that transaction is aborted (a unit of the batch failed, and
        the others are applied again without it) SQLite drops the table but nx-27017
        still lists the collection, so the batch's next run fails with code 8, "no such
        table" (reproduced: docs/architecture.md, group commit). This was the code-8
        refusal of mixed FHIR and DICOM batches: DICOM groups fail and are redone more
        often than FHIR units, and their batches then aborted over a new collection."""
        names = {write.collection for unit in batch for write in unit.writes}
        missing = names - self._collections
        if not missing:
            return
        database = self.client[self.database]
        async with self.gate():
            existing = set(await database.list_collection_names())
            for name in sorted(missing - existing):
                with contextlib.suppress(CollectionInvalid, OperationFailure):  # raced: exists
                    await database.create_collection(name)
        self._collections |= missing

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[AsyncClientSession]:
        async with store_errors.transaction(self.client, self.gate) as session:
            yield session

    async def _bulk(self, session: AsyncClientSession, units: list[list[Write]]) -> None:
        owners: list[tuple[int, int]] = []  # per model: (unit, index within the unit)
        models = []
        for number, writes in enumerate(units):
            for index, write in enumerate(writes):
                owners.append((number, index))
                models.append(write.model(self.database))
        try:
            result = await self.client.bulk_write(
                models, session=session, ordered=True, verbose_results=True
            )
        except ClientBulkWriteException as error:
            failure = store_errors.bulk_failure(error)
            if failure is error or store_errors.transient(failure):
                raise  # the store failed, or the whole batch lost a conflict: all hear it
            assert isinstance(failure, OperationFailure)
            position = (failure.details or {}).get("idx", 0)
            unit, index = owners[position]
            kind = DuplicateKeyError if isinstance(failure, DuplicateKeyError) else WriteError
            raise UnitFailed(unit, kind(str(failure), failure.code, {"idx": index})) from error
        for position, (unit, index) in enumerate(owners):
            write = units[unit][index]
            if write.kind == "update" and result.update_results[position].matched_count != 1:
                moved = DuplicateKeyError("guarded document moved", DUPLICATE_KEY, {"idx": index})
                raise UnitFailed(unit, moved)


def _settle(unit: _Unit, error: BaseException | None) -> None:
    if unit.done.done():
        return
    if error is None:
        unit.done.set_result(None)
    elif isinstance(error, asyncio.CancelledError):
        unit.done.cancel()
    else:
        unit.done.set_exception(error)
