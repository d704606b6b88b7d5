"""The `hl7_messages` collection: every message as received, before it is acknowledged.

Each receipt is one document: raw bytes, peer, time, status, ACK sent, the resources it
produced. `key` is unique: `MSH-3|MSH-4|MSH-10` for the first receipt of a message, so
MongoDB (not process memory) decides which of two concurrent copies is applied; later
receipts of the same key are archived under `copy:<id>` keys. A message from
`MEDBRIDGE_BODY_OBJECT_BYTES` is kept in the object store and the document names it
(fhir_server/bodies.py): the embedded store rewrote a 2 MiB message's document under its
database lock for the receipt and again for its outcome, holding every other write.
"""

from __future__ import annotations

import hashlib
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from pymongo import ASCENDING, ReturnDocument
from pymongo.errors import DuplicateKeyError

from fhir_server.bodies import BODY, PLACEHOLDER, resolve
from fhir_server.group_commit import Write, insert
from fhir_server.repository import Repository

COLLECTION = "hl7_messages"
RECEIVED = "received"  # archived, being processed (or the process died meanwhile)
PROCESSED = "processed"  # applied, AA sent
DEAD_LETTER = "dead-letter"  # AE/AR: kept with the reason, replayable
DUPLICATE = "duplicate"  # a resend of a processed message: its original ACK was returned
REJECTED = "rejected"  # not applicable as sent (no MSH, same id with other content)

Document = dict[str, Any]


@dataclass(frozen=True, slots=True)
class Receipt:
    id: str
    key: str
    first: bool  # this receipt owns the key
    original: Document | None  # the document owning the key, when this is a copy


def message_key(sending_application: str, sending_facility: str, control_id: str) -> str:
    return f"{sending_application}|{sending_facility}|{control_id}"


def outcome_fields(
    status: str,
    ack: bytes | None,
    references: list[str] | None = None,
    reason: str | None = None,
    code: str | None = None,
) -> Document:
    """What a receipt records of its outcome (`finish`), or is stored with (`receive`)."""
    return {
        "status": status,
        "ack": ack,
        "references": references or [],
        "reason": reason,
        "err3": code,
        "finished": datetime.now(UTC),
    }


def _unkeyed(receipt_id: str) -> str:
    """The key of a receipt whose message has none (no MSH-10 to go by)."""
    return f"unkeyed:{receipt_id}"


def _finished(document: Document, finished: Document) -> Document:
    return {**document, **finished, "attempts": 1}


class Archive:
    """Receipts are written as repository write units: on the embedded store they are
    grouped with the concurrent writes of other messages (one commit for many)."""

    def __init__(self, repository: Repository) -> None:
        self.repository = repository
        self.collection = repository.db[COLLECTION]
        self.gate = repository.write_gate

    async def ensure_indexes(self) -> None:
        async with self.gate():
            await self._indexes()

    async def _indexes(self) -> None:
        await self.collection.create_index([("key", ASCENDING)], unique=True)
        await self.collection.create_index([("status", ASCENDING), ("received", ASCENDING)])

    async def receive(
        self,
        raw: bytes,
        peer: str,
        key: str | None,
        receipt_id: str | None = None,
        finished: Document | None = None,
        **fields: Any,
    ) -> Receipt:
        """Archive one receipt; claims `key` unless another receipt already owns it.

        `finished` (`outcome_fields`): the receipt's outcome, known already (a message that
        writes nothing): the record is stored finished, in one write instead of two. A copy
        of a message seen before is stored unfinished all the same: its outcome is decided
        by the copy's handling."""
        receipt_id = receipt_id or uuid.uuid4().hex
        document = await self.document(raw, peer, receipt_id, **fields)
        apply = self.repository.apply_writes
        owner = _finished(document, finished) if finished else document
        if key is not None:
            try:
                await apply([insert(COLLECTION, {**owner, "key": key})])
                return Receipt(receipt_id, key, True, None)
            except DuplicateKeyError:
                original = await self.collection.find_one({"key": key})
                copy_key = f"copy:{receipt_id}"
                await apply([insert(COLLECTION, {**document, "key": copy_key, "copy_of": key})])
                return Receipt(receipt_id, copy_key, False, original)
        unkeyed = _unkeyed(receipt_id)
        await apply([insert(COLLECTION, {**owner, "key": unkeyed})])
        return Receipt(receipt_id, unkeyed, True, None)

    async def document(self, raw: bytes, peer: str, receipt_id: str, **fields: Any) -> Document:
        """A receipt's record as received, without its key, not yet written (a message
        from the object-store size has its bytes kept there first)."""
        bodies = self.repository.bodies
        document: Document = {"_id": receipt_id, "raw": raw, "size": len(raw)}
        if bodies is not None and bodies.wanted(raw):
            # durable before the record naming it; its digest is the record's too
            body = await bodies.keep("hl7", raw)
            document.update(raw=PLACEHOLDER, sha256=body["sha256"], **{BODY: body})
        else:
            document["sha256"] = hashlib.sha256(raw).hexdigest()
        document.update(peer=peer, received=datetime.now(UTC), status=RECEIVED, **fields)
        return document

    def first_writes(self, document: Document, key: str | None, finished: Document) -> list[Write]:
        """The insert of a receipt's record as the first of `key`, finished: to commit in
        the unit that applies the message (a copy then fails that unit on the key)."""
        owned = key if key is not None else _unkeyed(str(document["_id"]))
        return [insert(COLLECTION, {**_finished(document, finished), "key": owned})]

    async def finish(
        self,
        receipt_id: str,
        status: str,
        ack: bytes | None,
        references: list[str] | None = None,
        reason: str | None = None,
        code: str | None = None,
    ) -> None:
        await self.repository.apply_writes(
            self.finish_writes(receipt_id, status, ack, references, reason, code)
        )

    def finish_writes(
        self,
        receipt_id: str,
        status: str,
        ack: bytes | None,
        references: list[str] | None = None,
        reason: str | None = None,
        code: str | None = None,
    ) -> list[Write]:
        """The write recording a receipt's outcome, to apply alone or with other writes."""
        update = {
            "$set": outcome_fields(status, ack, references, reason, code),
            "$inc": {"attempts": 1},
        }
        return [Write(COLLECTION, "update", update, {"_id": receipt_id})]

    async def claim(self, receipt_id: str) -> Document | None:
        """Mark a receipt as being (re)processed; returns it."""
        async with self.gate():
            document = await self.collection.find_one_and_update(
                {"_id": receipt_id},
                {"$set": {"status": RECEIVED, "claimed": datetime.now(UTC)}},
                return_document=ReturnDocument.AFTER,
            )
        return await self._whole(document)

    async def get(self, receipt_id: str) -> Document | None:
        return await self._whole(await self.collection.find_one({"_id": receipt_id}))

    async def by_key(self, key: str) -> Document | None:
        return await self._whole(await self.collection.find_one({"key": key}))

    async def _whole(self, document: Document | None) -> Document | None:
        """The record with its message's bytes in `raw`, wherever they are kept."""
        if document is not None:
            await resolve(self.repository.bodies, [document])
        return document

    async def failed_ids(self) -> list[str]:
        cursor = self.collection.find({"status": DEAD_LETTER}, {"_id": 1}).sort("received", 1)
        return [str(doc["_id"]) async for doc in cursor]
