"""The versioned resource store on MongoDB.

Per resource type: a collection of current versions (`_id` = resource id) holding the
resource's JSON bytes exactly as served, and an index collection (`<Type>_idx`) of
search rows. One `history` collection holds every version of every resource. A write
is one MongoDB transaction over the three; the history row's unique `_id`
(`Type/id/version`) is what makes two concurrent writers of one version conflict.

Write gate: the embedded store (nx-27017) shares ONE SQLite connection between all
client sessions, so its "transactions" are savepoints on that connection: two open at
once corrupt each other, and any write made while another session's transaction is
open is rolled back with it. With `serialize_writes` (on for the embedded store) every
write unit in this process takes `write_gate()` first. Code outside this module that
writes to MongoDB must do the same (`async with repository.write_gate(): ...`), and
several writes that must be atomic use `async with repository.transaction() as session`.
A real MongoDB replica set isolates transactions itself: serialize_writes=False there.

Group commit (embedded store): a version's writes, a transaction bundle's writes and
other write units (`apply_writes`) go to `group_commit.GroupCommit`, which applies
the units of concurrent requests as one bulkWrite in one transaction. A transaction
bundle without reads that depend on its own writes is deferred: its entries read the
store plus the bundle's own staged versions, and all its writes are one unit at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any, TypeVar

import orjson
from pymongo import ASCENDING, DESCENDING, AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.asynchronous.database import AsyncDatabase
from pymongo.errors import (
    BulkWriteError,
    ClientBulkWriteException,
    DuplicateKeyError,
    PyMongoError,
)

from access.errors import AccessError
from fhir_server import store_errors
from fhir_server.bodies import BODY, PLACEHOLDER, Bodies, resolve
from fhir_server.body import dumps
from fhir_server.group_commit import GroupCommit, Write
from fhir_server.group_commit import insert as _insert
from fhir_server.registry import SERVED_TYPES
from fhir_server.search import inline
from fhir_server.search.criteria import only_criteria
from fhir_server.search.engine import Engine
from fhir_server.search.extract import index_entries
from fhir_server.search.parameters import parameters_for

Document = dict[str, Any]
T = TypeVar("T")
HISTORY = "history"
CLAIMS = "conditional_claims"
CLIENT_BULK_WIRE_VERSION = 25  # MongoDB 8.0: client-level bulkWrite
# what a read needs of a current document: not the sort keys, which are larger than it
# above these a write's index rows are made in a worker thread: a thread hop costs more
# than a small resource's rows, a 10 MB one's take seconds that reads would wait
OFF_LOOP_BYTES = 64 * 1024
OFF_LOOP_ROWS = 512
RECENT = 20_000  # versions this process wrote or read lately, for planning reads
# audit/verify.py reads the chain's bytes straight from the store: AuditEvents stay inline
INLINE_TYPES = frozenset({"AuditEvent"})


class ClaimTaken(Exception):
    """Another writer already created a resource under these conditional criteria."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


# The session of a transaction bundle being processed: every read and write of this
# task joins it, so all entries commit or roll back together.
_BUNDLE_SESSION: ContextVar[AsyncClientSession | None] = ContextVar("bundle", default=None)


@dataclass(slots=True)
class _Deferred:
    """A deferred transaction bundle: its staged writes and the versions they make."""

    writes: list[Write] = field(default_factory=list)
    current: dict[tuple[str, str], Stored] = field(default_factory=dict)
    versions: dict[str, Stored] = field(default_factory=dict)  # "Type/id/version"


_DEFERRED: ContextVar[_Deferred | None] = ContextVar("deferred", default=None)


@dataclass(slots=True)
class _Attempt:
    """One run of a transaction bundle: whether a write of it lost a write conflict
    (its entry answered 409 already, the bundle may be run again)."""

    conflicted: bool = False


_ATTEMPT: ContextVar[_Attempt | None] = ContextVar("attempt", default=None)


