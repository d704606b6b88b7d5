"""Large stored bodies live in the object store; the database keeps a reference.

Why (issue 17, `largest-fhir` and `largest-mllp` in docs/limits.md): the embedded store
writes a document as JSON text under the lock of its database, so one 8 MiB Binary
(base64 in BSON, base64 again in JSON, checked by SQLite's `json_valid`, written twice:
the current version and its history) held every FHIR read and HL7 write of that
database for hundreds of milliseconds; a 2 MiB HL7 message likewise (its archive record,
then the update recording its outcome, rewrote the whole document). A real MongoDB has
the same shape of cost at a larger size: BSON's 16 MiB cap, oplog and cache churn.

A body of at least `threshold` bytes is written to the object store (the one DICOM uses)
before the database write that names it, under a key made of its SHA-256: the current
document and the history document of a version name the same object, so its bytes are
stored once, and a commit that fails leaves at most an object nobody names. Reads put
the exact bytes back (`raw`), so a read answers the same JSON as before, byte for byte.
Documents below the threshold (nearly all) keep their bytes inline and pay nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from typing import Any, Protocol

from access.errors import AccessError

log = logging.getLogger(__name__)
Document = dict[str, Any]
BODY = "body"  # the field holding the reference: {"key", "size", "sha256"}
# what `raw` holds in a document whose bytes are in the object store: not None (None
# marks a deletion, and searches select `raw != None`), and never served as it is
PLACEHOLDER = b""
# hashing in a thread pays from here (hashlib lets go of the GIL for large inputs)
HASH_OFF_LOOP_BYTES = 256 * 1024


class ObjectPutter(Protocol):
    """What of an object store this needs (imaging's `ObjectStore` has it)."""

    async def put(self, key: str, data: bytes, sha256: str | None = None) -> Any: ...

    async def get(self, key: str) -> bytes: ...


class Bodies:
    """Keeps and fetches bodies over `threshold` bytes; `kind` names the key's folder."""

    def __init__(self, store: ObjectPutter, threshold: int) -> None:
        self.store = store
        self.threshold = threshold

    def wanted(self, raw: bytes | None) -> bool:
        return raw is not None and self.threshold > 0 and len(raw) >= self.threshold

    async def keep(self, kind: str, raw: bytes) -> Document:
        """Store `raw` (durable when this returns); the reference to keep instead."""
        if len(raw) >= HASH_OFF_LOOP_BYTES:
            digest = await asyncio.to_thread(_sha256, raw)
        else:
            digest = _sha256(raw)
        key = f"{kind}/{digest[:2]}/{digest}.bin"
        await self.store.put(key, raw, digest)
        return {"key": key, "size": len(raw), "sha256": digest}

    async def fetch(self, reference: Document) -> bytes:
        """The bytes a reference names; 500 `MB-1120` when the object is gone or short."""
        key = str(reference.get("key", ""))
        try:
            data = await self.store.get(key)
        except Exception as error:
            log.error("stored body %s could not be read (%s)", key, type(error).__name__)
            raise _missing(key) from error
        if len(data) != reference.get("size"):
            log.error("stored body %s has %d bytes, %s expected", key, len(data),
                      reference.get("size"))  # fmt: skip
            raise _missing(key)
        return data

    async def resolve(self, documents: list[Document]) -> None:
        """Put back `raw` in every document that names an object (in place)."""
        named = [doc for doc in documents if doc.get(BODY)]
        if not named:
            return
        fetched = await asyncio.gather(*(self.fetch(doc[BODY]) for doc in named))
        for doc, data in zip(named, fetched, strict=True):
            doc["raw"] = data


async def resolve(bodies: Bodies | None, documents: list[Document]) -> None:
    """`Bodies.resolve`, also where no object store is configured: a document naming an
    object then answers `MB-1120` instead of serving its placeholder."""
    if bodies is not None:
        await bodies.resolve(documents)
        return
    for doc in documents:
        if doc.get(BODY):
            raise _missing(str(doc[BODY].get("key", "")))


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _missing(key: str) -> AccessError:
    return AccessError(
        "MB-1120",
        f"the stored body {key} could not be read from the object store; "
        "the resource is kept but cannot be served until the object is restored",
    )
