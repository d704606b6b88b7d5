"""The hash chain of AuditEvents, and the one writer that extends it (docs/audit.md).

Event `n` is stored as `AuditEvent/<n, 16 digits>`; its chain extension holds `n`, the
hash of event `n-1` and its own hash, sha256 over `n`, that previous hash and the event's
canonical JSON (sorted keys, without `meta` and the chain extension). The head (last
`n` and its hash) is one document of `audit_chain`, updated in the same write unit as the
events and guarded by the `n` it replaces: of two writers (threads, processes) that read
the same head, one commits and the other fails on the guard (or on the unique
`AuditEvent` id), reads the head again and rechains. No fork, no gap.

One appender per process (`AuditChain`) groups the writes: the events waiting when it
is free form one group, whose sequence numbers it reserves after the head in one step
and chains in memory; the group is one write unit (the events as one insert_many, their
index rows, the head update), merged by the repository's group commit with the FHIR
writes of the moment. Each waiting request resumes when its group is durable; one request
alone is a group of one, and nothing waits for a timer. An event is stored lean
(`Repository.write_once`: no history copy, index rows of the parameters in
fhir_server/search/indexed_subsets.json only), as the cost is per stored document.

An event with more than `LARGE_ROWS` index rows (a search naming 999 patients: ~2,000) is
stored in its group without them, its id noted in `audit_rows_pending`; the rows then
follow in units of `ROWS_PER_UNIT`, each committed on its own so that the other doors' writes
go between them (one unit of 2,000 rows held every write of the server for ~200 ms on
the embedded store), and the note is removed with the last. The access still waits for
all of them before it is answered. A process that dies meanwhile leaves the note, and
the next chain to start in any process removes what was written of them, makes them again
from the stored event and writes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import hashlib
import logging
from dataclasses import dataclass
from typing import Any

import orjson
from pymongo.errors import CollectionInvalid, DuplicateKeyError, OperationFailure, PyMongoError

from access.errors import AccessError
from fhir_server import store_errors
from fhir_server.group_commit import Write
from fhir_server.repository import Repository

log = logging.getLogger(__name__)
Document = dict[str, Any]
CHAIN_URL = "urn:medbridge:audit-chain"
AUDIT_TYPE = "AuditEvent"
HEAD_COLLECTION = "audit_chain"
HEAD_ID = "head"
GENESIS = "0" * 64  # the previous hash of event 1
ID_DIGITS = 16
MAX_BATCH = 100  # events of one group: ~13 writes each, the group commit's bound is 2,000
LARGE_ROWS = 200  # index rows of an event written with it; more follow it in units
ROWS_PER_UNIT = 100  # of this many (~10 ms of the embedded store each)
PENDING_COLLECTION = "audit_rows_pending"
CONTENDED_SECONDS = 30.0  # then the access fails closed (MB-1090)
UNAVAILABLE = "MB-1090"


def event_id(sequence: int) -> str:
    return f"{sequence:0{ID_DIGITS}d}"


def canonical(event: Document) -> bytes:
    """The bytes the hash covers: the event without `id`, `meta` and its chain extension."""
    kept = {k: v for k, v in event.items() if k not in ("id", "meta", "extension")}
    others = [e for e in event.get("extension") or [] if e.get("url") != CHAIN_URL]
    if others:
        kept["extension"] = others
    return orjson.dumps(kept, option=orjson.OPT_SORT_KEYS)


def link_hash(sequence: int, previous: str, event: Document) -> str:
    digest = hashlib.sha256(f"{sequence}\n{previous}\n".encode("ascii"))
    digest.update(canonical(event))
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class Link:
    sequence: int
    previous: str
    hash: str


def chain_link(event: Document) -> Link | None:
    """The chain extension of a stored event, if it has one."""
    for extension in event.get("extension") or []:
        if extension.get("url") != CHAIN_URL:
            continue
        values = {e.get("url"): e for e in extension.get("extension") or []}
        try:
            sequence = int(values["sequence"]["valueString"])
            return Link(sequence, values["previous"]["valueString"], values["hash"]["valueString"])
        except (KeyError, TypeError, ValueError):
            return None
    return None


def stamped(event: Document, sequence: int, previous: str) -> tuple[Document, str]:
    """The event with its chain extension, and its hash."""
    digest = link_hash(sequence, previous, event)
    chain = {"url": CHAIN_URL, "extension": [
        {"url": "sequence", "valueString": str(sequence)},
        {"url": "previous", "valueString": previous},
        {"url": "hash", "valueString": digest},
    ]}  # fmt: skip
    others = [e for e in event.get("extension") or [] if e.get("url") != CHAIN_URL]
    return {**event, "extension": [*others, chain]}, digest


class AuditChain:
    """Appends events to the chain in `repository`; `append` returns once it is durable."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self._pending: list[tuple[Document, asyncio.Future[None]]] = []
        self._writer: asyncio.Task[None] | None = None
        self._head: tuple[int, str] | None = None  # what this process last committed
        self._prepared = False
        # writes the rows a stopped process left pending; started with the first write
        self.recovery: asyncio.Task[None] | None = None
        self._row_tasks: set[asyncio.Task[None]] = set()
        self.written = 0  # events made durable by this process
        self.groups = 0  # write units they took (tests see that waiting events go together)

    async def append(self, event: Document) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((event, done))
        if self._writer is None or self._writer.done():
            # a context of its own: the writer must not inherit a request's transaction
            self._writer = asyncio.get_running_loop().create_task(
                self._run(), context=contextvars.Context()
            )
        await done

    async def _run(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
            try:
                later = await self._write([event for event, _ in batch])
            except Exception as failure:
                cause = type(failure.__cause__).__name__ if failure.__cause__ else "-"
                log.error("audit events could not be written: %s (%s)", failure, cause)
                log.debug("audit write traceback", exc_info=True)
                refusal = AccessError(UNAVAILABLE)
                for _, done in batch:
                    if not done.done():
                        done.set_exception(refusal)
                continue
            self.written += len(batch)
            self.groups += 1
            for number, (_, done) in enumerate(batch):
                if number in later:
                    # its own task: the next group need not wait for these rows
                    identifier, rows = later[number]
                    task = asyncio.get_running_loop().create_task(
                        self._rows_then(identifier, rows, done), context=contextvars.Context()
                    )
                    self._row_tasks.add(task)
                    task.add_done_callback(self._row_tasks.discard)
                elif not done.done():
                    done.set_result(None)

    async def _rows_then(
        self, identifier: str, rows: list[Write], done: asyncio.Future[None]
    ) -> None:
        try:
            await self._write_rows(identifier, rows)
        except Exception as failure:
            # the event is durable; its rows are not all: they stay pending for the next start
            log.error("audit event %s: index rows could not be written: %s", identifier, failure)
            if not done.done():
                done.set_exception(AccessError(UNAVAILABLE))
            return
        if not done.done():
            done.set_result(None)

    async def _write_rows(self, identifier: str, rows: list[Write]) -> None:
        """The rows of a large event in units of `ROWS_PER_UNIT`, then its note removed."""
        for start in range(0, len(rows), ROWS_PER_UNIT):
            await self.repository.apply_writes(rows[start : start + ROWS_PER_UNIT])
        await self.repository.apply_writes(
            [Write(PENDING_COLLECTION, "delete", {}, {"_id": identifier})]
        )

    async def recover(self) -> int:
        """Write the rows of events a stopped process left pending (what it wrote of them
        removed first); how many events."""
        pending = self.repository.db[PENDING_COLLECTION]
        index = f"{AUDIT_TYPE}_idx"
        recovered = 0
        for document in await pending.find({}).to_list():
            identifier = str(document["_id"])
            stored = await self.repository.read(AUDIT_TYPE, identifier)
            rows = self.repository.index_writes_of(stored) if stored is not None else []
            await self.repository.apply_writes([Write(index, "delete", {}, {"r": identifier})])
            await self._write_rows(identifier, rows)
            recovered += 1
        if recovered:
            log.warning("audit: index rows of %d interrupted events written again", recovered)
        return recovered

    async def _write(self, events: list[Document]) -> dict[int, tuple[str, list[Write]]]:
        # losing to other writers is retried for a while, not a number of times: several
        # busy processes share one head, and a process killed inside its transaction
        # holds the head until the store aborts that transaction
        deadline = asyncio.get_running_loop().time() + CONTENDED_SECONDS
        attempt = 0
        while True:
            head = self._head or await self._read_head()
            new, writes, later = self._chained(head, events)
            try:
                await self.repository.apply_writes(writes)
            except PyMongoError as error:
                if not _contended(error):
                    raise
                # another writer extended the chain from the same head: read it again
                self._head = None
                if asyncio.get_running_loop().time() > deadline:
                    raise RuntimeError("the audit chain stayed contended") from error
                await store_errors.pause(min(attempt, 4))
                attempt += 1
                continue
            self._head = new
            return later

    def _chained(
        self, head: tuple[int, str], events: list[Document]
    ) -> tuple[tuple[int, str], list[Write], dict[int, tuple[str, list[Write]]]]:
        """The group's sequence numbers reserved after `head` in one step, each event
        chained to the one before in memory, and the group's writes as one unit: the
        events (one insert_many), their index rows, the head moved past them. A large
        event's rows are left out of the unit (returned by the event's place in the
        group), and the unit notes them as pending."""
        sequence, previous = head
        documents: list[Write] = []
        rows: list[Write] = []
        later: dict[int, tuple[str, list[Write]]] = {}
        for number, event in enumerate(events):
            sequence += 1
            chained, previous = stamped(event, sequence, previous)
            identifier = event_id(sequence)
            _, writes = self.repository.write_once(chained, identifier)
            own = [write for write in writes if write.collection != AUDIT_TYPE]
            documents += [write for write in writes if write.collection == AUDIT_TYPE]
            if len(own) > LARGE_ROWS:
                later[number] = (identifier, own)
                documents.append(Write(PENDING_COLLECTION, "insert", {"_id": identifier}))
            else:
                rows += own
        new = (sequence, previous)
        return new, [*documents, *rows, _head_write(head, new)], later

    async def _prepare(self) -> None:
        """The collections a chain write touches exist before any transaction: a store
        may not create one inside a transaction (or forget it when that is aborted)."""
        database = self.repository.db
        existing = set(await database.list_collection_names())
        for name in (AUDIT_TYPE, f"{AUDIT_TYPE}_idx", HEAD_COLLECTION, PENDING_COLLECTION):
            if name not in existing:
                with contextlib.suppress(CollectionInvalid, OperationFailure):
                    await database.create_collection(name)
        self._prepared = True
        self.recovery = asyncio.get_running_loop().create_task(
            self._recover_quietly(), context=contextvars.Context()
        )

    async def _recover_quietly(self) -> None:
        try:
            await self.recover()
        except Exception as failure:  # tried again by the next process to start
            log.error("audit: pending index rows could not be written: %s", failure)

    async def _read_head(self) -> tuple[int, str]:
        if not self._prepared:
            await self._prepare()
        found = await self.repository.db[HEAD_COLLECTION].find_one({"_id": HEAD_ID})
        if found is None:
            return 0, GENESIS
        return int(found["sequence"]), str(found["hash"])


def _contended(error: BaseException) -> bool:
    """Whether a refused unit lost to another writer (a duplicate id, a guard that no
    longer matched, a write conflict), rather than the store failing: a store that
    cannot be reached is not retried here, the access fails at once (fail closed)."""
    cause: BaseException | None = error
    while cause is not None:
        if isinstance(cause, DuplicateKeyError):
            return True
        # a write conflict the repository's own runs did not get past (an operation
        # failure: a store that cannot be reached is a connection failure instead)
        if isinstance(cause, OperationFailure) and store_errors.transient(cause):
            return True
        cause = cause.__cause__
    return False


def _head_write(head: tuple[int, str], new: tuple[int, str]) -> Write:
    """Move the head from `head` to `new`; fails (as a conflict) if another writer did."""
    document = {"sequence": new[0], "hash": new[1]}
    if head[0] == 0:
        return Write(HEAD_COLLECTION, "insert", {"_id": HEAD_ID, **document})
    guard = {"_id": HEAD_ID, "sequence": head[0]}
    return Write(HEAD_COLLECTION, "update", {"$set": document}, guard)