# Reads by id remembered for one unit of work (an HL7 message planned, then written):
# its writes re-read what its plan read. A stale entry cannot do harm, because every
# write is guarded by the version it replaces: it fails and the unit plans again.
# Writes that commit with the next deferred transaction bundle of this task, made from
# the references (`Type/id/_history/n`) it wrote: the HL7 bridge records a message as
# processed in the same unit that applies it.
@dataclass(slots=True)
class Rider:
    make: Callable[[list[str]], list[Write]]
    used: bool = False  # it rode with a committed bundle
    collided: bool = False  # one of its writes hit a unique key: the bundle was not applied


_RIDER: ContextVar[Rider | None] = ContextVar("rider", default=None)
_READ_MEMO: ContextVar[dict[tuple[str, str], Stored | None] | None] = ContextVar(
    "read_memo", default=None
)


@dataclass(frozen=True, slots=True)
class Stored:
    """One version of a resource as stored: bytes to serve, or a tombstone."""

    resource_type: str
    id: str
    version: int
    last_updated_ms: int
    raw: bytes | None  # None for a deletion
    method: str = "PUT"
    index_keys: tuple[str, ...] | None = None  # ids of the current version's `<Type>_idx` rows
    body: Document | None = None  # where `raw` is kept when it is in the object store

    @property
    def deleted(self) -> bool:
        return self.raw is None

    @property
    def last_updated(self) -> str:
        return instant(self.last_updated_ms)


