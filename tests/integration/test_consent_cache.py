"""The Consent cache against the real store: two caches on two clients stand for two
server processes; a Consent write seen by one (its post-commit hook raises the counter)
drops the other's cached Consents on its next request."""

from __future__ import annotations

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
        writer, reader = ConsentCache(first), ConsentCache(second)

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
