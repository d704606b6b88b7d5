"""The audit trail (issue 15): one R4 AuditEvent per access of every door, stored in the
server's own store and chained by hash; searchable, never written by clients; verified
by `medbridge audit verify`, which catches an altered, removed or inserted event.

Real server processes, the run's real store, real clients (httpx, python-hl7's MLLP,
dcmtk); the events are read back from the store with pymongo, as an auditor would.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from pydicom.uid import generate_uid
from pymongo import MongoClient

from tests.integration.test_mllp import adt, msa, orm, send
from tests.support.dcmtk import run, storescu, successes
from tests.support.dicom import renamed
from tests.support.servers import RunningServer, start_server

pytestmark = pytest.mark.integration

Event = dict[str, Any]
REST = "http://hl7.org/fhir/restful-interaction"
DCM = "http://dicom.nema.org/resources/ontology/DCM"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, store: Any) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("audit-trail"), store.uri)
    yield running
    running.stop()


def events(server: RunningServer) -> list[Event]:
    """Every stored AuditEvent in chain order."""
    with MongoClient(server.mongodb_uri) as client:
        found = client[server.database]["AuditEvent"].find({}, {"raw": 1}).sort("_id", 1)
        return [orjson.loads(doc["raw"]) for doc in found]


def after(server: RunningServer, start: int, wanted: Callable[[Event], bool]) -> list[Event]:
    """The events past the first `start` that `wanted` picks, waiting a moment for a DIMSE
    or MLLP peer that saw its answer just before the server wrote nothing more."""
    deadline = time.monotonic() + 10
    while True:
        found = [e for e in events(server)[start:] if wanted(e)]
        if found or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def subtype(code: str) -> Callable[[Event], bool]:
    return lambda e: any(s["code"] == code for s in e.get("subtype", []))


def references(event: Event) -> set[str]:
    return {
        e["what"]["reference"] for e in event.get("entity", []) if "reference" in e.get("what", {})
    }


def patients(event: Event) -> set[str]:
    return {e["what"]["reference"] for e in event.get("entity", []) if e["role"]["code"] == "1"}


def query(event: Event) -> str:
    [entity] = [e for e in event["entity"] if e["role"]["code"] == "24"]
    return base64.b64decode(entity["query"]).decode()


def requestor(event: Event) -> Event:
    [agent] = [a for a in event["agent"] if a["requestor"]]
    return agent


def one(found: list[Event], label: str) -> Event:
    assert len(found) == 1, (label, found)
    return found[0]


def create_patient(server: RunningServer, unique: str) -> str:
    body = {"resourceType": "Patient", "identifier": [{"system": "urn:t", "value": unique}]}
    created = httpx.post(f"{server.fhir_base}/Patient", json=body, timeout=30)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


# one event per access ---------------------------------------------------------------


def test_a_read_is_one_event_naming_who_what_and_the_patient(
    server: RunningServer, unique: str
) -> None:
    patient = create_patient(server, unique)
    start = len(events(server))
    headers = {"X-Purpose-Of-Use": "TREAT"}
    answer = httpx.get(f"{server.fhir_base}/Patient/{patient}", headers=headers, timeout=30)
    assert answer.status_code == 200
    event = one(after(server, start, subtype("read")), "read")
    assert event["type"]["code"] == "rest"
    assert event["action"] == "R"
    assert event["outcome"] == "0"
    assert patients(event) == {f"Patient/{patient}"}
    who = requestor(event)
    assert who["network"]["address"] == "127.0.0.1"
    assert who["who"]["identifier"]["value"] == "anonymous"
    assert who["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
    assert event["source"]["observer"]["display"]
    # the write that made the patient was its own event, a create
    assert any(subtype("create")(e) and patients(e) == {f"Patient/{patient}"}
               for e in events(server)[:start])  # fmt: skip


def test_break_the_glass_is_recorded_as_a_security_alert(
    server: RunningServer, unique: str
) -> None:
    patient = create_patient(server, unique)
    start = len(events(server))
    headers = {"X-Purpose-Of-Use": "BTG"}
    answer = httpx.get(f"{server.fhir_base}/Patient/{patient}", headers=headers, timeout=30)
    assert answer.status_code == 200
    event = one(after(server, start, subtype("read")), "read")
    assert subtype("110113")(event)  # DCM Security Alert
    assert event["purposeOfEvent"][0]["coding"][0]["code"] == "BTG"
    assert requestor(event)["purposeOfUse"][0]["coding"][0]["code"] == "BTG"
    alerts = httpx.get(f"{server.fhir_base}/AuditEvent", params={"subtype": "110113"}).json()
    assert event["id"] in {e["resource"]["id"] for e in alerts["entry"]}


def test_a_search_lists_what_it_returned_and_its_query(server: RunningServer, unique: str) -> None:
    first, second = create_patient(server, unique), create_patient(server, unique)
    start = len(events(server))
    found = httpx.get(f"{server.fhir_base}/Patient", params={"identifier": f"urn:t|{unique}"})
    assert found.json()["total"] == 2
    event = one(after(server, start, subtype("search-type")), "search")
    assert event["action"] == "E"
    assert patients(event) == {f"Patient/{first}", f"Patient/{second}"}
    assert query(event) == f"Patient?identifier=urn:t|{unique}"


def test_failed_and_refused_accesses_are_recorded_with_their_outcome(
    server: RunningServer, unique: str
) -> None:
    start = len(events(server))
    assert httpx.get(f"{server.fhir_base}/Patient/gone{unique}", timeout=30).status_code == 404
    event = one(after(server, start, subtype("read")), "missing read")
    assert event["outcome"] == "4"
    assert event["outcomeDesc"].startswith("MB-1002")


def test_a_transaction_is_one_event_listing_every_entry(server: RunningServer) -> None:
    entries = [{"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {"resourceType": "Patient"},
                "request": {"method": "POST", "url": "Patient"}} for _ in range(3)]  # fmt: skip
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
    start = len(events(server))
    answer = httpx.post(server.fhir_base, json=bundle, timeout=30)
    assert answer.status_code == 200, answer.text
    written = {e["response"]["location"].split("/_history")[0].partition("/fhir/")[2]
               for e in answer.json()["entry"]}  # fmt: skip
    new = after(server, start, lambda e: True)
    event = one(new, "the bundle and its entries")
    assert written <= references(event) | patients(event)


def test_an_hl7_message_is_one_event_with_every_resource_it_wrote(
    server: RunningServer, unique: str
) -> None:
    start = len(events(server))
    message = orm(unique[:12], f"P{unique[:10]}", "NW", f"PL-{unique[:10]}", f"A{unique[:10]}")
    [ack] = asyncio.run(send(server, message))
    assert msa(ack)[1] == "AA", ack
    event = one(after(server, start, lambda e: e["source"]["site"] == "hl7v2"), "message")
    assert event["type"]["code"] == "110110"
    assert event["subtype"][0]["code"] == "O01"
    assert requestor(event)["who"]["identifier"]["value"] == "RIS^HOSP"
    assert len(patients(event)) == 1
    written = {reference.partition("/")[0] for reference in references(event)}
    assert {"Patient", "ServiceRequest"} <= written, event["entity"]
    # its FHIR writes (a transaction and its entries) left no events of their own
    assert [e for e in events(server)[start:] if e["source"]["site"] == "fhir"] == []


def test_a_c_store_is_one_event_of_the_calling_ae(server: RunningServer, tmp_path: Path) -> None:
    path = tmp_path / "one.dcm"
    path.write_bytes(renamed("CT_small.dcm", study=generate_uid(), patient_id="AUDIT1"))
    start = len(events(server))
    assert successes(storescu(server.dicom_port, [path], "MODALITY1")) == 1
    event = one(after(server, start, subtype("c-store")), "C-STORE")
    assert event["type"]["code"] == "110104"
    assert event["action"] == "C"
    assert requestor(event)["who"]["identifier"]["value"] == "MODALITY1"
    uids = {e.get("name") for e in event["entity"]}
    assert any(uid and uid.count(".") > 3 for uid in uids), event["entity"]


# read, search, never write ----------------------------------------------------------


def test_audit_events_are_searched_by_patient_date_action_and_outcome(
    server: RunningServer, unique: str
) -> None:
    patient = create_patient(server, unique)
    assert httpx.get(f"{server.fhir_base}/Patient/{patient}", timeout=30).status_code == 200
    mine = [e for e in events(server) if f"Patient/{patient}" in patients(e)]
    [created] = [e["id"] for e in mine if subtype("create")(e)]
    [read] = [e["id"] for e in mine if subtype("read")(e)]
    base = f"{server.fhir_base}/AuditEvent"

    def ids(**params: str) -> set[str]:
        # each of these searches is an access about the patient too, audited in turn
        bundle = httpx.get(base, params={"patient": patient, **params}, timeout=30).json()
        return {e["resource"]["id"] for e in bundle.get("entry", [])}

    assert {created, read} <= ids()
    assert read in ids(action="R")
    assert created not in ids(action="R")
    assert created in ids(action="C")
    assert {created, read} <= ids(outcome="0")
    assert not {created, read} & ids(outcome="4")
    yesterday = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 86400))
    assert {created, read} <= ids(date=f"ge{yesterday}")
    assert ids(date="lt2000-01-01") == set()
    entity = httpx.get(base, params={"entity": f"Patient/{patient}"}, timeout=30).json()
    assert {created, read} <= {e["resource"]["id"] for e in entity["entry"]}
    other = httpx.get(base, params={"patient": f"other{unique}"}, timeout=30).json()
    assert other["total"] == 0


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_no_client_writes_an_audit_event(server: RunningServer, method: str) -> None:
    create_patient(server, uuid.uuid4().hex)
    stored = events(server)[0]
    url = f"{server.fhir_base}/AuditEvent"
    if method != "POST":
        url += f"/{stored['id']}"
    body: Any = {**stored, "outcome": "0"}
    headers = {"content-type": "application/fhir+json"}
    if method == "PATCH":
        body = [{"op": "replace", "path": "/outcome", "value": "0"}]
        headers = {"content-type": "application/json-patch+json"}
    answer = httpx.request(method, url, content=orjson.dumps(body), headers=headers, timeout=30)
    assert answer.status_code == 405, answer.text
    issue = answer.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "MB-1091"
    assert events(server)[0] == stored


def test_no_bundle_writes_an_audit_event(server: RunningServer) -> None:
    entry = {"resource": {"resourceType": "AuditEvent", "recorded": "2026-01-01T00:00:00Z"},
             "request": {"method": "POST", "url": "AuditEvent"}}  # fmt: skip
    before = len(events(server))
    batch = httpx.post(server.fhir_base, json={"resourceType": "Bundle", "type": "batch",
                                                "entry": [entry]}, timeout=30)  # fmt: skip
    assert batch.status_code == 200
    assert batch.json()["entry"][0]["response"]["status"].startswith("405")
    transaction = httpx.post(server.fhir_base, json={"resourceType": "Bundle",
                             "type": "transaction", "entry": [entry]}, timeout=30)  # fmt: skip
    assert transaction.status_code == 405, transaction.text
    written = [e for e in events(server)[before:] if e.get("recorded") == "2026-01-01T00:00:00Z"]
    assert written == []


# tamper evidence --------------------------------------------------------------------


def verify(*arguments: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medbridge", "audit", "verify", *arguments],
        capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, **(env or {})},
    )  # fmt: skip


def test_verify_through_the_running_server_finds_the_chain_intact(server: RunningServer) -> None:
    create_patient(server, uuid.uuid4().hex)
    done = verify("--data-dir", str(server.data_dir))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "audit chain intact" in done.stdout
    assert f"head {len(events(server))}" in done.stdout or "head" in done.stdout


@pytest.fixture
def copy(server: RunningServer, tmp_path: Path) -> Iterator[tuple[str, Any]]:
    """A copy of the server's chain in a database of its own, to tamper with: at least
    three events, whichever tests ran on this server before (the tests alter event 2)."""
    for _ in range(3):
        create_patient(server, uuid.uuid4().hex)
    name = f"tamper{uuid.uuid4().hex[:10]}"
    with MongoClient(server.mongodb_uri) as client:
        source, target = client[server.database], client[name]
        for collection in ("AuditEvent", "audit_chain"):
            documents = list(source[collection].find({}))
            target[collection].insert_many(documents)
        yield name, target
        client.drop_database(name)


def verify_copy(
    server: RunningServer, name: str, tmp_path: Path
) -> subprocess.CompletedProcess[str]:
    # a data directory no server runs on: the command reads the store it is given
    return verify("--data-dir", str(tmp_path / "offline"), "--mongodb-uri",
                  server.mongodb_uri, "--database", name)  # fmt: skip


def stored_event(database: Any, sequence: int) -> tuple[str, Event]:
    identifier = f"{sequence:016d}"
    return identifier, orjson.loads(database["AuditEvent"].find_one({"_id": identifier})["raw"])


def test_verify_reads_an_intact_copy(server: RunningServer, copy: Any, tmp_path: Path) -> None:
    name, _ = copy
    done = verify_copy(server, name, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr


def test_verify_catches_an_altered_event(server: RunningServer, copy: Any, tmp_path: Path) -> None:
    name, database = copy
    identifier, event = stored_event(database, 2)
    event["outcome"] = "0" if event["outcome"] != "0" else "4"
    database["AuditEvent"].update_one({"_id": identifier}, {"$set": {"raw": orjson.dumps(event)}})
    done = verify_copy(server, name, tmp_path)
    assert done.returncode == 1
    assert f"altered: AuditEvent/{identifier} does not match its hash" in done.stdout


def test_verify_catches_a_removed_event(server: RunningServer, copy: Any, tmp_path: Path) -> None:
    name, database = copy
    database["AuditEvent"].delete_one({"_id": f"{2:016d}"})
    done = verify_copy(server, name, tmp_path)
    assert done.returncode == 1
    assert "removed: sequence 2 missing" in done.stdout


def test_verify_catches_the_last_event_removed(
    server: RunningServer, copy: Any, tmp_path: Path
) -> None:
    name, database = copy
    last = database["AuditEvent"].find_one({}, sort=[("_id", -1)])
    database["AuditEvent"].delete_one({"_id": last["_id"]})
    done = verify_copy(server, name, tmp_path)
    assert done.returncode == 1
    assert "removed: the chain's head" in done.stdout


def test_verify_catches_an_inserted_event(server: RunningServer, copy: Any, tmp_path: Path) -> None:
    name, database = copy
    _, event = stored_event(database, 1)
    forged = {**event, "id": "forged", "outcome": "0"}
    database["AuditEvent"].insert_one({"_id": "forged", "raw": orjson.dumps(forged)})
    done = verify_copy(server, name, tmp_path)
    assert done.returncode == 1
    assert "inserted: AuditEvent/forged is not part of the chain" in done.stdout


def test_verify_catches_an_event_replaced_by_a_rechained_forgery(
    server: RunningServer, copy: Any, tmp_path: Path
) -> None:
    """A forger who recomputes the hash of the event they changed still breaks the link of
    the next event, which names the original's hash."""
    from audit.chain import stamped

    name, database = copy
    identifier, event = stored_event(database, 2)
    _, previous = stored_event(database, 1)
    previous_hash = previous["extension"][-1]["extension"][2]["valueString"]
    changed = {k: v for k, v in event.items() if k not in ("extension", "id", "meta")}
    changed["outcome"] = "0" if event["outcome"] != "0" else "4"
    forged, _ = stamped(changed, 2, previous_hash)
    database["AuditEvent"].update_one({"_id": identifier}, {"$set": {"raw": orjson.dumps(forged)}})
    done = verify_copy(server, name, tmp_path)
    assert done.returncode == 1
    assert f"AuditEvent/{3:016d} does not follow its predecessor" in done.stdout


