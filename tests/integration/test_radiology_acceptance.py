"""Issue 11 acceptance gaps: what the other radiology-loop tests left unproven.

- The HIS orders and the RIS reports, both as python-hl7 `mllp_send` peers; the RIS
  knows neither number of the order, only its accession number (OBR-18): the last of
  the three links (filler, placer, accession).
- `$everything` names each resource once (a set would hide a duplicate Patient).
- `medbridge hl7 replay` with no server running builds its processor from the same
  settings as `serve`: order domains and senders' assigning authorities reach it.
"""

from __future__ import annotations

import asyncio
import base64
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import httpx
import pydicom

from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_dicomweb_fhir_link import eventually
from tests.integration.test_mllp import MLLP_SEND, msa, one, segment, send
from tests.integration.test_radiology_reports import DOMAIN, msh
from tests.support.dcmtk import storescu, successes
from tests.support.dicom import renamed
from tests.support.servers import RunningServer, start_server

HOSP = "https://medbridge.example.org/hl7v2/authority/HOSP"
UNASSIGNED = "https://medbridge.example.org/dicom/patient-id"


def mllp_send(server: RunningServer, message: str, path: Path) -> str:
    """python-hl7's `mllp_send` as the peer; its printed ACK."""
    path.write_bytes(message.replace("\r", "\r\n").encode())
    completed = subprocess.run(
        [str(MLLP_SEND), "--loose", "--file", str(path), "--port", str(server.mllp_port),
         "127.0.0.1"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    return completed.stdout.decode()


def his_order(unique: str, facility: str = "HOSP", control: str = "NW", mrn: str = "") -> str:
    """The HIS's order; PID-3 `mrn` (default: a bare MRN, issued by no authority)."""
    return (
        msh("HIS", facility, "ORM^O01", f"ORM-{control}-{unique}")
        + segment("PID", {1: "1", 3: mrn or f"M{unique[:10]}", 5: "Doe^Jane"})
        + segment("ORC", {1: control, 2: f"PL{unique}"})
        + segment("OBR", {1: "1", 2: f"PL{unique}", 4: "71020^Chest X-ray^C4",
                          18: f"ACC{unique}"})
    )  # fmt: skip


def test_ris_report_finds_his_order_by_accession_number(
    server: RunningServer, fhir: httpx.Client, unique: str, tmp_path: Path
) -> None:
    order = his_order(unique, mrn=f"M{unique[:10]}^^^HOSP")
    output = mllp_send(server, order, tmp_path / "orm.hl7")
    assert f"MSA|AA|ORM-NW-{unique}" in output
    request = one(fhir, "ServiceRequest", identifier=f"PL{unique}")
    report = (
        msh("RIS", "HOSP", "ORU^R01^ORU_R01", f"ORU-{unique}")
        + segment("PID", {1: "1", 3: f"M{unique[:10]}^^^HOSP", 5: "Doe^Jane"})
        + segment("OBR", {1: "1", 2: f"RISPL{unique}", 3: f"RISF{unique}",
                          4: "71020^Chest X-ray^C4", 18: f"ACC{unique}", 24: "RAD", 25: "F"})
        + segment("OBX", {1: "1", 2: "TX", 3: "71020^Findings^C4", 5: "Lungs clear.",
                          11: "F"})
    )  # fmt: skip
    output = mllp_send(server, report, tmp_path / "oru.hl7")
    assert f"MSA|AA|ORU-{unique}" in output
    stored = one(fhir, "DiagnosticReport", identifier=f"RISF{unique}")
    [based_on] = stored["basedOn"]
    assert based_on["reference"] == f"ServiceRequest/{request['id']}"
    assert based_on["identifier"]["system"] == f"{DOMAIN}/facility-HOSP"
    assert stored["subject"] == request["subject"]
    assert stored["status"] == "final"


def test_everything_names_each_resource_once(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    [ack] = asyncio.run(send(server, his_order(unique)))
    assert msa(ack)[1] == "AA"
    request = one(fhir, "ServiceRequest", identifier=f"PL{unique}")
    patient = request["subject"]["reference"]
    everything = fhir.get(f"/{patient}/$everything")
    assert everything.status_code == 200, everything.text
    listed = Counter(
        f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in everything.json()["entry"]
    )
    assert listed[patient] == 1
    assert listed[f"ServiceRequest/{request['id']}"] == 1
    assert max(listed.values()) == 1, listed


def test_offline_replay_uses_order_domains_and_sender_authorities(
    tmp_path: Path, store: EmbeddedMongo, unique: str
) -> None:
    """RIS^WEST cancels an order HIS^EAST placed, before it arrived: AE. With the server
    stopped, `hl7 replay --failed` applies it only if the configured domain joins the two
    facilities, and adds no Patient only if RIS^WEST's bare MRNs are HOSP's."""
    authorities = tmp_path / "authorities.yaml"
    authorities.write_text("senders:\n  HIS-EAST: HOSP\n  RIS-WEST: HOSP\n", encoding="utf-8")
    env = {
        "MEDBRIDGE_HL7_ORDER_DOMAINS": "radiology=HIS^EAST,RIS^WEST",
        "MEDBRIDGE_HL7_AUTHORITIES": str(authorities),
    }
    data_dir = tmp_path / "data"
    server = start_server(data_dir, store.uri, env=env)
    try:
        cancel = his_order(unique, "WEST", "CA").replace("|HIS|WEST|", "|RIS|WEST|")
        [refused] = asyncio.run(send(server, cancel))
        assert msa(refused)[1] == "AE"  # the order is not known yet
        [placed] = asyncio.run(send(server, his_order(unique, "EAST")))
        assert msa(placed)[1] == "AA"
    finally:
        server.stop()
    completed = subprocess.run(
        [sys.executable, "-m", "medbridge", "hl7", "replay", "--failed",
         "--data-dir", str(data_dir), "--mongodb-uri", store.uri,
         "--database", server.database],
        capture_output=True, timeout=120, check=False, env={**os.environ, **env},
    )  # fmt: skip
    assert completed.returncode == 0, completed.stderr.decode()[-2000:]
    assert completed.stdout.decode().strip().endswith(": AA")
    server = start_server(data_dir, store.uri, server.database, env=env)
    try:
        with httpx.Client(base_url=server.fhir_base, timeout=30.0) as fhir:
            request = one(fhir, "ServiceRequest", identifier=f"{DOMAIN}/radiology|PL{unique}")
            assert request["status"] == "revoked"
            patients = fhir.get("Patient", params={"identifier": f"M{unique[:10]}"}).json()
            [patient] = [e["resource"] for e in patients["entry"]]
            assert patient["identifier"] == [{"system": HOSP, "value": f"M{unique[:10]}"}]
            assert request["subject"]["reference"] == f"Patient/{patient['id']}"
    finally:
        server.stop()


def test_resend_with_only_numeric_results_changed_updates_the_same_report(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    """docs/hl7.md "One order, several reports": same status, text and conclusion -> the
    same report; its Observations take the new values, the DiagnosticReport stays."""

    pdf = base64.b64encode(b"%PDF-1.4\n%%EOF\n").decode()

    def dose_report(control: str, value: str, status: str = "F", text: str = "Clear.") -> str:
        return (
            msh("RIS", "HOSP", "ORU^R01^ORU_R01", f"{control}-{unique}")
            + segment("PID", {1: "1", 3: f"M{unique[:10]}^^^HOSP", 5: "Doe^Jane"})
            + segment("OBR", {1: "1", 2: f"PL{unique}", 3: f"F{unique}",
                              4: "71020^Chest X-ray^C4", 24: "RAD", 25: status})
            + segment("OBX", {1: "1", 2: "TX", 3: "71020^Findings^C4", 5: text, 11: status})
            + segment("OBX", {1: "2", 2: "NM", 3: "113722^Dose Area Product^DCM", 5: value,
                              6: "Gy.m2^Gy.m2^UCUM", 11: status})
            + segment("OBX", {1: "3", 2: "ED", 3: "18748-4^Diagnostic Imaging Report^LN",
                              5: f"^AP^PDF^Base64^{pdf}", 11: status})
        )  # fmt: skip

    acks = asyncio.run(send(server, dose_report("N1", "0.12"), dose_report("N2", "0.15")))
    assert [msa(a)[1] for a in acks] == ["AA", "AA"], acks[1][-700:]
    report = one(fhir, "DiagnosticReport", identifier=f"F{unique}")
    assert report["meta"]["versionId"] == "1"
    [result] = report["result"]
    observation = fhir.get(result["reference"]).json()
    assert observation["valueQuantity"]["value"] == 0.15
    assert observation["meta"]["versionId"] == "2"
    # a correction of a report with results: a version of the report and of its results
    [ack] = asyncio.run(send(server, dose_report("N3", "0.2", "C", "Clear, corrected.")))
    assert msa(ack)[1] == "AA", ack[-700:]
    corrected = one(fhir, "DiagnosticReport", identifier=f"F{unique}")
    assert (corrected["id"], corrected["status"]) == (report["id"], "corrected")
    assert corrected["meta"]["versionId"] == "2"
    assert corrected["result"] == report["result"]
    observation = fhir.get(result["reference"]).json()
    assert (observation["valueQuantity"]["value"], observation["status"]) == (0.2, "corrected")
    document = one(fhir, "DocumentReference", subject=report["subject"]["reference"])
    assert document["docStatus"] == "amended"
    assert document["meta"]["versionId"] == "2"  # the first report's, never a second one
    related = [r.get("reference") for r in document["context"]["related"]]
    assert f"DiagnosticReport/{report['id']}" in related


def test_study_moving_to_its_order_leaves_no_header_patient_behind(
    server: RunningServer, fhir: httpx.Client, unique: str, tmp_path: Path
) -> None:
    """The study comes first, without issuer (a Patient `dicom/patient-id|...` from its
    header); the order with its accession number arrives later: the study moves to the
    order's patient and the header's Patient, now naming nobody, is deleted."""
    header_id = f"H{unique[:10]}"
    path = tmp_path / "early.dcm"
    path.write_bytes(
        renamed("MR_small.dcm", patient_id=header_id, AccessionNumber=f"ACC{unique[:12]}")
    )
    assert successes(storescu(server.dicom_port, [path])) == 1
    uid = str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)
    early = eventually(fhir, f"/ImagingStudy/{uid}", lambda _: True)
    made = fhir.get(f"/{early['subject']['reference']}").json()
    assert made["identifier"] == [{"system": UNASSIGNED, "value": header_id}]
    order = his_order(unique, mrn=f"M{unique[:10]}^^^HOSP").replace(
        f"ACC{unique}", f"ACC{unique[:12]}"
    )
    [ack] = asyncio.run(send(server, order))
    assert msa(ack)[1] == "AA"
    request = one(fhir, "ServiceRequest", identifier=f"PL{unique}")
    moved = eventually(fhir, f"/ImagingStudy/{uid}", lambda body: "basedOn" in body)
    assert moved["subject"] == request["subject"]
    assert moved["basedOn"] == [{"reference": f"ServiceRequest/{request['id']}"}]
    gone = eventually_status(fhir, f"/{early['subject']['reference']}", 410)
    assert gone == 410
    assert fhir.get("/Patient", params={"identifier": header_id}).json().get("entry", []) == []


def eventually_status(fhir: httpx.Client, path: str, wanted: int) -> int:
    """The status of GET `path` once it is `wanted` (the upkeep runs in the background)."""
    deadline = time.monotonic() + 30
    while (status := fhir.get(path).status_code) != wanted and time.monotonic() < deadline:
        time.sleep(0.2)
    return status


def test_rp_pointer_is_an_attachment_only_when_resolvable(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    url = f"https://pacs.example.org/reports/{unique}.pdf"
    message = (
        msh("RIS", "HOSP", "ORU^R01^ORU_R01", f"RP-{unique}")
        + segment("PID", {1: "1", 3: f"M{unique[:10]}^^^HOSP", 5: "Doe^Jane"})
        + segment("OBR", {1: "1", 3: f"F{unique}", 4: "71020^Chest X-ray^C4", 24: "RAD",
                          25: "F"})
        + segment("OBX", {1: "1", 2: "RP", 3: "18748-4^Diagnostic Imaging Report^LN",
                          5: f"{url}^PACS^AP^PDF", 11: "F"})
        + segment("OBX", {1: "2", 2: "RP", 3: "18748-4^Diagnostic Imaging Report^LN",
                          5: "file:///etc/passwd^PACS^AP^PDF", 11: "F"})
    )  # fmt: skip
    [ack] = asyncio.run(send(server, message))
    assert msa(ack)[1] == "AA"
    report = one(fhir, "DiagnosticReport", identifier=f"F{unique}")
    assert report["presentedForm"] == [
        {"contentType": "application/pdf", "url": url, "title": "Diagnostic Imaging Report"}
    ]  # the file: pointer is skipped, never fetched
    document = one(fhir, "DocumentReference", subject=report["subject"]["reference"])
    assert document["content"] == [{"attachment": report["presentedForm"][0]}]
    assert document["docStatus"] == "final"
