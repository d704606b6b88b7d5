"""Group commit on the embedded store: concurrent write units share commits, fail alone."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path
from typing import Any

import orjson
import pytest
from pymongo import AsyncMongoClient
from pymongo.errors import DuplicateKeyError

from access.context import Door, RequestContext
from fhir_server.exchange import FhirRequest
from fhir_server.group_commit import Write, insert
from fhir_server.repository import Repository
from fhir_server.router import FhirRouter
from fhir_server.services import FhirServices
from imaging.index import Added, DicomIndex
from imaging.ingest import Ingestor, IngestPolicy
from imaging.objectstore import LocalObjectStore
from medbridge.compose import compose
from medbridge.settings import Settings
from tests.support.dicom import renamed

Client = AsyncMongoClient[dict[str, Any]]
JSON = {"content-type": "application/fhir+json"}


async def repository_on(mongo: Client, database_name: str) -> Repository:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    assert repository.group is not None, "the embedded store speaks client bulkWrite"
    await repository.db["probe"].create_index("n")
    return repository


async def test_concurrent_units_share_commits(mongo: Client, database_name: str) -> None:
    repository = await repository_on(mongo, database_name)
    assert repository.group is not None

    async def unit(n: int) -> None:
        await repository.apply_writes(
            [insert("probe", {"_id": f"a{n}", "n": n}), insert("probe", {"_id": f"b{n}", "n": n})]
        )

    await asyncio.gather(*(unit(n) for n in range(40)))
    assert await repository.db["probe"].count_documents({}) == 80
    assert repository.group.units == 40
    assert repository.group.batches < 40  # units that arrived together committed together


async def test_a_failing_unit_fails_alone_and_after_the_others_commit(
    mongo: Client, database_name: str
) -> None:
    repository = await repository_on(mongo, database_name)
    probe = repository.db["probe"]
    await repository.apply_writes([insert("probe", {"_id": "taken", "n": 0})])
    seen_by_loser: list[int] = []

    async def loser() -> int:
        try:
            await repository.apply_writes(
                [insert("probe", {"_id": "loser-first", "n": 1}), insert("probe", {"_id": "taken"})]
            )
        except DuplicateKeyError as error:
            # told only once the winners are durable: it can look for them at once
            seen_by_loser.append(await probe.count_documents({"_id": {"$regex": "^w"}}))
            return int((error.details or {}).get("idx", -1))
        return -1

    winners = [
        repository.apply_writes([insert("probe", {"_id": f"w{n}", "n": n})]) for n in range(5)
    ]
    results = await asyncio.gather(loser(), *winners, return_exceptions=True)
    assert results[0] == 1  # the unit's second write collided
    assert results[1:] == [None] * 5
    assert seen_by_loser == [5]
    # the loser's unit is all or nothing: its first write is not there either
    assert await probe.find_one({"_id": "loser-first"}) is None


async def test_an_update_whose_guard_moved_fails_its_unit(
    mongo: Client, database_name: str
) -> None:
    repository = await repository_on(mongo, database_name)
    await repository.apply_writes([insert("probe", {"_id": "doc", "n": 1})])
    moved = Write("probe", "update", {"$set": {"n": 3}}, {"_id": "doc", "n": 2})
    with pytest.raises(DuplicateKeyError):
        await repository.apply_writes([insert("probe", {"_id": "other", "n": 9}), moved])
    assert await repository.db["probe"].find_one({"_id": "other"}) is None
    assert (await repository.db["probe"].find_one({"_id": "doc"}) or {})["n"] == 1


async def test_a_plain_transaction_is_staged_and_reads_its_own_writes(
    mongo: Client, database_name: str
) -> None:
    repository = await repository_on(mongo, database_name)
    router = (await compose(Settings(max_body_bytes=1_000_000), repository)).router
    context = RequestContext(Door.FHIR)
    created = await router.handle(
        FhirRequest("POST", "Patient", [], JSON, orjson.dumps({"resourceType": "Patient"})),
        context,
    )
    patient_id = orjson.loads(created.body or b"{}")["id"]
    # the second PUT's If-Match can only hold if it reads the first PUT's staged version
    entries = [
        {
            "request": {"method": "PUT", "url": f"Patient/{patient_id}", "ifMatch": 'W/"1"'},
            "resource": {"resourceType": "Patient", "id": patient_id, "gender": "female"},
        },
        {
            "request": {"method": "PATCH", "url": f"Patient/{patient_id}", "ifMatch": 'W/"2"'},
            "resource": {
                "resourceType": "Binary",
                "contentType": "application/json-patch+json",
                "data": base64.b64encode(
                    orjson.dumps([{"op": "replace", "path": "/gender", "value": "male"}])
                ).decode(),
            },
        },
    ]
    document = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    response = await router.handle(
        FhirRequest("POST", "", [], JSON, orjson.dumps(document)), context
    )
    assert response.status == 200, response.body
    current = await repository.read("Patient", patient_id)
    assert current is not None
    assert current.raw is not None
    assert current.version == 3
    assert orjson.loads(current.raw)["gender"] == "male"
    _, total = await repository.history("Patient", patient_id, None, 10)
    assert total == 3


async def test_fhir_and_dicom_index_units_share_one_batch(
    mongo: Client, database_name: str, tmp_path: Path
) -> None:
    """One write path: a FHIR create and a DICOM index group queued together commit
    in one batch, and each unit's writes are all there afterwards."""
    repository = await repository_on(mongo, database_name)
    group = repository.group
    assert group is not None
    index = DicomIndex(repository)
    await index.ensure_indexes()
    ingestor = Ingestor(LocalObjectStore(tmp_path), index, IngestPolicy())
    router = FhirRouter(FhirServices(repository, 1_000_000))
    create = FhirRequest("POST", "Patient", [], JSON, orjson.dumps({"resourceType": "Patient"}))

    async def queued(count: int) -> None:
        for _ in range(500):  # waits for the tasks to reach the queue; no timing asserted
            if group.waiting == count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{group.waiting} units queued, expected {count}")

    async with repository.write_gate():  # the committer waits: units line up behind it
        opener = asyncio.create_task(repository.apply_writes([insert("probe", {"_id": "p"})]))
        await asyncio.sleep(0.05)  # the committer took `opener` alone and waits for the gate
        fhir = asyncio.create_task(router.handle(create, RequestContext(Door.FHIR)))
        dicom = asyncio.create_task(ingestor.ingest(renamed("CT_small.dcm"), "test"))
        await queued(2)
    await opener
    created, stored = await fhir, await dicom
    assert created.status == 201, created.body
    assert stored.ok
    assert stored.added is Added.STORED
    assert (group.batches, group.units) == (2, 3)  # the FHIR and DICOM units: one batch
    patient_id = orjson.loads(created.body or b"{}")["id"]
    assert await repository.read("Patient", patient_id) is not None
    study = await index.studies.find_one({"_id": stored.study})
    assert study is not None
    assert (study["ns"], study["ni"]) == (1, 1)


