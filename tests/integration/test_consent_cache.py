"""The Consent cache against the real store: two caches on two clients stand for two
server processes; a Consent write seen by one (its post-commit hook raises the counter)
drops the other's cached Consents on its next request."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from pymongo import AsyncMongoClient

from access.context import Door, RequestContext
from consent.cache import ConsentCache
from fhir_server.exchange import FhirRequest
from fhir_server.repository import Repository
from medbridge.compose import compose
from medbridge.settings import Settings

BASE = "http://test/fhir"
JSON = {"content-type": "application/fhir+json"}


def consent(patient: str, status: str) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": status,
        "scope": {"coding": [{"code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "provision": {"type": "deny"},
    }


async def test_a_consent_written_through_one_process_holds_at_the_other(
    store: Any, database_name: str
) -> None:
    clients: list[AsyncMongoClient[dict[str, Any]]] = [
        AsyncMongoClient(store.uri) for _ in range(2)
    ]
    try:
        first, second = (Repository(client, database_name) for client in clients)
        await first.ensure_indexes()
        router = (await compose(Settings(), first)).router
        # two processes on one store: they share it, whatever their write gates
        writer, reader = ConsentCache(first, shared=True), ConsentCache(second, shared=True)

        async def post(resource: dict[str, Any]) -> str:
            body = orjson.dumps(resource)
            request = FhirRequest("POST", resource["resourceType"], [], JSON, body, BASE)
            response = await router.handle(request, RequestContext(Door.FHIR))
            assert response.status == 201, response.body
            return str(orjson.loads(response.body or b"{}")["id"])

        patient = await post({"resourceType": "Patient"})
        await reader.refresh()
        assert await reader.consents(patient) == []  # cached: no Consent yet

        await post(consent(patient, "active"))
        # without the counter the reader would keep answering from its cache
        assert await reader.consents(patient) == []
        await writer.written()  # what the post-commit hook does after a Consent write
        await reader.refresh()
        (found,) = await reader.consents(patient)
        assert found["status"] == "active"
        # an inactive Consent does not count
        await post(consent(patient, "inactive"))
        await writer.written()
        await reader.refresh()
        assert len(await reader.consents(patient)) == 1
    finally:
        for client in clients:
            await client.close()


async def test_a_patient_write_drops_the_other_caches_patient_facts(
    store: Any, database_name: str
) -> None:
    clients: list[AsyncMongoClient[dict[str, Any]]] = [
        AsyncMongoClient(store.uri) for _ in range(2)
    ]
    try:
        first, second = (Repository(client, database_name) for client in clients)
        await first.ensure_indexes()
        router = (await compose(Settings(), first)).router
        # two processes on one store: they share it, whatever their write gates
        writer, reader = ConsentCache(first, shared=True), ConsentCache(second, shared=True)

        async def send(method: str, path: str, resource: dict[str, Any]) -> str:
            request = FhirRequest(method, path, [], JSON, orjson.dumps(resource), BASE)
            response = await router.handle(request, RequestContext(Door.FHIR))
            assert response.status in (200, 201), response.body
            return str(orjson.loads(response.body or b"{}")["id"])

        patient = await send("POST", "Patient", {"resourceType": "Patient"})
        arrived = time.monotonic()
        await reader.refresh(arrived)  # the counter read this request sends
        assert (await reader.patient(patient)).participants == frozenset()
        encounter = {
            "resourceType": "Encounter", "status": "in-progress",
            "class": {"code": "AMB"}, "subject": {"reference": f"Patient/{patient}"},
            "participant": [{"individual": {"reference": "Practitioner/p1"}}],
        }  # fmt: skip
        await send("POST", "Encounter", encounter)
        changed = {"resourceType": "Patient", "id": patient,
                   "generalPractitioner": [{"reference": "Practitioner/p2"}]}  # fmt: skip
        await send("PUT", f"Patient/{patient}", changed)
        await writer.written()  # what the post-commit hook does after such a write
        # a request that arrived before the writes shares the read sent after it arrived
        # (no second read), and may be answered from before them
        await reader.refresh(arrived)
        assert (await reader.patient(patient)).participants == frozenset()
        # one that arrives after them reads the counter again and sees both
        await reader.refresh(time.monotonic())
        record = await reader.patient(patient)
        assert record.participants == {"Practitioner/p1"}
        assert record.resource is not None
        assert record.resource["generalPractitioner"] == [{"reference": "Practitioner/p2"}]
    finally:
        for client in clients:
            await client.close()


async def test_a_fill_that_began_before_a_write_is_not_kept(store: Any, database_name: str) -> None:
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(store.uri)
    try:
        repository = Repository(client, database_name)
        await repository.ensure_indexes()
        cache = ConsentCache(repository, shared=True)
        await cache.refresh()
        started = asyncio.Event()
        release = asyncio.Event()
        load = cache._load

        async def slow(patient_id: str) -> Any:
            loaded = await load(patient_id)  # read before the write below
            started.set()
            await release.wait()
            return loaded

        cache._load = slow  # type: ignore[method-assign]
        filling = asyncio.create_task(cache.patient("p9"))
        await started.wait()
        await cache.written()  # a write lands while the fill is under way
        release.set()
        await filling
        cache._load = load  # type: ignore[method-assign]
        assert "p9" not in cache._patients
    finally:
        await client.close()


async def test_a_process_holding_the_write_gate_reads_no_counter(
    store: Any, database_name: str
) -> None:
    """The only process writing the store (the write gate) drops its cache on its own
    writes and never reads or raises the counter."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(store.uri)
    try:
        repository = Repository(client, database_name)  # serialize_writes: the gate
        await repository.ensure_indexes()
        router = (await compose(Settings(), repository)).router
        hooks_cache = ConsentCache(repository)
        assert not hooks_cache.shared
        body = orjson.dumps({"resourceType": "Patient", "birthDate": "2000-01-01"})
        request = FhirRequest("POST", "Patient", [], JSON, body, BASE)
        created = await router.handle(request, RequestContext(Door.FHIR))
        patient = str(orjson.loads(created.body or b"{}")["id"])
        await hooks_cache.refresh(time.monotonic())
        assert (await hooks_cache.patient(patient)).resource is not None
        await hooks_cache.written()
        assert patient not in hooks_cache._patients
        assert await repository.db["consent_versions"].count_documents({}) == 0
    finally:
        await client.close()
