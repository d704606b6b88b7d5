"""When an HL7 message's archive record is written (hl7_bridge/processor.py): never after
anything the message writes (with those writes, in one unit, where the group commit takes
them whole), and in one write with its outcome when it writes nothing.

The store's commands are watched through pymongo's command monitoring on a client of
the test's own: every write command that names a collection is recorded in order."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring
from pymongo.asynchronous.database import AsyncDatabase

from fhir_server.repository import Repository
from hl7_bridge.listener import Limits
from hl7_bridge.processor import Processor
from hl7_bridge.service import BridgeOptions
from medbridge.compose import compose
from medbridge.embedded_mongo import EmbeddedMongo
from medbridge.settings import Settings
from tests.support.servers import IsolatedStore

ADT = (
    "MSH|^~\\&|ARCH|WARD|MEDBRIDGE|HOSP|20261122101500||ADT^A08|{control}|P|2.5\r"
    "EVN|A08|20261122101500\r"
    "PID|1||{mrn}^^^HOSP^MR||Archive^Once||19800101|F\r"
)
WRITES = ("insert", "update", "delete", "findAndModify", "bulkWrite")
ARCHIVE = "hl7_messages"
PEER = "127.0.0.1:1"


def adt(control: str, mrn: str) -> bytes:
    return ADT.format(control=control, mrn=mrn).encode()


class Writes(monitoring.CommandListener):
    """The collections each write command touched, in the order they were sent."""

    def __init__(self) -> None:
        self.seen: list[set[str]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        name = event.command_name
        if name not in WRITES:
            return
        if name == "bulkWrite":
            namespaces = event.command.get("nsInfo") or []
            touched = {str(ns.get("ns", "")).partition(".")[2] for ns in namespaces}
        else:
            touched = {str(event.command.get(name))}
        self.seen.append(touched)

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass

    def archive_writes(self) -> int:
        return sum(1 for touched in self.seen if ARCHIVE in touched)


@dataclass
class Bridge:
    """A processor on the test's store, the writes its client sent, its database."""

    processor: Processor
    writes: Writes
    database: AsyncDatabase[dict[str, Any]]


async def processor_on(database: AsyncDatabase[dict[str, Any]]) -> Processor:
    """A processor of its own on `database`, as another server process would have."""
    repository = Repository(database.client, database.name)
    await repository.ensure_indexes()
    options = BridgeOptions("127.0.0.1", 0, Limits())
    composition = await compose(Settings(audit=False), repository, bridge=options)
    assert composition.processor is not None
    return composition.processor


@pytest.fixture
async def bridge(store: EmbeddedMongo | IsolatedStore, database_name: str) -> AsyncIterator[Bridge]:
    writes = Writes()
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(store.uri, event_listeners=[writes])
    try:
        processor = await processor_on(client[database_name])
        writes.seen.clear()
        yield Bridge(processor, writes, client[database_name])
    finally:
        await client.close()


async def test_a_message_that_writes_nothing_is_archived_in_one_write(
    bridge: Bridge, unique: str
) -> None:
    processor, writes, database = bridge.processor, bridge.writes, bridge.database
    first = await processor.handle(adt(f"A-{unique}", f"M-{unique}"), PEER)
    assert first.code == "AA"
    writes.seen.clear()
    # the same demographics again, under a new control id: nothing to change
    again = await processor.handle(adt(f"B-{unique}", f"M-{unique}"), PEER)
    assert again.code == "AA"
    assert writes.seen == [{ARCHIVE}]  # the record and its outcome, nothing else
    record = await database[ARCHIVE].find_one({"_id": again.receipt_id})
    assert record is not None
    assert (record["status"], record["attempts"]) == ("processed", 1)
    assert record["ack"] == again.ack
    assert record["key"] == f"ARCH|WARD|B-{unique}"
    assert record["references"]  # the Patient it found unchanged
    # a resend of it gets the very same ACK and is kept as a copy
    resent = await processor.handle(adt(f"B-{unique}", f"M-{unique}"), PEER)
    assert resent.ack == again.ack
    copy = await database[ARCHIVE].find_one({"_id": resent.receipt_id})
    assert copy is not None
    assert (copy["status"], copy["copy_of"]) == ("duplicate", f"ARCH|WARD|B-{unique}")


async def test_a_message_that_writes_is_archived_before_its_writes(
    bridge: Bridge, unique: str
) -> None:
    processor, writes, database = bridge.processor, bridge.writes, bridge.database
    result = await processor.handle(adt(f"C-{unique}", f"N-{unique}"), PEER)
    assert result.code == "AA"
    patient_writes = [n for n, touched in enumerate(writes.seen) if "Patient" in touched]
    archive_writes = [n for n, touched in enumerate(writes.seen) if ARCHIVE in touched]
    assert patient_writes
    assert archive_writes
    if processor.router.services.repository.group is not None:
        # the group commit takes the bundle whole: the record rides in its unit
        assert len(writes.seen) == 1
        assert {ARCHIVE, "Patient"} <= writes.seen[0]
    else:
        assert archive_writes[0] < patient_writes[0]
    record = await database[ARCHIVE].find_one({"_id": result.receipt_id})
    assert record is not None
    assert (record["status"], record["attempts"]) == ("processed", 1)


