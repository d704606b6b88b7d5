"""Bundle entries re-enter the router: every entry passes the pipeline's stages."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from pymongo import AsyncMongoClient

from access.context import Door, RequestContext
from access.errors import AccessError
from access.pipeline import Stage
from fhir_server.exchange import FhirExchange, FhirRequest
from fhir_server.repository import Repository
from medbridge.compose import compose
from medbridge.settings import Settings

BASE = "http://test/fhir"


def patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def bundle(kind: str, *entries: tuple[str, str, dict[str, Any] | None]) -> FhirRequest:
    document = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"request": {"method": m, "url": u}, **({"resource": r} if r else {})}
            for m, u, r in entries
        ],
    }
    headers = {"content-type": "application/fhir+json"}
    return FhirRequest("POST", "", [], headers, orjson.dumps(document), BASE)


async def test_each_entry_is_authorized_and_a_denial_rolls_back(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    router = (await compose(Settings(), repository)).router
    seen: list[str] = []
    accesses: list[tuple[str, str | None]] = []

    async def authorize(exchange: FhirExchange) -> None:
        request, access = exchange.request, exchange.access
        seen.append(f"{request.method} {request.path}")
        assert access is not None
        accesses.append((access.action, access.parent.action if access.parent else None))
        if request.method == "DELETE":
            raise AccessError("MB-1030", "deletes are not allowed here")

    router.pipeline.intervene(Stage.AUTHORIZE, authorize)
    context = RequestContext(Door.FHIR)
    entries = (("POST", "Patient", patient("Kept")), ("DELETE", "Patient/x", None))
    batch = await router.handle(bundle("batch", *entries), context)
    assert batch.status == 200
    statuses = [e["response"]["status"] for e in orjson.loads(batch.body or b"")["entry"]]
    assert statuses[0].startswith("201")
    assert statuses[1].startswith("403")
    assert seen == ["POST ", "POST Patient", "DELETE Patient/x"]
    # each entry is its own access, part of the batch's
    assert accesses == [("batch", None), ("create", "batch"), ("delete", "batch")]

    seen.clear()
    failed = await router.handle(bundle("transaction", *entries), context)
    assert failed.status == 403
    assert seen == ["POST ", "DELETE Patient/x"]  # the spec's order: DELETE first, then stop
    found = await repository.matching_ids("Patient", [("family", "kept")])
    assert len(found) == 1  # only the batch's patient; the transaction left nothing


async def test_patient_context_is_compiled_into_searches(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    router = (await compose(Settings(), repository)).router
    system = RequestContext(Door.FHIR)
    for family in ("Mine", "Other"):
        created = await router.handle(
            FhirRequest(
                "POST",
                "Patient",
                [],
                {"content-type": "application/fhir+json"},
                orjson.dumps(patient(family)),
                BASE,
            ),
            system,
        )
        assert created.status == 201
    ids = sorted(await repository.matching_ids("Patient", [("family", "mine,other")]))
    mine = (await repository.matching_ids("Patient", [("family", "mine")]))[0]
    assert len(ids) == 2
    portal = RequestContext(Door.FHIR, patient=mine)
    response = await router.handle(FhirRequest("GET", "Patient", [], {}, None, BASE), portal)
    found = [e["resource"]["id"] for e in orjson.loads(response.body or b"")["entry"]]
    assert found == [mine]


async def test_searches_inside_a_transaction_see_its_writes(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    router = (await compose(Settings(), repository)).router
    request = bundle(
        "transaction",
        ("POST", "Patient", patient("Inside")),
        ("GET", "Patient?_count=5", None),
        ("GET", "Patient?family=insi", None),
    )
    response = await router.handle(request, RequestContext(Door.FHIR))
    assert response.status == 200, response.body
    results = orjson.loads(response.body or b"")["entry"]
    assert [r["resource"]["total"] for r in results[1:]] == [1, 1]


async def test_writers_inside_a_bundle_join_it_instead_of_waiting(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str
) -> None:
    repository = Repository(mongo, database_name)
    audit = repository.db["audit_probe"]

    async def nested() -> None:
        async with repository.bundle_transaction():
            outer = repository.session
            assert outer is not None
            async with repository.write_gate():  # e.g. an audit hook writing directly
                await audit.insert_one({"_id": "gate"}, session=outer)
            async with repository.transaction() as inner:
                assert inner is outer
                await audit.insert_one({"_id": "joined"}, session=inner)
            raise AccessError("MB-1004", "roll the whole bundle back")

    with pytest.raises(AccessError):
        await asyncio.wait_for(nested(), timeout=30)
    assert await audit.find_one({}) is None
