"""Every DIMSE service passes the Door.DIMSE pipeline: hooks see the calling AE title and
can refuse; audit runs either way. Driven by dcmtk against an in-process listener."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.data import get_testdata_file

from access.access import Action
from access.context import Door
from access.errors import AccessError
from access.pipeline import Stage
from fhir_server.exchange import FhirExchange
from fhir_server.repository import Repository
from imaging.dimse.bridge import LoopBridge
from imaging.dimse.config import DimseConfig
from imaging.dimse.handlers import Archive
from imaging.dimse.service import DimseService
from imaging.index import DicomIndex
from imaging.ingest import Ingestor, IngestPolicy
from imaging.objectstore import LocalObjectStore
from medbridge.embedded_mongo import free_port
from tests.support.dcmtk import BIN, PROPOSE, successes, transfer_syntax


@pytest.fixture
async def listener(
    mongo: object, database_name: str, tmp_path: Path
) -> AsyncIterator[tuple[DimseService, int]]:
    index = DicomIndex(Repository(mongo, database_name))  # type: ignore[arg-type]
    await index.ensure_indexes()
    store = LocalObjectStore(tmp_path)
    archive = Archive(Ingestor(store, index, IngestPolicy()), index, store)
    config = DimseConfig()
    service = DimseService(config, LoopBridge(asyncio.get_running_loop(), 20.0), archive)
    port = await asyncio.to_thread(service.start, "127.0.0.1", free_port())
    yield service, port
    await asyncio.to_thread(service.stop)
    await mongo.drop_database(database_name)  # type: ignore[attr-defined]


async def dcmtk(tool: str, *args: str) -> str:
    # asynchronously: the listener's handlers need this loop while the tool runs
    process = await asyncio.create_subprocess_exec(
        str(BIN / tool), "-v", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip
    output, _ = await asyncio.wait_for(process.communicate(), 60)
    return output.decode(errors="replace")


async def test_store_and_find_pass_the_pipeline_as_the_calling_ae(
    listener: tuple[DimseService, int],
) -> None:
    service, port = listener
    seen: list[tuple[str, str, str, Door]] = []

    instances: list[frozenset[str]] = []

    async def authorize(exchange: FhirExchange) -> None:
        context, access = exchange.context, exchange.access
        assert access is not None
        seen.append(("authorize", access.action, access.actor.identifier, context.door))
        instances.append(access.instances)
        if access.actor.identifier == "NOSTORE" and access.action is Action.C_STORE:
            raise AccessError("MB-4001", "this modality may not store")

    async def audit(exchange: FhirExchange) -> None:
        assert exchange.access is not None
        status = str(exchange.response.status) if exchange.response else "-"
        seen.append(("audit", exchange.access.action, status, exchange.context.door))

    pipeline = service.handlers.archive.door.pipeline
    pipeline.intervene(Stage.AUTHORIZE, authorize)
    pipeline.notify(Stage.AUDIT, audit)
    path = Path(str(get_testdata_file("CT_small.dcm")))
    flag = PROPOSE[transfer_syntax(path)]
    common = ["-aec", "MEDBRIDGE", "127.0.0.1", str(port)]

    refused = await dcmtk("storescu", "-R", flag, "-nh", "-aet", "NOSTORE", *common, str(path))
    assert successes(refused) == 0
    assert "Store Response (Unknown Status: 0x124)" in refused  # PS3.7 C: not authorized
    stored = await dcmtk("storescu", "-R", flag, "-nh", "-aet", "CT01", *common, str(path))
    assert successes(stored) == 1
    found = await dcmtk(
        "findscu", "-S", "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
        "-aet", "VIEWER", *common,
    )  # fmt: skip
    assert "Find Response: 1 (Pending)" in found

    assert seen == [
        ("authorize", "c-store", "NOSTORE", Door.DIMSE), ("audit", "c-store", "403", Door.DIMSE),
        ("authorize", "c-store", "CT01", Door.DIMSE), ("audit", "c-store", "200", Door.DIMSE),
        ("authorize", "c-find", "VIEWER", Door.DIMSE), ("audit", "c-find", "200", Door.DIMSE),
    ]  # fmt: skip
    sop = str(dcmread(path, stop_before_pixels=True).SOPInstanceUID)
    assert instances == [frozenset({sop}), frozenset({sop}), frozenset()]
