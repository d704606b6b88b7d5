"""Several `medbridge serve` processes on one store: the production path.

Two processes share one SecantusDB (isolated multi-document transactions, the write
gate off: `MEDBRIDGE_SERIALIZE_WRITES=false`) and one S3 bucket (moto's server), as
behind a load balancer (docs/scale.md). Nothing here relies on one process seeing the
other's memory: every answer must come from the store's own guarantees (unique `_id`,
guarded updates, transactions).
"""

from __future__ import annotations

import asyncio
import io
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pydicom
import pytest
from moto.server import ThreadedMotoServer
from pymongo import MongoClient

from medbridge.embedded_mongo import EmbeddedMongo, free_port
from tests.integration.test_fhir_crud import FHIR_JSON, SYSTEM, create, patient
from tests.integration.test_mllp import RIS, orm
from tests.integration.test_mllp_robustness import Sender, msa
from tests.support.dicom import renamed
from tests.support.servers import IsolatedStore, RunningServer, start_server

CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
BOUNDARY = "multi-process-boundary"
WRITERS = 10


@dataclass
class Cluster:
    """Processes on one database of one isolated store, objects in one bucket."""

    store_uri: str
    database: str
    s3_endpoint: str
    bucket: str
    servers: list[RunningServer]
    env: dict[str, str]
    root: Path


@pytest.fixture(scope="module")
def isolated(
    tmp_path_factory: pytest.TempPathFactory, store_kind: str, request: pytest.FixtureRequest
) -> Iterator[str]:
    """The run's store when it is the isolated one, else one of this module's own."""
    if store_kind == "isolated":
        shared: EmbeddedMongo | IsolatedStore = request.getfixturevalue("store")
        yield shared.uri
        return
    own = IsolatedStore(tmp_path_factory.mktemp("isolated"))
    own.start()
    yield own.uri
    own.stop()


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, isolated: str) -> Iterator[Cluster]:
    port = free_port()
    s3 = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    s3.start()
    endpoint = f"http://127.0.0.1:{port}"
    bucket = f"dicom-{uuid.uuid4().hex[:12]}"
    boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        region_name="us-east-1",
    ).create_bucket(Bucket=bucket)
    env = {**CREDENTIALS, "MEDBRIDGE_S3_BUCKET": bucket, "MEDBRIDGE_S3_ENDPOINT_URL": endpoint}
    root = tmp_path_factory.mktemp("cluster")
    database = f"m{uuid.uuid4().hex[:12]}"
    servers: list[RunningServer] = []
    try:
        for n in range(2):
            servers.append(start_server(root / f"p{n}", isolated, database=database, env=env))
        yield Cluster(isolated, database, endpoint, bucket, servers, env, root)
    finally:
        for server in servers:
            server.stop()
        s3.stop()


async def _put(client: httpx.AsyncClient, url: str, body: Any, headers: dict[str, str]) -> int:
    return (await client.put(url, json=body, headers=headers)).status_code


def test_if_match_updates_across_processes_have_one_winner(cluster: Cluster, unique: str) -> None:
    first, second = cluster.servers
    with httpx.Client(base_url=first.fhir_base, timeout=60) as fhir:
        body = create(fhir, patient(unique))

    async def race() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            calls = []
            for n in range(WRITERS):
                base = cluster.servers[n % 2].fhir_base
                changed = {**body, "name": [{"family": f"Writer{n}"}]}
                headers = {**FHIR_JSON, "If-Match": 'W/"1"'}
                calls.append(_put(client, f"{base}/Patient/{body['id']}", changed, headers))
            return list(await asyncio.gather(*calls))

    statuses = asyncio.run(race())
    assert statuses.count(200) == 1, statuses
    assert set(statuses) - {200} <= {409, 412}, statuses
    with httpx.Client(base_url=second.fhir_base, timeout=60) as fhir:
        final = fhir.get(f"Patient/{body['id']}").json()
        history = fhir.get(f"Patient/{body['id']}/_history").json()
    assert final["meta"]["versionId"] == "2"
    assert history["total"] == 2


