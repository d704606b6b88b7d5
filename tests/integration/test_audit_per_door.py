"""The audit stage receives every access of every door: door, actor, action, the entities
(Type/id or UIDs), the patients (or the query or studies that select them) and the
outcome, refused and failed accesses included; an HL7 message is one record.

The recorder is tests/support/access_hooks.py `record_audit`, an AUDIT hook registered
through the composition (`MEDBRIDGE_EXTRA_HOOKS`) that writes what it received as one
JSON line per access; each test drives one door with its real clients and reads the
lines its accesses left.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from medbridge.running import call_admin, find_running
from tests.integration.test_mllp import adt, msa, send
from tests.support.access_hooks import DENY_ALL_CODE
from tests.support.dcmtk import findscu, run, storescu, successes
from tests.support.dicom import renamed
from tests.support.every_door import Door, every_door_server

pytestmark = pytest.mark.integration

Record = dict[str, Any]


@pytest.fixture(scope="module")
def door(tmp_path_factory: pytest.TempPathFactory, store: Any) -> Iterator[Door]:
    with every_door_server(tmp_path_factory.mktemp("audit-per-door"), store.uri) as running:
        yield running


def audited(
    door: Door, start: int, wanted: Callable[[Record], bool], count: int = 1
) -> list[Record]:
    """The records after line `start` that `wanted` picks, once there are `count` of them
    (a DIMSE peer may see its answer a moment before the audit line is written)."""
    deadline = time.monotonic() + 20
    while True:
        found = [r for r in door.audit_lines()[start:] if wanted(r)]
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.1)


def of(door_name: str, action: str) -> Callable[[Record], bool]:
    return lambda r: r["door"] == door_name and r.get("action") == action


def one(records: list[Record], label: str) -> Record:
    assert len(records) == 1, (label, records)
    return records[0]


def entities(record: Record) -> set[str]:
    """Every entity the record names: Type/id of FHIR resources, DICOM UIDs."""
    named = set(record["touched"]) | set(record["studies"]) | set(record["series"])
    named |= set(record["instances"])
    if record["resource_id"]:
        named.add(f"{record['resource_types'][0]}/{record['resource_id']}")
    return named


def concerns(record: Record) -> bool:
    """Whom it concerns is told: the Patients, or the query or studies that select them."""
    return bool(record["patients"] or record["patient_query"] or record["studies"])


def check(record: Record, actor_kind: str, outcome: str = "ok") -> None:
    assert record["actor"]["kind"] == actor_kind, record
    assert record["actor"]["identifier"], record
    assert record["outcome"] == outcome, record


# FHIR -------------------------------------------------------------------------------


def test_fhir_read_search_create_and_transaction(door: Door) -> None:
    fhir = door.server.fhir_base
    start = len(door.audit_lines())
    assert httpx.get(f"{fhir}/Patient/{door.hl7_patient}", timeout=30).status_code == 200
    read = one(audited(door, start, of("fhir", "read")), "read")
    check(read, "anonymous")
    assert f"Patient/{door.hl7_patient}" in entities(read)
    assert read["patients"] == [door.hl7_patient]

    start = len(door.audit_lines())
    found = httpx.get(f"{fhir}/Observation", params={"subject": f"Patient/{door.hl7_patient}"})
    assert found.status_code == 200
    search = one(audited(door, start, of("fhir", "search-type")), "search")
    check(search, "anonymous")
    assert search["resource_types"] == ["Observation"]
    assert search["patients"] == [door.hl7_patient]

    start = len(door.audit_lines())
    body = {"resourceType": "Patient", "gender": "male"}
    created = httpx.post(f"{fhir}/Patient", json=body, timeout=30)
    assert created.status_code == 201
    create = one(audited(door, start, of("fhir", "create")), "create")
    check(create, "anonymous")
    assert f"Patient/{created.json()['id']}" in entities(create)

    start = len(door.audit_lines())
    entry = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {"resourceType": "Patient"},
             "request": {"method": "POST", "url": "Patient"}}  # fmt: skip
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    answer = httpx.post(fhir, json=bundle, timeout=30)
    assert answer.status_code == 200, answer.text
    location = answer.json()["entry"][0]["response"]["location"]
    written = location.partition("/fhir/")[2].split("/_history")[0]
    records = audited(door, start, lambda r: r["door"] == "fhir", count=2)
    [outer] = [r for r in records if r["parent"] is None]
    [child] = [r for r in records if r["parent"] is not None]
    check(outer, "anonymous")
    check(child, "anonymous")
    assert child["parent"] == outer["request_id"]
    assert written in entities(child)
    assert child["patients"] == [written.removeprefix("Patient/")]


def test_a_transaction_is_audited_as_a_transaction_of_creates(door: Door) -> None:
    start = len(door.audit_lines())
    entry = {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": {"resourceType": "Patient"},
             "request": {"method": "POST", "url": "Patient"}}  # fmt: skip
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [entry]}
    assert httpx.post(door.server.fhir_base, json=bundle, timeout=30).status_code == 200
    records = audited(door, start, lambda r: r["door"] == "fhir", count=2)
    actions = sorted(r["action"] for r in records)
    assert actions == ["create", "transaction"], actions


# DICOMweb ---------------------------------------------------------------------------


def test_dicomweb_stow_qido_and_wado(door: Door) -> None:
    base = f"{door.server.base_url}/dicomweb"
    study = generate_uid()
    instance = renamed("CT_small.dcm", study=study, patient_id=f"W{door.run}")
    boundary = f"audit{door.run}"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + instance
            + f"\r\n--{boundary}--\r\n".encode())  # fmt: skip
    headers = {"content-type": f'multipart/related; type="application/dicom"; boundary={boundary}'}
    start = len(door.audit_lines())
    assert httpx.post(f"{base}/studies", content=body, headers=headers, timeout=60).is_success
    stow = one(audited(door, start, of("dicomweb", "stow-rs")), "STOW-RS")
    check(stow, "anonymous")
    assert stow["resource_types"] == ["ImagingStudy"]

    start = len(door.audit_lines())
    found = httpx.get(f"{base}/studies", params={"StudyInstanceUID": door.study}, timeout=60)
    assert found.status_code == 200
    qido = one(audited(door, start, of("dicomweb", "qido-rs")), "QIDO-RS")
    check(qido, "anonymous")
    assert ["StudyInstanceUID", door.study] in qido["patient_query"]
    assert concerns(qido)

    start = len(door.audit_lines())
    path = f"studies/{door.study}/series/{door.series}/instances/{door.sop}"
    assert httpx.get(f"{base}/{path}", timeout=60).status_code == 200
    wado = one(audited(door, start, of("dicomweb", "wado-rs")), "WADO-RS")
    check(wado, "anonymous")
    assert {door.study, door.series, door.sop} <= entities(wado)
    assert concerns(wado)


# DIMSE ------------------------------------------------------------------------------


def test_dimse_store_find_get_move_and_worklist(door: Door, tmp_path: Path) -> None:
    port = door.server.dicom_port
    path = tmp_path / "store.dcm"
    path.write_bytes(renamed("CT_small.dcm", study=generate_uid(), patient_id=f"S{door.run}"))
    start = len(door.audit_lines())
    assert successes(storescu(port, [path], "PROBE")) == 1
    store = one(audited(door, start, of("dimse", "c-store")), "C-STORE")
    check(store, "dicom-ae")
    assert store["actor"]["identifier"] == "PROBE"
    assert store["instances"], store

    start = len(door.audit_lines())
    keys = ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={door.study}", "PatientID"]
    _, responses = findscu(port, "-S", keys, tmp_path / "find", "PROBE")
    assert len(responses) == 1
    find = one(audited(door, start, of("dimse", "c-find")), "C-FIND")
    check(find, "dicom-ae")
    assert find["studies"] == [door.study]

    start = len(door.audit_lines())
    got = tmp_path / "get"
    got.mkdir()
    output = run("getscu", "-S", "-aet", "PROBE", "-aec", "MEDBRIDGE", "-od", str(got),
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={door.study}",
                 "127.0.0.1", str(port))  # fmt: skip
    assert len(list(got.iterdir())) == 1, output[-2000:]
    get = one(audited(door, start, of("dimse", "c-get")), "C-GET")
    check(get, "dicom-ae")
    assert get["studies"] == [door.study]

    start = len(door.audit_lines())
    output = run("movescu", "-S", "-aet", "PROBE", "-aec", "MEDBRIDGE", "-aem", "DEST",
                 "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={door.study}",
                 "127.0.0.1", str(port))  # fmt: skip
    assert "Received Final Move Response (Success)" in output, output[-2000:]
    move = one(audited(door, start, of("dimse", "c-move")), "C-MOVE")
    check(move, "dicom-ae")
    assert move["studies"] == [door.study]

    start = len(door.audit_lines())
    findscu(port, "-W", [f"PatientID=H{door.run}", "PatientName"], tmp_path / "mwl", "PROBE")
    mwl = one(audited(door, start, of("dimse", "mwl-find")), "MWL")
    check(mwl, "dicom-ae")
    assert ["PatientID", f"H{door.run}"] in mwl["patient_query"], mwl


def test_a_c_store_access_names_its_study_and_patient(door: Door, tmp_path: Path) -> None:
    study = generate_uid()
    path = tmp_path / "store.dcm"
    path.write_bytes(renamed("CT_small.dcm", study=study, patient_id=f"T{door.run}"))
    start = len(door.audit_lines())
    assert successes(storescu(door.server.dicom_port, [path], "PROBE")) == 1
    store = one(audited(door, start, of("dimse", "c-store")), "C-STORE")
    assert study in store["studies"]
    assert store["patients"] or store["patient_query"]


def test_the_worklist_search_is_a_child_of_the_mwl_access(door: Door, tmp_path: Path) -> None:
    start = len(door.audit_lines())
    findscu(door.server.dicom_port, "-W", ["PatientName"], tmp_path / "mwl", "PROBE")
    mwl = one(audited(door, start, of("dimse", "mwl-find")), "MWL")
    # the worklist's, not the background study linker's (system actor) after an earlier
    # test's C-STORE, which may land in this window
    searches = [r for r in door.audit_lines()[start:]
                if r.get("action") == "search-type" and r["door"] == "dimse"]  # fmt: skip
    assert searches, "the worklist reads ServiceRequests through the FHIR pipeline"
    assert {r["parent"] for r in searches} == {mwl["request_id"]}


# HL7 --------------------------------------------------------------------------------


def test_an_hl7_message_is_one_record_and_its_writes_are_its_children(door: Door) -> None:
    start = len(door.audit_lines())
    [ack] = asyncio.run(send(door.server, adt("A08", f"audit{door.run}", f"H{door.run}")))
    assert msa(ack)[1] == "AA"
    records = audited(door, start, of("hl7v2", "hl7-event"))
    message = one(records, "HL7 message")
    check(message, "hl7-peer")
    assert message["actor"]["identifier"] == "RIS^HOSP"
    assert message["event"] == "ADT^A08"
    children = [r for r in door.audit_lines()[start:] if r["parent"] == message["request_id"]]
    assert children, "the message's FHIR accesses name it as their parent"
    assert {door.hl7_patient} <= {p for r in children for p in r["patients"]}
    assert f"Patient/{door.hl7_patient}" in {e for r in children for e in entities(r)}
    # one record per message, however many resources it wrote
    assert [r for r in door.audit_lines()[start:] if r.get("action") == "hl7-event"] == [message]


# commands ---------------------------------------------------------------------------


def test_dicom_import_is_an_access_of_the_operator(door: Door, tmp_path: Path) -> None:
    path = tmp_path / "import.dcm"
    path.write_bytes(renamed("CT_small.dcm", study=generate_uid(), patient_id=f"I{door.run}"))
    start = len(door.audit_lines())
    done = subprocess.run(
        [sys.executable, "-m", "medbridge", "dicom", "import", "--quiet",
         "--data-dir", str(door.server.data_dir), "--mongodb-uri", door.store_uri,
         "--database", door.server.database, str(path)],
        capture_output=True, text=True, timeout=180, check=False,
        env={**os.environ, **door.env()},
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    record = one(audited(door, start, of("internal", "import")), "import")
    check(record, "operator")
    assert any(t.startswith("study:") for t in record["touched"]), record


# refused and failed -----------------------------------------------------------------


def test_failed_and_refused_accesses_are_audited(door: Door, tmp_path: Path) -> None:
    fhir = door.server.fhir_base
    start = len(door.audit_lines())
    assert httpx.get(f"{fhir}/Patient/missing{door.run}", timeout=30).status_code == 404
    missing = one(audited(door, start, of("fhir", "read")), "read of a missing Patient")
    check(missing, "anonymous", "MB-1002")

    with door.rule_set(deny_all=True):
        start = len(door.audit_lines())
        assert httpx.get(f"{fhir}/Patient/{door.hl7_patient}", timeout=30).status_code == 403
        read = one(audited(door, start, of("fhir", "read")), "refused read")
        check(read, "anonymous", DENY_ALL_CODE)
        assert read["patients"] == [door.hl7_patient]

        start = len(door.audit_lines())
        qido = httpx.get(f"{door.server.base_url}/dicomweb/studies", timeout=30)
        assert qido.status_code == 403
        check(one(audited(door, start, of("dicomweb", "qido-rs")), "QIDO"), "anonymous",
              DENY_ALL_CODE)  # fmt: skip

        start = len(door.audit_lines())
        echo = run("echoscu", "-aet", "PROBE", "-aec", "MEDBRIDGE", "127.0.0.1",
                   str(door.server.dicom_port))  # fmt: skip
        assert "Success" not in echo
        check(one(audited(door, start, of("dimse", "c-echo")), "C-ECHO"), "dicom-ae",
              DENY_ALL_CODE)  # fmt: skip

        start = len(door.audit_lines())
        [ack] = asyncio.run(send(door.server, adt("A08", f"refused{door.run}", f"H{door.run}")))
        assert msa(ack)[1] == "AR"
        message = one(audited(door, start, of("hl7v2", "hl7-event")), "refused HL7")
        check(message, "hl7-peer", DENY_ALL_CODE)
        assert message["event"] == "ADT^A08"

        start = len(door.audit_lines())
        running = find_running(door.server.data_dir)
        assert running is not None
        with pytest.raises(RuntimeError, match="403"):
            call_admin(running, "dicom/pending", {})
        admin = one(audited(door, start, of("internal", "admin")), "admin call")
        check(admin, "operator", DENY_ALL_CODE)
        assert admin["event"] == "dicom/pending"