def instant(epoch_ms: int) -> str:
    """FHIR instant with milliseconds in UTC: 2026-11-22T21:59:28.123Z."""
    moment = datetime.fromtimestamp(epoch_ms / 1000, UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class Repository:
    def __init__(
        self,
        client: AsyncMongoClient[Document],
        database: str,
        serialize_writes: bool = True,
        bodies: Bodies | None = None,
    ) -> None:
        self.client = client
        # large bodies in the object store (fhir_server/bodies.py); None keeps all inline
        self.bodies = bodies
        self.db: AsyncDatabase[Document] = client[database]
        self._gate = asyncio.Lock() if serialize_writes else None
        self._gate_owner: asyncio.Task[Any] | None = None  # nested gated calls pass through
        self._client_bulk = False  # set by ensure_indexes() from the server's wire version
        self.group: GroupCommit | None = None  # likewise: embedded store with bulkWrite
        # Current versions this process committed or read, answering reads made while
        # planning a write (`remembering_reads`), never a client's read: a stale one
        # only makes the planned write conflict, which empties this and plans again.
        self._recent: OrderedDict[tuple[str, str], Stored] = OrderedDict()

    @property
    def serializes_writes(self) -> bool:
        """This process holds the write gate: it is the only process writing the store
        (the embedded store; docs/architecture.md, "write gate")."""
        return self._gate is not None

    @contextlib.asynccontextmanager
    async def write_gate(self) -> AsyncIterator[None]:
        """Hold this while writing outside `transaction()` (see the module docstring)."""
        task = asyncio.current_task()
        if self._gate is None or _BUNDLE_SESSION.get() is not None or task is self._gate_owner:
            yield  # this task (or its transaction bundle) already holds the gate
            return
        async with self._gate:
            self._gate_owner = task
            try:
                yield
            finally:
                self._gate_owner = None

    @contextlib.asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncClientSession]:
        """A session in an open transaction, committed on exit, aborted on an exception.

        Inside a transaction bundle it is the bundle's session: the work joins it.
        """
        ambient = _BUNDLE_SESSION.get()
        if ambient is not None:
            yield ambient
            return
        async with store_errors.transaction(self.client, self.write_gate) as session:
            yield session

    async def run_bundle(self, deferred: bool, body: Callable[[], Awaitable[T]]) -> T:
        """`body()` in `bundle_transaction(deferred)`, run again (bounded, with backoff)
        while it loses a write conflict to a concurrent transaction: nothing of it was
        applied or answered, so a new run is safe (the store's transaction guidance)."""
        for attempt in range(store_errors.ATTEMPTS):
            run = _Attempt()
            token = _ATTEMPT.set(run)
            try:
                async with self.bundle_transaction(deferred):
                    return await body()
            except (AccessError, PyMongoError) as error:
                lost = run.conflicted or store_errors.transient(error)
                if not lost or attempt == store_errors.ATTEMPTS - 1:
                    if isinstance(error, PyMongoError):
                        raise _conflict("a resource of this transaction") from error
                    raise
            finally:
                _ATTEMPT.reset(token)
            await store_errors.pause(attempt)
        raise AssertionError("unreachable")

    @contextlib.asynccontextmanager
    async def bundle_transaction(self, deferred: bool = False) -> AsyncIterator[None]:
        """Run every repository call of this task as one atomic unit (transaction bundles).

        `deferred`: the bundle's reads need not see its own writes through searches, so
        the writes are staged and committed together at the end (one bulkWrite);
        reads by id still see the staged versions. Otherwise the calls join one open
        transaction, which holds the write gate throughout.
        """
        if deferred and self.group is not None:
            staged = _Deferred()
            token = _DEFERRED.set(staged)
            try:
                yield
            finally:
                _DEFERRED.reset(token)
            rider = _RIDER.get()
            riding_from: int | None = None
            if rider is not None and not rider.used:
                written = [_history_reference(key) for key in staged.versions]
                riding_from = len(staged.writes)
                staged.writes.extend(rider.make(written))
            try:
                await self.group.submit(staged.writes)
                if rider is not None:
                    rider.used = True
                for version in staged.current.values():
                    self._remember(version)
            except DuplicateKeyError as error:
                failed = (error.details or {}).get("idx", -1)
                if rider is not None and riding_from is not None and failed >= riding_from:
                    rider.collided = True
                self._recent.clear()
                raise AccessError(
                    "MB-1011",
                    "a resource of this transaction was changed by another request; "
                    "nothing was applied, send it again",
                ) from error
            return
        async with self.transaction() as session:
            token_ = _BUNDLE_SESSION.set(session)
            try:
                yield
            finally:
                _BUNDLE_SESSION.reset(token_)

    @contextlib.contextmanager
    def remembering_reads(self) -> Iterator[None]:
        """Within: a read by id of something read before answers from memory."""
        token = _READ_MEMO.set({})
        try:
            yield
        finally:
            _READ_MEMO.reset(token)

    @contextlib.contextmanager
    def riding_along(self, make: Callable[[list[str]], list[Write]]) -> Iterator[Rider]:
        """Within: the next deferred transaction bundle also commits `make(references)`;
        `.used` tells whether it did (else the caller writes them itself)."""
        rider = Rider(make)
        token = _RIDER.set(rider)
        try:
            yield rider
        finally:
            _RIDER.reset(token)

    def rides(self, deferred: bool) -> bool:
        """Whether a rider (`riding_along`) commits with a transaction bundle that is
        `deferred` (batch `writes_blind`) when this task runs one: only a bundle staged
        for the group commit takes it, else the caller writes its writes itself."""
        return deferred and self.group is not None and self.session is None

    @property
    def in_bundle(self) -> bool:
        """Whether this task is inside a transaction bundle."""
        return _BUNDLE_SESSION.get() is not None or _DEFERRED.get() is not None

    @property
    def session(self) -> AsyncClientSession | None:
        """The transaction this task is in, if any (reads join it to see its writes)."""
        return _BUNDLE_SESSION.get()

    async def apply_writes(self, writes: list[Write]) -> None:
        """Apply `writes` atomically: grouped with concurrent units where the store
        allows; DuplicateKeyError (`details["idx"]`) when one collides."""
        if self.group is not None and self.session is None:
            await self.group.submit(writes)
            return
        if self.session is not None:
            await self._in_bundle(self.session, writes)
            return
        await self._transact(writes)

    async def _transact(self, writes: list[Write]) -> None:
        """`writes` in a transaction of their own, run again while it loses a write
        conflict: every write is guarded by what it read, so a new run either applies
        or fails with the DuplicateKeyError of the writer that won."""

        async def once() -> None:
            async with self.transaction() as session:
                # client bulkWrite runs against `admin`: the embedded store accepts
                # it only as the sole operation of its transaction
                if self._client_bulk:
                    await self._bulk_apply(session, writes)
                else:
                    await self._apply(session, writes)

        await store_errors.retrying(once, "write unit")

    async def _in_bundle(self, session: AsyncClientSession, writes: list[Write]) -> None:
        """Writes joining a transaction bundle's open transaction; a lost write conflict
        aborted all of it, which `run_bundle` may run again."""
        try:
            await self._apply(session, writes)
        except PyMongoError as error:
            if not store_errors.transient(error):
                raise
            attempt = _ATTEMPT.get()
            if attempt is not None:
                attempt.conflicted = True
            raise _conflict("a resource of this transaction") from error

    def search_engine(self) -> Engine:
        return Engine(self.db, self.session, bodies=self.bodies)

    async def ensure_indexes(self) -> None:
        hello = await self.client.admin.command("hello")
        self._client_bulk = int(hello.get("maxWireVersion", 0)) >= CLIENT_BULK_WIRE_VERSION
        if self._client_bulk and self._gate is not None:
            self.group = GroupCommit(self.client, self.db.name, self.write_gate)
        history = self.db[HISTORY]
        # every collection a write unit touches exists up front: the embedded store
        # forgets a table created inside a transaction that is then aborted
        await self.db[CLAIMS].create_index([("r", ASCENDING)])
        await history.create_index([("t", ASCENDING), ("r", ASCENDING), ("v", DESCENDING)])
        await history.create_index([("t", ASCENDING), ("lu", DESCENDING)])
        await history.create_index([("lu", DESCENDING)])
        for resource_type in SERVED_TYPES:
            rows = self.db[f"{resource_type}_idx"]
            # single-field indexes only: the embedded store uses nothing else (search/keys.py)
            for name in ("r", "k", "c", "h"):
                await rows.create_index([(name, ASCENDING)])
            await self.db[resource_type].create_index([("lu", DESCENDING)])
            for name in inline.indexed_fields(resource_type):
                await self.db[resource_type].create_index([(name, ASCENDING)])

    # reads --------------------------------------------------------------------------

    async def read(self, resource_type: str, resource_id: str) -> Stored | None:
        """The current version (possibly a tombstone), by primary key."""
        staged = _DEFERRED.get()
        if staged is not None and (resource_type, resource_id) in staged.current:
            return staged.current[(resource_type, resource_id)]
        memo = _READ_MEMO.get()
        if memo is not None and (resource_type, resource_id) in memo:
            return memo[(resource_type, resource_id)]
        if memo is not None and (resource_type, resource_id) in self._recent:
            known = self._recent[(resource_type, resource_id)]
            memo[(resource_type, resource_id)] = known
            return known
        # the whole document: all it holds besides is its small sort keys (`o`), and a
        # projection costs the embedded store 0.27 ms of a 1 ms read (measured)
        doc = await self.db[resource_type].find_one({"_id": resource_id}, session=self.session)
        stored = None
        if doc is not None:
            await resolve(self.bodies, [doc])
            stored = Stored(
                resource_type, resource_id, doc["vid"], doc["lu"], doc.get("raw"),
                index_keys=tuple(doc["rk"]) if "rk" in doc else None, body=doc.get(BODY),
            )  # fmt: skip
        if memo is not None:
            memo[(resource_type, resource_id)] = stored
        if stored is not None and self.session is None:  # never an uncommitted version
            self._remember(stored)
        return stored

    def _remember(self, stored: Stored) -> None:
        key = (stored.resource_type, stored.id)
        if stored.body is not None:
            # a large body is not held for planning reads: the cache is bounded by count
            self._recent.pop(key, None)
            return
        self._recent[key] = stored
        self._recent.move_to_end(key)
        if len(self._recent) > RECENT:
            self._recent.popitem(last=False)

    async def vread(self, resource_type: str, resource_id: str, version: int) -> Stored | None:
        staged = _DEFERRED.get()
        if staged is not None:
            found = staged.versions.get(f"{resource_type}/{resource_id}/{version}")
            if found is not None:
                return found
        doc = await self.db[HISTORY].find_one(
            {"_id": f"{resource_type}/{resource_id}/{version}"}, session=self.session
        )
        if doc is None:
            # a write-once resource has no history copy: its version 1 is the current one
            current = await self.read(resource_type, resource_id) if version == 1 else None
            return current if current is not None and current.version == 1 else None
        await resolve(self.bodies, [doc])
        return _from_history(doc)

    async def history(
        self,
        resource_type: str | None,
        resource_id: str | None,
        since_ms: int | None,
        count: int,
        before_ms: int | None = None,
        narrowed: Document | None = None,
    ) -> tuple[list[Stored], int]:
        """Versions newest first, and how many match in all. `narrowed`: a further
        condition on the history documents (the types a restricted access sees whole)."""
        query: Document = {}
        if resource_type:
            query["t"] = resource_type
        if resource_id:
            query["r"] = resource_id
        bounds: Document = {}
        if since_ms is not None:
            bounds["$gte"] = since_ms
        if before_ms is not None:
            bounds["$lt"] = before_ms
        if bounds:
            query["lu"] = bounds
        if narrowed is not None:
            query = {"$and": [query, narrowed]} if query else narrowed
        collection = self.db[HISTORY]
        # $match + $count: count_documents() ($group) takes seconds on the embedded store
        counted = await (await collection.aggregate([{"$match": query}, {"$count": "n"}])).to_list()
        total = int(counted[0]["n"]) if counted else 0
        cursor = collection.find(query).sort([("lu", DESCENDING), ("v", DESCENDING)]).limit(count)
        docs = await cursor.to_list()
        await resolve(self.bodies, docs)
        return [_from_history(doc) for doc in docs], total

    async def history_of(
        self,
        references: list[tuple[str, str]],
        since_ms: int | None,
        count: int,
        before_ms: int | None = None,
    ) -> tuple[list[Stored], int]:
        """The versions of these resources (`(type, id)`), newest first, and how many in
        all, by primary key only: a resource's versions are `Type/id/1` to its current
        `vid`. On the embedded store both an `$in` over the history's `r` and a range of
        its `_id` scan every version (seconds for one patient's ImagingStudy history among
        20,000 resources); `_id $in` is a primary-key lookup."""
        by_type: dict[str, list[str]] = {}
        for resource_type, resource_id in references:
            by_type.setdefault(resource_type, []).append(resource_id)
        keys: list[str] = []
        for resource_type, ids in by_type.items():
            cursor = self.db[resource_type].find(
                {"_id": {"$in": ids}}, {"vid": 1}, session=self.session
            )
            async for doc in cursor:
                base = f"{resource_type}/{doc['_id']}/"
                keys.extend(f"{base}{version}" for version in range(1, int(doc["vid"]) + 1))
        if not keys:
            return [], 0
        query: Document = {"_id": {"$in": keys}}
        bounds: Document = {}
        if since_ms is not None:
            bounds["$gte"] = since_ms
        if before_ms is not None:
            bounds["$lt"] = before_ms
        if bounds:
            query["lu"] = bounds
        collection = self.db[HISTORY]
        heads = await collection.find(query, {"lu": 1, "v": 1}, session=self.session).to_list()
        heads.sort(key=lambda d: (d["lu"], d["v"]), reverse=True)
        chosen = [doc["_id"] for doc in heads[:count]]
        if not chosen:
            return [], len(heads)
        cursor = collection.find({"_id": {"$in": chosen}}, session=self.session)
        full = {doc["_id"]: doc async for doc in cursor}
        await resolve(self.bodies, list(full.values()))
        return [_from_history(full[key]) for key in chosen if key in full], len(heads)

    async def matching_ids(self, resource_type: str, params: list[tuple[str, str]]) -> list[str]:
        """Ids of current resources matching every parameter (conditional interactions)."""
        criteria = only_criteria(params)
        if not criteria:
            raise AccessError("MB-1020", "conditional interaction without search criteria")
        return sorted(await self.search_engine().criteria_ids(resource_type, criteria))

    # writes -------------------------------------------------------------------------

    async def create(
        self, resource: Document, resource_id: str, claim: str | None = None
    ) -> Stored:
        """Store version 1; `claim` (conditional criteria) makes a racing twin fail."""
        return await self._write(resource, resource_id, None, "POST", claim)

    async def update(
        self, resource: Document, previous: Stored | None, claim: str | None = None
    ) -> Stored:
        return await self._write(resource, resource["id"], previous, "PUT", claim)

    async def release_claim(self, key: str) -> None:
        """Drop a claim whose resource no longer matches its criteria (deleted or changed)."""
        staged = _DEFERRED.get()
        if staged is not None:
            staged.writes.append(Write(CLAIMS, "delete", {}, {"_id": key}))
            return
        async with self.write_gate():
            await self.db[CLAIMS].delete_one({"_id": key}, session=self.session)

    async def delete(self, previous: Stored) -> Stored:
        version = previous.version + 1
        stored = Stored(previous.resource_type, previous.id, version, now_ms(), None, "DELETE")
        await self._commit(stored, previous, rows=[], order={})
        return stored

    async def _write(
        self,
        resource: Document,
        resource_id: str,
        previous: Stored | None,
        method: str,
        claim: str | None = None,
    ) -> Stored:
        version = previous.version + 1 if previous else 1
        stored = _stamp(resource, resource_id, version, method)
        bodies = self.bodies
        if (
            bodies is not None
            and stored.raw is not None
            and bodies.wanted(stored.raw)
            and stored.resource_type not in INLINE_TYPES
        ):
            # durable before the write naming it commits (fhir_server/bodies.py)
            stored = replace(stored, body=await bodies.keep("fhir", stored.raw))
        # a large resource's index (thousands of values) is extracted off the event loop
        if stored.raw is not None and len(stored.raw) > OFF_LOOP_BYTES:
            index = await asyncio.to_thread(index_entries, resource)
        else:
            index = index_entries(resource)
        await self._commit(stored, previous, index.rows, _order(stored, index.order), claim)
        return stored

    def write_once(self, resource: Document, resource_id: str) -> tuple[Stored, list[Write]]:
        """Version 1 of a resource that is never updated (an AuditEvent), and its writes for
        `apply_writes`: the current document and its index rows, no history copy (its one
        version is the current one: vread falls back to it). The caller applies them, with
        other writes in one unit where it wants."""
        stored = _stamp(resource, resource_id, 1, "POST")
        return stored, _once_writes(stored, resource)

    def index_writes_of(self, stored: Stored) -> list[Write]:
        """The index rows `write_once` wrote for `stored`, made again from its stored JSON."""
        assert stored.raw is not None, "a version written once is kept inline"
        writes = _once_writes(stored, orjson.loads(stored.raw))
        return [write for write in writes if write.collection != stored.resource_type]

    async def _commit(
        self,
        stored: Stored,
        previous: Stored | None,
        rows: list[Document],
        order: Document,
        claim: str | None = None,
    ) -> None:
        if len(rows) > OFF_LOOP_ROWS:
            writes, keys = await asyncio.to_thread(_version_writes, stored, previous, rows, order)
        else:
            writes, keys = _version_writes(stored, previous, rows, order)
        if claim is not None:
            # a unique _id per (type, criteria): of two conditional creates racing on the
            # same criteria, the second one's transaction fails here and it re-resolves
            owner = f"{stored.resource_type}/{stored.id}"
            writes.insert(0, _insert(CLAIMS, {"_id": claim, "r": owner}))
        memo = _READ_MEMO.get()
        if memo is not None:
            memo.pop((stored.resource_type, stored.id), None)
        self._recent.pop((stored.resource_type, stored.id), None)
        staged = _DEFERRED.get()
        if staged is not None:
            staged.writes.extend(writes)
            version = replace(stored, index_keys=tuple(keys))
            staged.current[(stored.resource_type, stored.id)] = version
            staged.versions[f"{stored.resource_type}/{stored.id}/{stored.version}"] = version
            return
        try:
            ambient = self.session
            if ambient is not None:
                await self._in_bundle(ambient, writes)
                return
            if self.group is not None:
                await self.group.submit(writes)
            else:
                await self._transact(writes)
            self._remember(replace(stored, index_keys=tuple(keys)))
        except PyMongoError as error:
            if not isinstance(error, DuplicateKeyError) and not store_errors.transient(error):
                raise
            self._recent.clear()
            taken = isinstance(error, DuplicateKeyError) and (error.details or {}).get("idx") == 0
            if claim is not None and taken:
                raise ClaimTaken(claim) from error
            raise _conflict(f"{stored.resource_type}/{stored.id}") from error

    async def _apply(self, session: AsyncClientSession, writes: list[Write]) -> None:
        """The writes in order (a bundle's transaction, or a server without bulkWrite);
        consecutive inserts into one collection go as one insert_many."""
        index = 0
        while index < len(writes):
            write = writes[index]
            target = self.db[write.collection]
            try:
                if write.kind == "insert":
                    batch = [write.document]
                    while (
                        index + len(batch) < len(writes)
                        and writes[index + len(batch)].kind == "insert"
                        and writes[index + len(batch)].collection == write.collection
                    ):
                        batch.append(writes[index + len(batch)].document)
                    if len(batch) == 1:
                        await target.insert_one(write.document, session=session)
                    else:
                        await target.insert_many(batch, session=session)
                    index += len(batch)
                    continue
                if write.kind == "update":
                    result = await target.update_one(write.filter, write.document, session=session)
                    if result.matched_count != 1:
                        raise DuplicateKeyError("current version moved", 11000, {"idx": index})
                else:
                    await target.delete_many(write.filter, session=session)
            except DuplicateKeyError as error:
                raise DuplicateKeyError(str(error), 11000, {"idx": index}) from error
            except BulkWriteError as error:  # insert_many: its position within the batch
                failure = store_errors.bulk_failure(error)
                if isinstance(failure, DuplicateKeyError):
                    position = index + int((failure.details or {}).get("idx", 0))
                    raise DuplicateKeyError(str(failure), 11000, {"idx": position}) from error
                raise failure from error
            index += 1

    async def _bulk_apply(self, session: AsyncClientSession, writes: list[Write]) -> None:
        # MongoDB 8.0's client-level bulkWrite, which the embedded store speaks too:
        # each operation there costs a round trip through a Python server (~1 ms)
        models = [write.model(self.db.name) for write in writes]
        try:
            result = await self.client.bulk_write(
                models, session=session, ordered=True, verbose_results=True
            )
        except ClientBulkWriteException as error:
            raise store_errors.bulk_failure(error) from error
        for index, write in enumerate(writes):
            if write.kind == "update" and result.update_results[index].matched_count != 1:
                raise DuplicateKeyError("current version moved", 11000, {"idx": index})