async def test_a_repeated_dicom_instance_fails_alone_beside_fhir_units(
    mongo: Client, database_name: str, tmp_path: Path
) -> None:
    """A DICOM index group that collides (the instance indexed meanwhile) is redone from
    a fresh read; the FHIR units of its batch commit regardless."""
    repository = await repository_on(mongo, database_name)
    index = DicomIndex(repository)
    await index.ensure_indexes()
    store = LocalObjectStore(tmp_path)
    data = renamed("CT_small.dcm")
    router = FhirRouter(FhirServices(repository, 1_000_000))
    create = FhirRequest("POST", "Patient", [], JSON, orjson.dumps({"resourceType": "Patient"}))
    # two ingestors (two processes' caches): both skip the duplicate read, one collides
    first, second = (
        Ingestor(store, index_, IngestPolicy()) for index_ in (index, DicomIndex(repository))
    )
    fhir = [router.handle(create, RequestContext(Door.FHIR)) for _ in range(10)]
    both, created = await asyncio.gather(
        asyncio.gather(first.ingest(data, "a"), second.ingest(data, "b")), asyncio.gather(*fhir)
    )
    assert sorted(str(outcome.added) for outcome in both) == ["duplicate", "stored"]
    assert [response.status for response in created] == [201] * 10
    for response in created:
        created_id = orjson.loads(response.body or b"{}")["id"]
        assert await repository.read("Patient", created_id) is not None
    assert await index.instances.count_documents({}) == 1


async def test_a_new_collection_survives_a_batch_run_again_without_a_failed_unit(
    mongo: Client, database_name: str
) -> None:
    """The code-8 refusal of mixed batches: a unit writing a collection that does not
    exist yet, in a batch aborted by another unit's collision, still commits (nx-27017
    used to drop the table with the aborted transaction: "no such table", code 8)."""
    repository = await repository_on(mongo, database_name)
    await repository.apply_writes([insert("probe", {"_id": "taken", "n": 0})])
    assert "brand_new" not in await repository.db.list_collection_names()
    async with repository.write_gate():  # the next two units line up in one batch
        opener = asyncio.create_task(repository.apply_writes([insert("probe", {"_id": "o"})]))
        await asyncio.sleep(0.05)
        new = asyncio.create_task(repository.apply_writes([insert("brand_new", {"_id": 1})]))
        loser = asyncio.create_task(repository.apply_writes([insert("probe", {"_id": "taken"})]))
        await asyncio.sleep(0.05)
    await opener
    await new  # raised WriteError code 8 "no such table: brand_new" before the fix
    with pytest.raises(DuplicateKeyError):
        await loser
    assert await repository.db["brand_new"].count_documents({}) == 1
    await repository.apply_writes([insert("brand_new", {"_id": 2})])
    assert await repository.db["brand_new"].count_documents({}) == 2