async def test_a_refused_message_is_archived_in_one_write_with_its_reason(
    bridge: Bridge, unique: str
) -> None:
    processor, writes, database = bridge.processor, bridge.writes, bridge.database
    # no PID-3: the Patient cannot be identified
    raw = adt(f"D-{unique}", "")
    result = await processor.handle(raw, PEER)
    assert result.code in ("AE", "AR")
    assert writes.archive_writes() == 1
    assert all(touched == {ARCHIVE} for touched in writes.seen)
    record = await database[ARCHIVE].find_one({"_id": result.receipt_id})
    assert record is not None
    assert record["status"] == "dead-letter"
    assert record["raw"] == raw
    assert record["reason"].startswith(result.code)


async def test_a_refused_frame_is_archived_in_one_write(bridge: Bridge, unique: str) -> None:
    processor, writes, database = bridge.processor, bridge.writes, bridge.database
    head = adt(f"E-{unique}", "M")
    result = await processor.oversize(head, 10_000_000, 4_000_000, PEER)
    assert result.code == "AR"
    assert writes.seen == [{ARCHIVE}]
    record = await database[ARCHIVE].find_one({"control_id": f"E-{unique}"})
    assert record is not None
    assert (record["status"], record["err3"], record["raw"]) == ("rejected", "207", head)
    assert record["ack"] == result.ack
    assert record["truncated"] is True


async def test_two_copies_of_a_new_message_at_once_apply_it_once(
    bridge: Bridge, unique: str
) -> None:
    """Both copies plan the same writes; one unit commits them with its record, the
    other's fails (on the same versions, or on the record's key) and that copy is
    answered as the resend it is."""
    processor, database = bridge.processor, bridge.database
    raw = adt(f"F-{unique}", f"F-{unique}")
    first, second = await asyncio.gather(
        processor.handle(raw, PEER), processor.handle(raw, "127.0.0.1:2")
    )
    assert (first.code, second.code) == ("AA", "AA")
    assert first.ack == second.ack
    records = await database[ARCHIVE].find({"control_id": f"F-{unique}"}).to_list()
    assert sorted(r["status"] for r in records) == ["duplicate", "processed"]
    patients = await database["Patient"].count_documents({})
    assert patients == 1


async def test_a_message_id_reused_for_other_content_changes_nothing(
    bridge: Bridge, unique: str
) -> None:
    """The second message, to another process that has not seen the key, plans writes
    (another family name) and, where its record rides with them, their unit fails on the
    record's key: nothing of it is applied, AE 205. The same to the first process."""
    processor, database = bridge.processor, bridge.database
    control, mrn = f"G-{unique}", f"G-{unique}"
    first = await processor.handle(adt(control, mrn), "p:1")
    assert first.code == "AA"
    other = ADT.format(control=control, mrn=mrn).replace("Archive^Once", "Other^Name")
    second = await (await processor_on(database)).handle(other.encode(), "p:1")
    again = await processor.handle(other.encode(), "p:1")
    assert again.code == "AE"
    assert second.code == "AE"
    assert b"205" in (second.ack or b"")
    stored = await database["Patient"].find_one({})
    assert stored is not None
    assert b'"family":"Archive"' in stored["raw"]
    assert b"Other" not in stored["raw"]
    records = await database[ARCHIVE].find({"control_id": control}).to_list()
    assert sorted(r["status"] for r in records) == ["processed", "rejected", "rejected"]


async def test_a_late_resend_is_recognised_before_its_writes_are_planned(
    bridge: Bridge, unique: str
) -> None:
    """A message resent after a later one changed its patient would plan writes again;
    the key is known, so it is a copy at once and nothing but the archive is written
    (a unit failing on the key would make the group commit redo everything with it)."""
    processor, writes, database = bridge.processor, bridge.writes, bridge.database
    mrn = f"H-{unique}"
    first = adt(f"H1-{unique}", mrn)
    answered = await processor.handle(first, "p:1")
    assert answered.code == "AA"
    later = ADT.format(control=f"H2-{unique}", mrn=mrn).replace("Archive^Once", "Later^Name")
    assert (await processor.handle(later.encode(), "p:1")).code == "AA"
    writes.seen.clear()
    resent = await processor.handle(first, "p:1")
    assert resent.ack == answered.ack
    assert writes.seen  # the copy's record
    assert all(touched == {ARCHIVE} for touched in writes.seen)
    stored = await database["Patient"].find_one({})
    assert stored is not None
    assert b'"family":"Later"' in stored["raw"]  # the resend applied nothing
