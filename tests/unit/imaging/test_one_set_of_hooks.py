"""One hook registered on the FHIR router's pipeline applies to every door: FHIR,
DICOMweb and DIMSE share the stages' hooks, so no door can be left unguarded."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from access.access import Action
from access.context import Door, RequestContext
from access.errors import AccessError
from access.pipeline import Stage
from fhir_server.exchange import FhirExchange, FhirRequest
from fhir_server.repository import Repository
from imaging.dicomweb.endpoint import DicomwebService
from imaging.dimse.door import DimseDoor, Within
from imaging.index import DicomIndex
from imaging.ingest import Ingestor, IngestPolicy
from imaging.objectstore import LocalObjectStore
from medbridge.compose import compose
from medbridge.settings import Settings


async def test_a_hook_on_the_router_guards_every_door(
    mongo: object, database_name: str, tmp_path: Path
) -> None:
    repository = Repository(mongo, database_name)  # type: ignore[arg-type]
    await repository.ensure_indexes()
    router = (await compose(Settings(), repository)).router
    index = DicomIndex(repository)
    await index.ensure_indexes()
    store = LocalObjectStore(tmp_path)
    dicomweb = DicomwebService(
        Ingestor(store, index, IngestPolicy()), index, store, None, "/dicomweb",
        share_hooks_with=router.pipeline,
    )  # fmt: skip
    dimse = DimseDoor(share_hooks_with=router.pipeline)
    doors: list[Door] = []

    async def authorize(exchange: FhirExchange) -> None:
        doors.append(exchange.context.door)
        if exchange.context.actor.identifier == "INTRUDER":
            raise AccessError("MB-4001", "not this one")

    router.pipeline.intervene(Stage.AUTHORIZE, authorize)

    fhir = await router.handle(FhirRequest("GET", "metadata"), RequestContext(Door.FHIR))
    app = Starlette(routes=[Route("/dicomweb/{path:path}", dicomweb.handle, methods=["GET"])])
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        qido = await http.get("/dicomweb/studies")

    async def work(_: Within) -> str:
        return "found"

    allowed = await dimse.run(Action.C_FIND, "VIEWER", work)
    with pytest.raises(AccessError) as refused:
        await dimse.run(Action.C_FIND, "INTRUDER", work)

    assert (fhir.status, qido.status_code, allowed) == (200, 200, "found")
    assert refused.value.entry.dimse == 0x0124
    assert doors == [Door.FHIR, Door.DICOMWEB, Door.DIMSE, Door.DIMSE]
    await mongo.drop_database(database_name)  # type: ignore[attr-defined]