# durable before the answer, fail closed ---------------------------------------------


def test_an_unwritable_audit_store_fails_every_door_closed(
    tmp_path: Path, store: Any, unique: str
) -> None:
    """The AuditEvents go to a store of their own (`MEDBRIDGE_AUDIT_MONGODB_URI`); killed
    mid-run, every access is refused in its door's protocol, none answered with data."""
    from medbridge.embedded_mongo import EmbeddedMongo

    audit_store = EmbeddedMongo(tmp_path / "audit-store")
    audit_uri = audit_store.start()
    env = {"MEDBRIDGE_AUDIT_MONGODB_URI": audit_uri}
    server = start_server(tmp_path / "server", store.uri, env=env)
    try:
        patient = create_patient(server, unique)
        with MongoClient(audit_uri) as client:
            assert client[server.database]["AuditEvent"].count_documents({}) >= 1
        audit_store.stop()

        read = httpx.get(f"{server.fhir_base}/Patient/{patient}", timeout=60)
        assert read.status_code == 503, read.text
        issue = read.json()["issue"][0]
        assert issue["details"]["coding"][0]["code"] == "MB-1090"
        assert "identifier" not in read.text

        qido = httpx.get(f"{server.base_url}/dicomweb/studies", timeout=60)
        assert qido.status_code == 503

        [ack] = asyncio.run(send(server, adt("A08", unique, f"F{unique[:10]}")))
        assert msa(ack)[1] == "AE", ack
        assert "MB-1090" in ack

        echo = run("echoscu", "-v", "-aet", "PROBE", "-aec", "MEDBRIDGE", "127.0.0.1",
                   str(server.dicom_port))  # fmt: skip
        assert "0x110" in echo, echo[-2000:]  # dcmtk: "Unknown Status: 0x110", processing failure
        # the server itself stays up and answers
        assert httpx.get(f"{server.base_url}/health", timeout=30).status_code == 200
        assert "Traceback" not in server.log()
    finally:
        server.stop()
        audit_store.stop()


