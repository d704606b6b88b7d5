"""Large bodies in the object store (fhir_server/bodies.py, issue 17 `largest-fhir` and
`largest-mllp`): a FHIR version or an HL7 message from `MEDBRIDGE_BODY_OBJECT_BYTES`
(128 KiB) is kept once in the object store, the store's documents name it, and every
read serves the very bytes that were written."""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import AsyncMongoClient

from tests.integration.test_fhir_crud import FHIR_JSON, outcome_codes
from tests.integration.test_mllp import archive, msa, orm, send
from tests.support.servers import RunningServer

Mongo = AsyncMongoClient[dict[str, Any]]
LARGE = 1 << 20  # bytes of Binary.data before base64: well over the 128 KiB default


def binary(size: int = LARGE) -> dict[str, Any]:
    data = base64.b64encode(os.urandom(size)).decode()
    return {"resourceType": "Binary", "contentType": "application/pdf", "data": data}


async def apost(fhir: httpx.AsyncClient, resource: dict[str, Any]) -> httpx.Response:
    answer = await fhir.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert answer.status_code == 201, answer.text[:500]
    return answer


@pytest.fixture
async def fhir(server: RunningServer) -> AsyncIterator[httpx.AsyncClient]:
    """The FHIR base, asynchronously (these tests also talk to the store and MLLP)."""
    async with httpx.AsyncClient(base_url=server.fhir_base, timeout=60.0) as client:
        yield client


def object_path(server: RunningServer, reference: dict[str, Any]) -> Path:
    return server.data_dir / "objects" / reference["key"]


async def current_document(mongo: Mongo, server: RunningServer, resource_id: str) -> Any:
    return await mongo[server.database]["Binary"].find_one({"_id": resource_id})


async def test_large_binary_round_trips_byte_exact_and_is_stored_once(
    server: RunningServer, fhir: httpx.AsyncClient, mongo: Mongo
) -> None:
    sent = binary()
    created = await apost(fhir, sent)
    resource_id = created.json()["id"]
    read = await fhir.get(f"/Binary/{resource_id}")
    assert read.status_code == 200
    assert read.content == created.content  # the same JSON bytes as the create answered
    assert read.json()["data"] == sent["data"]
    current = await current_document(mongo, server, resource_id)
    history = await mongo[server.database]["history"].find_one({"_id": f"Binary/{resource_id}/1"})
    # the bytes are in one object that both documents name, not in either document
    assert current["body"] == history["body"]
    assert current["raw"] == history["raw"] == b""
    assert object_path(server, current["body"]).read_bytes() == read.content
    # a search serves the same bytes as its entry
    found = (await fhir.get("/Binary", params={"_id": resource_id})).json()
    assert found["entry"][0]["resource"] == read.json()


async def test_small_resources_stay_inline(
    server: RunningServer, fhir: httpx.AsyncClient, mongo: Mongo
) -> None:
    created = await apost(fhir, binary(1024))
    current = await current_document(mongo, server, created.json()["id"])
    assert "body" not in current
    assert current["raw"] == (await fhir.get(f"/Binary/{created.json()['id']}")).content


async def test_vread_and_history_of_large_versions(
    server: RunningServer, fhir: httpx.AsyncClient, mongo: Mongo
) -> None:
    first = (await apost(fhir, binary())).json()
    second = binary() | {"id": first["id"]}
    answered = await fhir.put(f"/Binary/{first['id']}", json=second, headers=FHIR_JSON)
    assert answered.status_code == 200, answered.text[:500]
    small = binary(16) | {"id": first["id"]}
    assert (
        await fhir.put(f"/Binary/{first['id']}", json=small, headers=FHIR_JSON)
    ).status_code == 200
    versions = {
        n: (await fhir.get(f"/Binary/{first['id']}/_history/{n}")).json()["data"] for n in (1, 2, 3)
    }
    assert versions == {1: first["data"], 2: second["data"], 3: small["data"]}
    history = (await fhir.get(f"/Binary/{first['id']}/_history")).json()
    assert [e["resource"]["data"] for e in history["entry"]] == [
        small["data"], second["data"], first["data"]
    ]  # fmt: skip
    # the inline version 3 dropped the current document's reference to version 2's object
    current = await current_document(mongo, server, first["id"])
    assert current["body"] is None
    assert current["raw"] == (await fhir.get(f"/Binary/{first['id']}")).content


async def test_delete_of_a_large_binary_keeps_its_history(fhir: httpx.AsyncClient) -> None:
    created = (await apost(fhir, binary())).json()
    assert (await fhir.delete(f"/Binary/{created['id']}")).status_code in (200, 204)
    assert (await fhir.get(f"/Binary/{created['id']}")).status_code == 410
    kept = await fhir.get(f"/Binary/{created['id']}/_history/1")
    assert kept.status_code == 200
    assert kept.json()["data"] == created["data"]
    history = (await fhir.get(f"/Binary/{created['id']}/_history")).json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert history["entry"][1]["resource"]["data"] == created["data"]


