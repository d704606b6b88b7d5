"""Every DICOMweb request passes the Door.DICOMWEB pipeline: hooks see it and can stop it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.routing import Route

from access.access import Action
from access.context import Door
from access.errors import AccessError
from access.pipeline import Stage
from fhir_server.exchange import FhirExchange
from fhir_server.repository import Repository
from imaging.dicomweb.endpoint import DicomwebService
from imaging.index import DicomIndex
from imaging.ingest import Ingestor, IngestPolicy
from imaging.objectstore import LocalObjectStore
from tests.support.dicom import renamed

BOUNDARY = "b"


@pytest.fixture
async def service(
    mongo: object, database_name: str, tmp_path: Path
) -> AsyncIterator[DicomwebService]:
    index = DicomIndex(Repository(mongo, database_name))  # type: ignore[arg-type]
    await index.ensure_indexes()
    store = LocalObjectStore(tmp_path)
    yield DicomwebService(Ingestor(store, index, IngestPolicy()), index, store, None, "/dicomweb")
    await mongo.drop_database(database_name)  # type: ignore[attr-defined]


def client(service: DicomwebService) -> httpx.AsyncClient:
    app = Starlette(
        routes=[Route("/dicomweb/{path:path}", service.handle, methods=["GET", "POST"])]
    )
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://test")


async def test_hooks_see_every_request_and_audit_runs_even_on_refusal(
    service: DicomwebService,
) -> None:
    seen: list[tuple[str, str, Door]] = []
    studies: list[frozenset[str]] = []

    async def authorize(exchange: FhirExchange) -> None:
        assert exchange.access is not None
        seen.append(("authorize", exchange.access.action, exchange.context.door))
        studies.append(exchange.access.studies)
        if exchange.access.action is Action.STOW:
            raise AccessError("MB-4001", "this caller may not store")

    async def audit(exchange: FhirExchange) -> None:
        status = exchange.response.status if exchange.response else 0
        seen.append(("audit", str(status), exchange.context.door))

    service.pipeline.intervene(Stage.AUTHORIZE, authorize)
    service.pipeline.notify(Stage.AUDIT, audit)
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + renamed("CT_small.dcm")
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    async with client(service) as http:
        refused = await http.post(
            "/dicomweb/studies", content=body, headers={"Content-Type": content_type}
        )
        searched = await http.get("/dicomweb/studies")
        missing = await http.get("/dicomweb/studies/1.2.3/metadata")
    assert refused.status_code == 403
    assert "Traceback" not in refused.text
    assert searched.status_code == 200
    assert searched.json() == []  # the refused STOW stored nothing
    assert missing.status_code == 404
    assert seen == [
        ("authorize", "stow-rs", Door.DICOMWEB), ("audit", "403", Door.DICOMWEB),
        ("authorize", "qido-rs", Door.DICOMWEB), ("audit", "200", Door.DICOMWEB),
        ("authorize", "wado-rs", Door.DICOMWEB), ("audit", "404", Door.DICOMWEB),
    ]  # fmt: skip
    assert studies == [frozenset(), frozenset(), frozenset({"1.2.3"})]