# several processes ------------------------------------------------------------------


@pytest.fixture(scope="module")
def two_processes(
    tmp_path_factory: pytest.TempPathFactory, store_kind: str, request: pytest.FixtureRequest
) -> Iterator[list[RunningServer]]:
    """Two `medbridge serve` processes on one database of the isolated store (SecantusDB,
    the write gate off), as behind a load balancer: the run's store when it is the
    isolated one, else one of this module's own."""
    from tests.support.servers import IsolatedStore

    own: IsolatedStore | None = None
    if store_kind == "isolated":
        uri = request.getfixturevalue("store").uri
    else:
        own = IsolatedStore(tmp_path_factory.mktemp("isolated"))
        uri = own.start()
    root = tmp_path_factory.mktemp("audit-two")
    database = f"a{uuid.uuid4().hex[:12]}"
    servers: list[RunningServer] = []
    try:
        for n in range(2):
            servers.append(start_server(root / f"p{n}", uri, database=database))
        yield servers
    finally:
        for server in servers:
            server.stop()
        if own is not None:
            own.stop()


def test_two_processes_extend_one_chain_without_fork_or_gap(
    two_processes: list[RunningServer], tmp_path: Path, unique: str
) -> None:
    first = two_processes[0]
    patient = create_patient(first, unique)

    async def reads() -> list[int]:
        async with httpx.AsyncClient(timeout=120) as client:
            calls = [client.get(f"{two_processes[n % 2].fhir_base}/Patient/{patient}")
                     for n in range(40)]  # fmt: skip
            return [answer.status_code for answer in await asyncio.gather(*calls)]

    assert set(asyncio.run(reads())) == {200}
    stored = events(first)
    sequences = [int(e["id"]) for e in stored]
    assert sequences == list(range(1, len(stored) + 1))  # no gap, no fork (unique ids)
    reads_of_patient = [e for e in stored if subtype("read")(e)]
    assert len(reads_of_patient) == 40
    done = verify("--data-dir", str(tmp_path / "offline"), "--mongodb-uri",
                  first.mongodb_uri, "--database", first.database)  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"{len(stored)} events, head {len(stored)}" in done.stdout