async def test_transaction_with_a_large_binary(fhir: httpx.AsyncClient, unique: str) -> None:
    attachment = binary()
    pdf = binary()["data"]
    report = {
        "resourceType": "DiagnosticReport", "status": "final", "code": {"text": "CT head"},
        "presentedForm": [{"contentType": "application/pdf", "data": pdf}],
    }  # fmt: skip
    provenance = {
        "resourceType": "Provenance", "target": [{"reference": f"urn:uuid:{unique}"}],
        "recorded": "2026-12-06T10:00:00Z", "agent": [{"who": {"display": "scanner"}}],
    }  # fmt: skip
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {"fullUrl": f"urn:uuid:{unique}", "resource": attachment,
             "request": {"method": "POST", "url": "Binary"}},
            {"resource": report, "request": {"method": "POST", "url": "DiagnosticReport"}},
            {"resource": provenance, "request": {"method": "POST", "url": "Provenance"}},
        ],
    }  # fmt: skip
    answer = await fhir.post("", json=bundle, headers=FHIR_JSON)
    assert answer.status_code == 200, answer.text[:500]
    paths = [
        "/" + e["response"]["location"].split("/fhir/")[1].split("/_history")[0]
        for e in answer.json()["entry"]
    ]
    assert (await fhir.get(paths[0])).json()["data"] == attachment["data"]
    assert (await fhir.get(paths[1])).json()["presentedForm"][0]["data"] == pdf
    assert (await fhir.get(paths[2])).json()["target"][0]["reference"] == paths[0].lstrip("/")


async def test_missing_object_is_a_clear_500_and_the_server_goes_on(
    server: RunningServer, fhir: httpx.AsyncClient, mongo: Mongo
) -> None:
    created = (await apost(fhir, binary())).json()
    current = await current_document(mongo, server, created["id"])
    object_path(server, current["body"]).unlink()
    for path in (f"/Binary/{created['id']}", f"/Binary/{created['id']}/_history/1"):
        answer = await fhir.get(path)
        assert answer.status_code == 500
        assert outcome_codes(answer)[:2] == ("exception", "MB-1120")
        assert "Traceback" not in answer.text
    searched = await fhir.get("/Binary", params={"_id": created["id"]})
    assert searched.status_code == 500
    assert outcome_codes(searched)[1] == "MB-1120"
    # the server goes on: another large Binary is written and read
    other = (await apost(fhir, binary())).json()
    assert (await fhir.get(f"/Binary/{other['id']}")).json()["data"] == other["data"]


async def test_large_hl7_message_archived_once_in_the_object_store(
    server: RunningServer, mongo: Mongo, unique: str
) -> None:
    note = "NTE|1||" + "a" * 300_000 + "\r"
    message = orm(unique, f"P{unique}", "NW", f"LG-{unique}", f"ACC-{unique}") + note
    first, again = await send(server, message, message)
    assert msa(first)[1] == "AA"
    assert again == first  # the resend is recognised by the kept message's digest
    documents = [d async for d in archive(mongo, server).find({"control_id": f"ORM-NW-{unique}"})]
    processed = next(d for d in documents if d["status"] == "processed")
    assert processed["raw"] == b""
    assert processed["size"] == len(message.encode())
    assert object_path(server, processed["body"]).read_bytes() == message.encode()


async def test_large_dead_letter_replays_from_the_object_store(
    server: RunningServer, mongo: Mongo, fhir: httpx.AsyncClient, unique: str
) -> None:
    order = f"LD-{unique}"
    note = "NTE|1||" + "b" * 300_000 + "\r"
    cancel = orm(unique, f"P{unique}", "CA", order, f"ACC-{unique}") + note
    [refused] = await send(server, cancel)
    assert msa(refused)[1] == "AE"  # the order to cancel is not known yet
    [created] = await send(server, orm(unique, f"P{unique}", "NW", order, "A1"))
    assert msa(created)[1] == "AA"
    dead = await archive(mongo, server).find_one({"control_id": f"ORM-CA-{unique}"})
    assert dead["body"] is not None
    # through the running server (its data directory): the message is read back whole
    completed = await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "medbridge", "hl7", "replay", str(dead["_id"]),
         "--data-dir", str(server.data_dir), "--database", server.database],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr.decode()[-2000:]
    assert f"{dead['_id']}: AA" in completed.stdout.decode()
    requests = (await fhir.get("/ServiceRequest", params={"identifier": order})).json()
    assert [e["resource"]["status"] for e in requests["entry"]] == ["revoked"]
