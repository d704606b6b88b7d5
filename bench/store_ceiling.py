"""What the store alone allows: the MongoDB work of one unit, with nothing of ours around it.

For the HL7 benchmark: an ORM^O01 order costs, counted with a pymongo CommandListener
(docs/hl7.md, "Benchmark"), about 6 reads by `_id` and 2 write units: the
archive record, and one unit of ~35 documents (history and current version of the new
Encounter and ServiceRequest with ~29 search-index rows, the archive update). This
module runs exactly that shape of work against the store through the same group
commit the server uses, with no parsing, validation, mapping, HTTP or MLLP: the
orders/s it reaches is the ceiling the store puts on any server built on it.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from pymongo import AsyncMongoClient

from bench.common import Measurement, measure
from fhir_server.group_commit import Write, insert
from fhir_server.repository import Repository

READS = 6
INDEX_ROWS = 29  # Encounter 11 + ServiceRequest 18
RAW = b'{"resourceType":"ServiceRequest",' + b'"x":"' + b"v" * 850 + b'"}'
ORDER_KEYS = {f"param-{n}": f"value-{n:04d}" for n in range(30)}


def order_writes(tag: str) -> tuple[list[Write], list[Write]]:
    """The archive insert, then the unit applying the order (same sizes as measured)."""
    archive = [insert("hl7_messages", {"_id": tag, "key": tag, "raw": RAW, "status": "received"})]
    unit: list[Write] = []
    for resource_type, rows in (("Encounter", 11), ("ServiceRequest", INDEX_ROWS - 11)):
        rid = f"{tag}-{resource_type}"
        unit.append(
            insert("history", {"_id": f"{resource_type}/{rid}/1", "t": resource_type, "r": rid,
                               "v": 1, "lu": time.time_ns(), "m": "PUT", "raw": RAW})
        )  # fmt: skip
        keys = [f"{rid}#{n:016x}" for n in range(rows)]
        unit.append(
            insert(resource_type, {"_id": rid, "vid": 1, "lu": time.time_ns(), "raw": RAW,
                                   "o": ORDER_KEYS, "rk": keys})
        )  # fmt: skip
        unit.extend(
            insert(f"{resource_type}_idx", {"_id": key, "r": rid,
                                             "k": f"identifier|urn:oid:1.2.3|{key}",
                                             "c": f"identifier|{key}"})
            for key in keys
        )  # fmt: skip
    update = {"$set": {"status": "processed", "ack": b"MSA|AA|" + tag.encode()}}
    unit.append(Write("hl7_messages", "update", update, {"_id": tag}))
    return archive, unit


async def order_ceiling(
    uri: str, orders: int, connections: int, serialize_writes: bool = True
) -> Measurement:
    """`serialize_writes`: the server's setting on this store (group commit needs it)."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(uri)
    database = f"ceiling_{os.getpid()}_{time.time_ns() % 10**6}"
    repository = Repository(client, database, serialize_writes)
    try:
        await repository.ensure_indexes()
        await repository.db["hl7_messages"].create_index("key", unique=True)
        # something to read: the patient and doctor every order looks up
        await repository.apply_writes([insert("Patient", {"_id": "p", "raw": RAW})])
        run = f"c{connections}-{time.time_ns() % 10**8}"

        async def order(n: int) -> bool:
            archive, unit = order_writes(f"{run}-{n}")
            stored = asyncio.ensure_future(repository.apply_writes(archive))
            for _ in range(READS // 2):
                await asyncio.gather(
                    repository.db["Patient"].find_one({"_id": "p"}),
                    repository.db["Patient"].find_one({"_id": "p"}),
                )
            await stored
            await repository.apply_writes(unit)
            return True

        return await measure("store ceiling", connections, orders, order)
    finally:
        await client.close()
