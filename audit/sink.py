"""The audit sink: every AuditEvent of the chain, once durable in the store, also goes to
the hospital's syslog collector (docs/audit.md "Syslog sink").

The store is the buffer. The chain numbers events 1, 2, 3 ... (audit/chain.py); the
outbox document `audit_outbox/syslog` holds the last sequence the collector was sent.
A background task reads the events after it in order, sends them, and moves the
cursor only once they are written to the connection; while the collector is down,
refuses our certificate or is not trusted, nothing moves and the events wait in the
store, however long. After a crash between sending and moving the cursor, the events of
that batch are sent again: at-least-once, each message naming its sequence number.

Several server processes share one store and one chain: one of them sends, the holder
of a lease on the outbox document (renewed while it sends; taken over by another
process once it lapses), so the collector gets one stream in chain order.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from typing import Any

import orjson
from pymongo.errors import CollectionInvalid, DuplicateKeyError, OperationFailure, PyMongoError

from audit.chain import AUDIT_TYPE, ID_DIGITS, chain_link, event_id
from audit.sink_message import frame, syslog_message
from audit.sink_transport import Connection, Refused, SinkConfig
from fhir_server.group_commit import Write
from fhir_server.repository import Repository

log = logging.getLogger(__name__)
Document = dict[str, Any]
OUTBOX = "audit_outbox"
OUTBOX_ID = "syslog"
BATCH = 100  # events read and sent per round; the cursor moves per round
LEASE_SECONDS = 30.0
RENEW_SECONDS = LEASE_SECONDS / 3
LAST_ID = "9" * ID_DIGITS  # chain ids are 16 digits: other ids sort after this


class SyslogSink:
    """The background sender; `start` and `stop` with the server."""

    def __init__(self, repository: Repository, config: SinkConfig) -> None:
        self.repository = repository
        self.config = config
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.host = socket.getfqdn()
        self.sent = 0  # the last sequence the collector was sent (while holding the lease)
        self._leased_until = 0.0  # this process's view of its lease (monotonic)
        self._renewed = 0.0
        self._connection: Connection | None = None
        self._task: asyncio.Task[None] | None = None
        self._failing: str | None = None  # the reason the collector is not reached, if any
        self._gap: int | None = None
        self._backoff = 0.0
        self._prepared = False

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._run(), name="audit-syslog")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self._drop_connection()
        if self._leased_until:
            await self._release()

    async def _run(self) -> None:
        delay = 0.0
        while True:
            await self._sleep(delay)
            try:
                delay = await self._round()
            except PyMongoError as error:
                # the store is the buffer: when it fails, wait for it as for the collector
                log.warning("audit syslog sink: the store failed (%s); retrying", error)
                delay = self.config.retry_max_seconds
            except Exception as error:  # the sender must outlive any one round
                log.error("audit syslog sink: %s: %s; retrying", type(error).__name__, error)
                log.debug("audit syslog sink traceback", exc_info=True)
                await self._drop_connection()
                delay = self.config.retry_max_seconds

    async def _sleep(self, seconds: float) -> None:
        # polled, not told: the events of other processes sharing the chain come this
        # way too, and the chain's writer (audit/chain.py) stays untouched
        await asyncio.sleep(max(seconds, 0.0))

    async def _round(self) -> float:
        """One round: hold the lease, send what waits; the seconds until the next round."""
        if not self._prepared:
            await self._prepare()
            self._prepared = True
        if not await self._hold_lease():
            await self._drop_connection()
            return self.config.poll_seconds
        events = await self._waiting()
        if not events:
            return self.config.poll_seconds
        try:
            if self._connection is None or self._connection.closed:
                await self._reconnect()
            assert self._connection is not None
            await self._connection.send([message for _, message in events])
        except Refused as refused:
            await self._drop_connection()
            return self._failed(str(refused))
        last = events[-1][0]
        if not await self._advance(last):
            return 0.0  # another process took over: it resends from its cursor
        if self._failing is not None:
            log.info("audit syslog sink: %s reached again, sent up to %d", self.config.target, last)
            self._failing = None
        self._backoff = 0.0
        return 0.0 if len(events) == BATCH else self.config.poll_seconds

    def _failed(self, reason: str) -> float:
        # the first failure of an outage is a warning, its repeats only debug: a collector
        # down for a night must not fill the log
        if self._failing is None:
            log.warning(
                "audit syslog sink: %s (events wait in the store from sequence %d)",
                reason, self.sent + 1,
            )  # fmt: skip
        else:
            log.debug("audit syslog sink: still failing: %s", reason)
        self._failing = reason
        self._backoff = min(max(self._backoff * 2, 0.25), self.config.retry_max_seconds)
        return self._backoff

    async def _reconnect(self) -> None:
        await self._drop_connection()
        self._connection = await Connection.open(self.config)

    async def _drop_connection(self) -> None:
        if self._connection is not None:
            connection, self._connection = self._connection, None
            await connection.close()

    async def _waiting(self) -> list[tuple[int, bytes]]:
        """The next events after the cursor, in chain order, as framed messages."""
        database = self.repository.db
        found = (
            database[AUDIT_TYPE]
            .find({"_id": {"$gt": event_id(self.sent), "$lte": LAST_ID}}, {"raw": 1})
            .sort("_id", 1)
            .limit(BATCH)
        )
        framed: list[tuple[int, bytes]] = []
        expected = self.sent + 1
        async for document in found:
            raw = bytes(document["raw"])
            event = orjson.loads(raw)
            link = chain_link(event)
            if link is None or event_id(link.sequence) != document["_id"]:
                continue  # not part of the chain (`medbridge audit verify` reports it)
            if link.sequence != expected and not self._accept_gap(expected, link.sequence):
                break
            message = syslog_message(raw, event, link.sequence, self.config.app_name, self.host)
            framed.append((link.sequence, frame(message)))
            expected = link.sequence + 1
        return framed

    def _accept_gap(self, expected: int, found: int) -> bool:
        """A sequence missing from the store: a batch is committed as one, so it is not
        in flight; it was removed. Sent on after a second look, loudly."""
        if self._gap != expected:
            self._gap = expected
            return False
        log.error(
            "audit syslog sink: sequences %d-%d are missing from the store; sent on from %d "
            "(`medbridge audit verify` reports the removal)",
            expected, found - 1, found,
        )  # fmt: skip
        self._gap = None
        return True

    async def _prepare(self) -> None:
        # a store may not create a collection inside a transaction (as audit/chain.py)
        # and under the write gate: on the embedded store a write beside an open
        # transaction is rolled back with it
        database = self.repository.db
        async with self.repository.write_gate():
            if OUTBOX not in set(await database.list_collection_names()):
                with contextlib.suppress(CollectionInvalid, OperationFailure):
                    await database.create_collection(OUTBOX)

    async def _hold_lease(self) -> bool:
        """Whether this process sends: it holds the outbox's lease, or takes it now."""
        now = time.monotonic()
        if self._leased_until > now and now - self._renewed < RENEW_SECONDS:
            return True
        wall = time.time()
        lease = {"owner": self.owner, "lease_until": wall + LEASE_SECONDS}
        outbox = self.repository.db[OUTBOX]
        current = await outbox.find_one({"_id": OUTBOX_ID})
        try:
            if current is None:
                await self._write(Write(OUTBOX, "insert", {"_id": OUTBOX_ID, "sent": 0, **lease}))
                sent = 0
            elif current.get("owner") == self.owner or float(current["lease_until"]) < wall:
                guard = {"_id": OUTBOX_ID, "owner": current.get("owner"), "sent": current["sent"]}
                await self._write(Write(OUTBOX, "update", {"$set": lease}, guard))
                sent = int(current["sent"])
            else:
                self._leased_until = 0.0
                return False
        except DuplicateKeyError:  # another process took it first
            self._leased_until = 0.0
            return False
        if not self._leased_until:
            log.info("audit syslog sink: sending to %s from sequence %d", self.config.target,
                     sent + 1)  # fmt: skip
        self.sent = sent
        self._leased_until = now + LEASE_SECONDS * 0.8  # a margin for clocks and the store
        self._renewed = now
        return True

    async def _advance(self, sent: int) -> bool:
        """Move the cursor to `sent` (and renew the lease); False if the lease was lost."""
        wall, now = time.time(), time.monotonic()
        update = {"$set": {"sent": sent, "lease_until": wall + LEASE_SECONDS}}
        try:
            await self._write(Write(OUTBOX, "update", update, {"_id": OUTBOX_ID,
                                                               "owner": self.owner}))  # fmt: skip
        except DuplicateKeyError:
            log.warning("audit syslog sink: another process took over sending")
            self._leased_until = 0.0
            return False
        self.sent = sent
        self._leased_until, self._renewed = now + LEASE_SECONDS * 0.8, now
        return True

    async def _release(self) -> None:
        """A clean stop hands the lease on at once rather than after it lapses."""
        guard = {"_id": OUTBOX_ID, "owner": self.owner}
        with contextlib.suppress(PyMongoError):
            await self._write(Write(OUTBOX, "update", {"$set": {"lease_until": 0.0}}, guard))
        self._leased_until = 0.0

    async def _write(self, write: Write) -> None:
        # through the repository: its write gate and group commit (the embedded store
        # rolls back a write made beside an open transaction)
        await self.repository.apply_writes([write])