def test_conditional_creates_across_processes_make_one_resource(
    cluster: Cluster, unique: str
) -> None:
    criteria = {**FHIR_JSON, "If-None-Exist": f"identifier={SYSTEM}|{unique}"}

    async def race() -> list[int]:
        async with httpx.AsyncClient(timeout=60) as client:
            calls = [
                client.post(
                    f"{cluster.servers[n % 2].fhir_base}/Patient",
                    json=patient(unique),
                    headers=criteria,
                )
                for n in range(WRITERS)
            ]
            return [response.status_code for response in await asyncio.gather(*calls)]

    statuses = asyncio.run(race())
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {200, 201, 409}, statuses
    with httpx.Client(base_url=cluster.servers[1].fhir_base, timeout=60) as fhir:
        found = fhir.get("Patient", params={"identifier": f"{SYSTEM}|{unique}"}).json()
    assert len(found.get("entry", [])) == 1


def test_one_hl7_message_to_two_processes_is_applied_once(cluster: Cluster, unique: str) -> None:
    message = orm(unique, f"P{unique[:10]}", "NW", f"O-{unique}", f"A{unique[:8]}").encode()
    acks: list[str] = ["", ""]

    def send(n: int) -> None:
        sender = Sender(cluster.servers[n].mllp_port)
        try:
            acks[n] = sender.send(message)
        finally:
            sender.close()

    threads = [threading.Thread(target=send, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    codes = [msa(ack)[1] for ack in acks]
    assert codes == ["AA", "AA"], acks  # both told it is applied: it is, once
    assert msa(acks[0])[2] == msa(acks[1])[2]  # both acknowledge the same message
    with httpx.Client(base_url=cluster.servers[0].fhir_base, timeout=60) as fhir:
        orders = fhir.get("ServiceRequest", params={"identifier": f"{RIS}|O-{unique}"}).json()
    assert len(orders.get("entry", [])) == 1


def test_one_instance_stored_through_two_processes_is_one_copy(cluster: Cluster) -> None:
    data = renamed("CT_small.dcm")
    ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'

    async def race() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            calls = [
                client.post(
                    f"{cluster.servers[n % 2].base_url}/dicomweb/studies",
                    content=body,
                    headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
                )
                for n in range(4)
            ]
            return [response.status_code for response in await asyncio.gather(*calls)]

    statuses = asyncio.run(race())
    assert set(statuses) == {200}, statuses
    with MongoClient(cluster.store_uri) as client:
        rows = list(client[cluster.database]["dicom_instances"].find({"_id": ds.SOPInstanceUID}))
        study = client[cluster.database]["dicom_studies"].find_one({"_id": ds.StudyInstanceUID})
    assert len(rows) == 1
    assert study is not None
    assert study["ni"] == 1  # counted once, whoever won
    s3 = boto3.client("s3", endpoint_url=cluster.s3_endpoint, **_boto_credentials())
    listed = s3.list_objects_v2(Bucket=cluster.bucket, Prefix="")
    keys = [item["Key"] for item in listed.get("Contents", []) if ds.SOPInstanceUID in item["Key"]]
    assert keys == [rows[0]["key"]], keys


def test_transaction_bundles_from_two_processes_are_serializable(
    cluster: Cluster, unique: str
) -> None:
    with httpx.Client(base_url=cluster.servers[0].fhir_base, timeout=60) as fhir:
        ids = [create(fhir, patient(f"{unique}-{n}"))["id"] for n in range(2)]

    def bundle(family: str) -> dict[str, Any]:
        entries = [
            {
                "resource": {
                    **patient(f"{unique}-{n}"),
                    "id": ids[n],
                    "name": [{"family": family}],
                },
                "request": {"method": "PUT", "url": f"Patient/{ids[n]}"},
            }
            for n in range(2)
        ]
        return {"resourceType": "Bundle", "type": "transaction", "entry": entries}

    async def race() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            calls = [
                client.post(
                    cluster.servers[n % 2].fhir_base, json=bundle(f"Bundle{n}"), headers=FHIR_JSON
                )
                for n in range(6)
            ]
            return [response.status_code for response in await asyncio.gather(*calls)]

    statuses = asyncio.run(race())
    assert set(statuses) <= {200, 409}, statuses
    winners = {f"Bundle{n}" for n, status in enumerate(statuses) if status == 200}
    assert winners, statuses
    with httpx.Client(base_url=cluster.servers[1].fhir_base, timeout=60) as fhir:
        finals = [fhir.get(f"Patient/{i}").json()["name"][0]["family"] for i in ids]
        histories = [
            [
                entry["resource"]["name"][0]["family"]
                for entry in fhir.get(f"Patient/{i}/_history", params={"_count": "50"}).json()[
                    "entry"
                ]
            ]
            for i in ids
        ]
    assert finals[0] == finals[1]
    assert finals[0] in winners
    for history in histories:  # all or nothing: each winner wrote both, no loser wrote any
        assert set(history[:-1]) == winners, (history, statuses)
        assert len(history) == 1 + len(winners)
    assert histories[0][:-1] == histories[1][:-1]  # both in the same order


def test_kill_9_of_one_process_under_mixed_load_keeps_every_answered_write(
    cluster: Cluster, unique: str
) -> None:
    victim = start_server(
        cluster.root / "victim", cluster.store_uri, database=cluster.database, env=cluster.env
    )
    survivor = cluster.servers[0]
    created: list[str] = []
    acked: list[str] = []
    enough = threading.Event()
    stop = threading.Event()

    def fhir_load(server: RunningServer, tag: str) -> None:
        with httpx.Client(base_url=server.fhir_base, timeout=30) as fhir:
            for n in range(200):
                if stop.is_set():
                    return
                try:
                    response = fhir.post(
                        "Patient", json=patient(f"{unique}-{tag}{n}"), headers=FHIR_JSON
                    )
                except httpx.HTTPError:
                    return  # killed under us: that write was never answered
                if response.status_code == 201:
                    created.append(response.json()["id"])
                    if len(created) >= 10:
                        enough.set()

    def hl7_load(server: RunningServer, tag: str) -> None:
        try:
            sender = Sender(server.mllp_port)
        except OSError:
            return
        try:
            for n in range(100):
                if stop.is_set():
                    return
                order = f"K-{unique}-{tag}{n}"
                message = orm(f"{unique}{tag}{n}", f"K{unique[:10]}", "NW", order, f"KA{n}")
                if msa(sender.send(message.encode()))[1] == "AA":
                    acked.append(order)
        except (OSError, ConnectionError, StopIteration, ValueError):
            return
        finally:
            sender.close()

    threads = [
        threading.Thread(target=fhir_load, args=(victim, "v")),
        threading.Thread(target=fhir_load, args=(survivor, "s")),
        threading.Thread(target=hl7_load, args=(victim, "v")),
        threading.Thread(target=hl7_load, args=(survivor, "s")),
    ]
    for thread in threads:
        thread.start()
    enough.wait(120)
    victim.kill()
    stop.set()
    for thread in threads:
        thread.join(120)
    assert created
    assert acked
    with httpx.Client(base_url=survivor.fhir_base, timeout=60) as fhir:
        for patient_id in created:  # every answered create is there, read and found
            assert fhir.get(f"Patient/{patient_id}").status_code == 200
        for order in acked:
            found = fhir.get("ServiceRequest", params={"identifier": f"{RIS}|{order}"}).json()
            assert len(found.get("entry", [])) == 1, order
    with MongoClient(cluster.store_uri) as client:  # nothing half-written
        db = client[cluster.database]
        for document in db["Patient"].find({}, {"vid": 1}):
            assert db["history"].find_one({"_id": f"Patient/{document['_id']}/{document['vid']}"})
        for row in db["history"].find({"t": "Patient", "v": 1}, {"r": 1}):
            assert db["Patient"].find_one({"_id": row["r"]}, {"_id": 1}) is not None, row


def _boto_credentials() -> dict[str, str]:
    return {
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "region_name": "us-east-1",
    }