def _stamp(resource: Document, resource_id: str, version: int, method: str) -> Stored:
    """Set `resource`'s id and meta for `version`, now; the version as it will be stored."""
    last_updated_ms = now_ms()
    resource["id"] = resource_id
    meta = dict(resource.get("meta") or {})
    meta["versionId"] = str(version)
    meta["lastUpdated"] = instant(last_updated_ms)
    resource["meta"] = meta
    raw = dumps(resource)  # decimals as sent (fhir_server/body.py)
    return Stored(resource["resourceType"], resource_id, version, last_updated_ms, raw, method)


def _once_writes(stored: Stored, resource: Document) -> list[Write]:
    """The current document and index rows of a version written once (no history copy);
    a type that keeps keys inline has them in the document and only the rest as rows."""
    index = index_entries(resource)
    fields, rows = inline.split(stored.resource_type, index.rows)
    order = _order(stored, index.order)
    writes, _ = _version_writes(stored, None, rows, order, False, fields)
    return writes


def _order(stored: Stored, found: dict[str, str]) -> Document:
    # every sort key present ("" when absent) so keyset paging compares like with like
    return dict.fromkeys(parameters_for(stored.resource_type), "") | found


def _version_writes(
    stored: Stored,
    previous: Stored | None,
    rows: list[Document],
    order: Document,
    history_copy: bool = True,
    inline_keys: Document | None = None,
) -> tuple[list[Write], list[str]]:
    """The writes of one version, and the ids of its index rows; `inline_keys` are
    stored in the current document (a version written once: search/inline.py)."""
    resource_type, resource_id = stored.resource_type, stored.id
    # a body in the object store is named by both documents, its bytes kept once
    raw = stored.raw if stored.body is None else PLACEHOLDER
    history = {
        "_id": f"{resource_type}/{resource_id}/{stored.version}",
        "t": resource_type,
        "r": resource_id,
        "v": stored.version,
        "lu": stored.last_updated_ms,
        "m": stored.method,
        "raw": raw,
    }
    if stored.body is not None:
        history[BODY] = stored.body
    writes = [_insert(HISTORY, history)] if history_copy else []
    # a row's id is the resource id and a digest of the row: a value the new version
    # keeps is neither deleted nor rewritten, so a reader never misses it mid-update,
    # and the embedded store deletes by primary key in well under a millisecond
    # (by an indexed field it takes ~20 ms)
    keyed = {f"{resource_id}#{_digest(row)}": row for row in rows}
    current: Document = {
        "vid": stored.version,
        "lu": stored.last_updated_ms,
        "raw": raw,
        "o": order,
        "rk": list(keyed),
    }
    if stored.body is not None:
        current[BODY] = stored.body
    if inline_keys:
        current.update(inline_keys)
    elif previous is not None:
        # a later version of a type that keeps keys inline (written once, so never by the
        # server: an operator's tool) must not keep the first version's keys findable
        current.update(dict.fromkeys(inline.indexed_fields(resource_type)))
    if previous is None:
        writes.append(_insert(resource_type, {"_id": resource_id, **current}))
    else:
        current[BODY] = stored.body  # None drops a previous version's reference
        # $set, not a replacement: nx-27017 cannot serialize binary values in a replace
        selected = {"_id": resource_id, "vid": previous.version}
        writes.append(Write(resource_type, "update", {"$set": current}, selected))
    index = f"{resource_type}_idx"
    kept: set[str] = set()
    if previous is not None and previous.index_keys is None:
        writes.append(Write(index, "delete", {}, {"r": resource_id}))
    elif previous is not None and previous.index_keys:
        kept = set(previous.index_keys) & set(keyed)
        gone = [key for key in previous.index_keys if key not in kept]
        if gone:
            writes.append(Write(index, "delete", {}, {"_id": {"$in": gone}}))
    writes.extend(
        _insert(index, {**row, "_id": key, "r": resource_id})
        for key, row in keyed.items()
        if key not in kept
    )
    return writes, list(keyed)


def _digest(row: Document) -> str:
    return hashlib.blake2b(
        orjson.dumps(row, option=orjson.OPT_SORT_KEYS), digest_size=8
    ).hexdigest()


def _conflict(what: str) -> AccessError:
    return AccessError("MB-1011", f"{what} was changed by another request; read it again and retry")


def _history_reference(key: str) -> str:
    """`Type/id/3` -> `Type/id/_history/3`."""
    path, _, version = key.rpartition("/")
    return f"{path}/_history/{version}"


def _from_history(doc: Document) -> Stored:
    return Stored(doc["t"], doc["r"], doc["v"], doc["lu"], doc.get("raw"), doc.get("m", "PUT"))
