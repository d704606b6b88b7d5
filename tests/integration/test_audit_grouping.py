"""The audit appender groups the events of concurrent accesses (issue 15, Benchmark): one
write unit per group of waiting events, every event durable before its access is
answered, the chain whole; and an AuditEvent is stored lean (no history copy, index rows
of the access log's parameters only). On the run's real store; the HTTP test through a
real server and httpx."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import httpx
import orjson
import pytest
from pymongo import AsyncMongoClient, MongoClient

from audit.chain import (
    AUDIT_TYPE,
    HEAD_COLLECTION,
    HEAD_ID,
    LARGE_ROWS,
    PENDING_COLLECTION,
    ROWS_PER_UNIT,
    AuditChain,
    chain_link,
    event_id,
)
from audit.verify import verify
from fhir_server.repository import HISTORY, Repository
from fhir_server.search.parameters import parameters_for
from tests.support.servers import RunningServer

pytestmark = pytest.mark.integration

Client = AsyncMongoClient[dict[str, Any]]
EVENTS = 60


def event(marker: str) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                 "code": "rest"},
        "action": "R",
        "recorded": "2026-12-06T12:00:00.000Z",
        "outcome": "0",
        "agent": [{"who": {"identifier": {"system": "urn:medbridge:actor:user",
                                          "value": marker}}, "requestor": True}],
        "source": {"site": "fhir", "observer": {"display": "test"}},
        "entity": [{"what": {"reference": f"Patient/{marker}"}}],
    }  # fmt: skip


async def stored_markers(client: Client, database: str) -> dict[str, int]:
    """Agent marker -> sequence, of every stored event (read outside any transaction)."""
    found = {}
    async for document in client[database][AUDIT_TYPE].find({}, {"raw": 1}):
        stored = orjson.loads(document["raw"])
        link = chain_link(stored)
        assert link is not None
        assert document["_id"] == event_id(link.sequence)
        found[stored["agent"][0]["who"]["identifier"]["value"]] = link.sequence
    return found


async def test_concurrent_events_go_as_groups_each_durable_when_appended(
    mongo: Client, database_name: str
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    chain = AuditChain(repository)
    durable_on_return: list[bool] = []

    async def access(n: int) -> None:
        marker = f"m{n}"
        await chain.append(event(marker))
        # the append returned: the event is committed, visible to any other reader
        durable_on_return.append(marker in await stored_markers(mongo, database_name))

    await asyncio.gather(*(access(n) for n in range(EVENTS)))
    assert durable_on_return == [True] * EVENTS
    markers = await stored_markers(mongo, database_name)
    assert sorted(markers) == sorted(f"m{n}" for n in range(EVENTS))
    assert sorted(markers.values()) == list(range(1, EVENTS + 1))  # no gap, no fork
    # the first event went alone; the others waited for it and went together
    assert chain.written == EVENTS
    assert chain.groups < EVENTS // 2
    report = await verify(repository.db)
    assert report.ok, report.problems
    assert (report.checked, report.head) == (EVENTS, EVENTS)


async def test_one_access_at_a_time_is_a_group_of_one(mongo: Client, database_name: str) -> None:
    """Nothing waits for company: an event alone is written at once, as its own group."""
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    chain = AuditChain(repository)
    for n in range(3):
        await chain.append(event(f"s{n}"))
        assert chain.groups == n + 1
    head = await repository.db[HEAD_COLLECTION].find_one({"_id": HEAD_ID})
    assert head is not None
    assert head["sequence"] == 3


async def test_an_event_is_stored_lean_and_still_read_by_version(
    mongo: Client, database_name: str
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    chain = AuditChain(repository)
    await chain.append(event("lean"))
    database = repository.db
    assert await database[HISTORY].count_documents({"t": AUDIT_TYPE}) == 0
    rows = await database[f"{AUDIT_TYPE}_idx"].find({}, {"k": 1}).to_list()
    assert rows == []  # one value per code: every key is in the event's own document
    stored = await database[AUDIT_TYPE].find_one({"_id": event_id(1)})
    assert stored is not None
    keys = [row["k"] for row in rows] + [
        value for name, value in stored.items() if name.startswith("i_") and name.endswith("_k")
    ]
    codes = {k.split("\x1f")[0].partition(":")[0] for k in keys}
    assert codes <= set(parameters_for(AUDIT_TYPE))
    assert {"agent", "entity", "patient", "action", "outcome", "type", "date"} <= codes
    assert not {"site", "address", "entity-role", "entity-type"} & codes
    version = await repository.vread(AUDIT_TYPE, event_id(1), 1)
    assert version is not None
    assert version.raw is not None
    assert orjson.loads(version.raw)["agent"][0]["who"]["identifier"]["value"] == "lean"
    assert await repository.vread(AUDIT_TYPE, event_id(1), 2) is None


def wide(marker: str, patients: int) -> dict[str, Any]:
    """An event naming many patients, as a search by hundreds of `_id`s makes one."""
    named = [{"what": {"reference": f"Patient/{marker}-{n}"}, "type": {"code": "1"}}
             for n in range(patients)]  # fmt: skip
    return {**event(marker), "entity": named}


async def rows_of(database: Any, identifier: str) -> list[str]:
    """The event's index keys: its rows, and the first key of each code that its own
    document keeps (fhir_server/search/inline.py)."""
    found = database[f"{AUDIT_TYPE}_idx"].find({"r": identifier}, {"k": 1})
    stored = await database[AUDIT_TYPE].find_one({"_id": identifier}) or {}
    kept = [value for name, value in stored.items() if name.startswith("i_") and name[-2:] == "_k"]
    return sorted([row["k"] for row in await found.to_list()] + kept)


async def test_a_large_event_has_its_rows_written_after_it_in_units(
    mongo: Client, database_name: str
) -> None:
    """An event of ~600 index rows: stored in its group without them, its rows in units of
    ROWS_PER_UNIT that other writes can go between; all there when the append returns, the
    pending copy gone; an ordinary event of the same moment is answered without waiting."""
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    chain = AuditChain(repository)
    await chain.append(event("first"))
    units_before = repository.group.units if repository.group else 0
    await asyncio.gather(chain.append(wide("wide", 300)), chain.append(event("small")))
    database = repository.db
    rows = await rows_of(database, event_id(2))
    patient_rows = [k for k in rows if k.startswith("patient\x1f")]
    assert len(patient_rows) == 300
    assert len(rows) > 2 * LARGE_ROWS
    assert await database[PENDING_COLLECTION].count_documents({}) == 0
    if repository.group is not None:  # the embedded store's group commit: one unit per part
        assert repository.group.units - units_before >= 1 + len(rows) // ROWS_PER_UNIT
    found = await repository.search_engine().criteria_ids(AUDIT_TYPE, [("patient", "wide-299")])
    assert found == {event_id(2)}
    report = await verify(database)
    assert report.ok, report.problems


async def test_rows_left_pending_by_a_stopped_process_are_written_at_the_next_start(
    mongo: Client, database_name: str
) -> None:
    """A process that died between its large event and the event's last rows leaves its
    note: the next chain to start makes the rows again from the stored event and writes
    them, the same rows (same ids), once."""
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    await AuditChain(repository).append(wide("cut", 250))
    database = repository.db
    identifier = event_id(1)
    complete = await rows_of(database, identifier)
    stored = await database[f"{AUDIT_TYPE}_idx"].find({"r": identifier}, {"_id": 1}).to_list()
    # as the dead process left it: the note, and only some of the rows stored
    await database[PENDING_COLLECTION].insert_one({"_id": identifier})
    cut = sorted(row["_id"] for row in stored)[LARGE_ROWS // 2 :]
    await database[f"{AUDIT_TYPE}_idx"].delete_many({"_id": {"$in": cut}})
    assert len(await rows_of(database, identifier)) < len(complete)
    restarted = AuditChain(Repository(mongo, database_name))
    await restarted.append(event("after"))  # its first write reads the head: recovery starts
    assert restarted.recovery is not None
    await restarted.recovery
    assert await database[PENDING_COLLECTION].count_documents({}) == 0
    assert await rows_of(database, identifier) == complete
    assert await restarted.recover() == 0  # nothing left to do


READERS = 40


def test_concurrent_requests_each_answered_after_their_event_is_stored(
    server: RunningServer, unique: str
) -> None:
    """Many reads at once through a real server, each of another patient: as each answer
    arrives, the access log's search already finds its one event; every event is there
    and the chain holds."""
    patients = []
    for n in range(READERS):
        body = {
            "resourceType": "Patient",
            "identifier": [{"system": "urn:t", "value": f"{unique}{n}"}],
        }
        created = httpx.post(f"{server.fhir_base}/Patient", json=body, timeout=60)
        assert created.status_code == 201, created.text
        patients.append(created.json()["id"])

    async def read_then_find(client: httpx.AsyncClient, patient: str) -> int:
        answer = await client.get(f"{server.fhir_base}/Patient/{patient}")
        assert answer.status_code == 200
        found = await client.get(
            f"{server.fhir_base}/AuditEvent", params={"patient": patient, "subtype": "read"}
        )
        return int(found.json()["total"])

    async def burst() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            return await asyncio.gather(*(read_then_find(client, p) for p in patients))

    assert asyncio.run(burst()) == [1] * READERS
    read = {f"Patient/{p}" for p in patients}
    with MongoClient(server.mongodb_uri) as client:
        documents = client[server.database][AUDIT_TYPE].find({}, {"raw": 1})
        stored = [orjson.loads(document["raw"]) for document in documents]
    reads = [
        e for e in stored
        if e["subtype"][0]["code"] == "read" and e["entity"][0]["what"]["reference"] in read
    ]  # fmt: skip
    assert len(reads) == READERS
    done = subprocess.run(
        [sys.executable, "-m", "medbridge", "audit", "verify", "--data-dir", str(server.data_dir)],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit chain intact" in done.stdout
