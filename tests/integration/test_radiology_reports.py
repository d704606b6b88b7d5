"""Radiology reports over MLLP: the HIS orders, the RIS reports, documents and UIDs kept.

Real sockets (python-hl7's `mllp_send` and the bridge's MLLP client), the real store,
FHIR read back field by field (issue 11, problems 2, 3 and the lab OBR-18 of 7).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_mllp import MLLP_SEND, err, msa, one, read, segment, send
from tests.support.servers import RunningServer, start_server

DATA = Path(__file__).parent.parent / "data" / "hl7"
DOMAIN = "https://medbridge.example.org/hl7v2/order-domain"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def msh(sender: str, facility: str, event: str, control: str) -> str:
    return segment(
        "MSH",
        {1: "^~\\&", 2: sender, 3: facility, 4: "MEDBRIDGE", 5: "MB", 6: "20261122101500",
         8: event, 9: control, 10: "P", 11: "2.5.1"},
    )  # fmt: skip


def pid(unique: str) -> str:
    return segment("PID", {1: "1", 3: f"P{unique}^^^LTPK", 5: "Kairys^Tomas"})


def oru(
    unique: str,
    control: str,
    status: str,
    lines: list[str],
    code: str = "71020^Chest X-ray^C4",
    sender: tuple[str, str] = ("RIS", "HOSP"),
) -> str:
    text = "".join(
        segment("OBX", {1: str(n), 2: "TX", 3: "71020&GDT^Report^C4", 5: line, 11: status})
        for n, line in enumerate(lines, start=1)
    )
    return (
        msh(*sender, "ORU^R01^ORU_R01", f"{control}-{unique}")
        + pid(unique)
        + segment("OBR", {1: "1", 2: f"PL{unique}", 3: f"F{unique}", 4: code,
                          7: "20261122110000", 18: f"ACC{unique}", 25: status})
        + text
    )  # fmt: skip


def reports(fhir: httpx.Client, unique: str) -> list[dict[str, Any]]:
    """The reports on order F<unique> (by value: any sender's, any domain)."""
    bundle = fhir.get("DiagnosticReport", params={"identifier": f"F{unique}"}).json()
    return [entry["resource"] for entry in bundle.get("entry", [])]


def text_of(report: dict[str, Any]) -> str:
    forms = [f for f in report["presentedForm"] if f["contentType"].startswith("text/plain")]
    return base64.b64decode(forms[0]["data"]).decode()


def test_report_from_ris_finds_order_from_his(
    server: RunningServer, fhir: httpx.Client, unique: str, tmp_path: Path
) -> None:
    """HIS^HOSP orders with a bare placer number; RIS^HOSP reports with the same number."""
    order = (
        msh("HIS", "HOSP", "ORM^O01", f"ORM-{unique}")
        + pid(unique)
        + segment("ORC", {1: "NW", 2: f"PL{unique}", 9: "20261122100000"})
        + segment("OBR", {1: "1", 2: f"PL{unique}", 4: "71020^Chest X-ray^C4"})
    )
    file = tmp_path / "orm.hl7"
    file.write_bytes(order.replace("\r", "\r\n").encode())
    completed = subprocess.run(
        [str(MLLP_SEND), "--loose", "--file", str(file), "--port", str(server.mllp_port),
         "127.0.0.1"],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert f"MSA|AA|ORM-{unique}" in completed.stdout.decode()
    request = one(fhir, "ServiceRequest", identifier=f"PL{unique}")
    # the RIS's own filler number is unknown to the order: the placer number links it
    [ack] = asyncio.run(send(server, oru(unique, "ORU", "F", ["Lungs are clear."])))
    assert msa(ack)[1] == "AA"
    [report] = reports(fhir, unique)
    assert report["basedOn"] == [
        {
            "reference": f"ServiceRequest/{request['id']}",
            "type": "ServiceRequest",
            "identifier": {
                "system": f"{DOMAIN}/facility-HOSP",
                "value": f"F{unique}",
                "type": {"coding": [{"system": V2_0203, "code": "FILL"}]},
            },
        }
    ]
    assert report["subject"] == request["subject"]
    # the order's numbers are kept in the facility's order-number domain
    placer = next(i for i in request["identifier"] if i["type"]["coding"][0]["code"] == "PLAC")
    assert placer == {
        "system": f"{DOMAIN}/facility-HOSP",
        "value": f"PL{unique}",
        "type": {"coding": [{"system": V2_0203, "code": "PLAC"}]},
    }
    # another facility's RIS is another order-number domain: no link, a logical reference
    other = oru(unique, "ORU2", "F", ["Other site."], sender=("RIS", "CLINIC"))
    assert msa(asyncio.run(send(server, other))[0])[1] == "AA"
    elsewhere = one(fhir, "DiagnosticReport", identifier=f"{DOMAIN}/facility-CLINIC|F{unique}")
    assert "reference" not in elsewhere["basedOn"][0]


def test_dcm4che_report_with_pdf(server: RunningServer, fhir: httpx.Client) -> None:
    """dcm4che's ORU^R01-PDF: the PDF as Binary, presentedForm and DocumentReference."""
    raw = (DATA / "oru-r01_v2.5.1_dcm4che-pdf.hl7").read_bytes()
    [ack] = asyncio.run(send(server, raw))
    assert msa(ack)[1:3] == ["AA", "1001128"]
    encoded = raw.split(b"^Application^PDF^Base64^")[1].split(b"|")[0]
    pdf = base64.b64decode(encoded, validate=True)
    assert pdf.startswith(b"%PDF-1.3")
    assert pdf.rstrip().endswith(b"%%EOF")
    report = one(fhir, "DiagnosticReport", identifier="FillerOrderNumberImagingServiceRequest")
    [form] = report["presentedForm"]  # no text/plain: the ST OBX are UIDs, not report text
    assert form["contentType"] == "application/pdf"
    assert form["size"] == len(pdf)
    assert (
        form["hash"] == base64.b64encode(hashlib.sha1(pdf, usedforsecurity=False).digest()).decode()
    )
    assert form["title"] == "Diagnostic Imaging Report"
    binary = read(fhir, form["url"])
    assert binary["resourceType"] == "Binary"
    assert binary["contentType"] == "application/pdf"
    assert base64.b64decode(binary["data"]) == pdf
    # the study is not stored: a logical reference by its Study Instance UID (OBX 113014)
    [study] = report["imagingStudy"]
    assert study == {
        "type": "ImagingStudy",
        "identifier": {
            "system": "urn:dicom:uid",
            "value": "urn:oid:1.2.392.200036.9125.0.198811291108.7",
        },
    }
    uids = {i["value"] for i in report["identifier"] if i.get("system") == "urn:dicom:uid"}
    assert uids == {
        "urn:oid:1.2.392.200036.9125.0.198811291108.7.1",  # series
        "urn:oid:1.2.392.200036.9125.0.198811291108.7.1.1",  # SR instance
    }
    document = one(fhir, "DocumentReference", subject=report["subject"]["reference"])
    assert document["status"] == "current"
    assert document["docStatus"] == "final"
    assert document["subject"] == report["subject"]
    assert document["type"]["coding"][0] == {
        "system": "http://loinc.org", "code": "18748-4", "display": "Diagnostic Imaging Report",
    }  # fmt: skip
    [content] = document["content"]
    assert content["attachment"]["url"] == form["url"]
    assert content["attachment"]["contentType"] == "application/pdf"
    related = [r.get("reference") for r in document["context"]["related"]]
    assert f"DiagnosticReport/{report['id']}" in related
    assert any(r.get("identifier", {}).get("value") == "FillerOrderNumberImagingServiceRequest"
               for r in document["context"]["related"])  # fmt: skip


def test_corrected_report_is_a_version_another_report_is_new(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    first = oru(unique, "R1", "F", ["Small effusion left."])
    corrected = oru(unique, "R2", "C", ["Small effusion right."])
    acks = asyncio.run(send(server, first, corrected))
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    [report] = reports(fhir, unique)
    assert report["meta"]["versionId"] == "2"
    assert report["status"] == "corrected"
    assert text_of(report) == "Small effusion right."
    version_1 = read(fhir, f"DiagnosticReport/{report['id']}/_history/1")
    assert version_1["status"] == "final"
    assert text_of(version_1) == "Small effusion left."
    # a second, different final report on the same order is a report of its own
    addendum = oru(unique, "R3", "F", ["Addendum: compare with prior CT."])
    resend = oru(unique, "R4", "F", ["Addendum: compare with prior CT."])  # new MSH-10 only
    acks = asyncio.run(send(server, addendum, resend))
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    stored = {r["id"]: r for r in reports(fhir, unique)}
    assert len(stored) == 2
    assert text_of(stored[report["id"]]) == "Small effusion right."
    assert stored[report["id"]]["meta"]["versionId"] == "2"
    [other] = [r for key, r in stored.items() if key != report["id"]]
    assert text_of(other) == "Addendum: compare with prior CT."
    assert other["meta"]["versionId"] == "1"
    assert other["status"] == "final"
    assert other["basedOn"][0]["identifier"] == report["basedOn"][0]["identifier"]
    assert other["subject"] == report["subject"]


def test_uids_are_links_impression_is_conclusion(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    uid = f"1.2.826.0.1.{int(unique[:8], 16)}"
    message = (
        msh("RIS", "HOSP", "ORU^R01^ORU_R01", f"UID-{unique}")
        + pid(unique)
        + segment("OBR", {1: "1", 2: f"PL{unique}", 3: f"F{unique}", 4: "71020^Chest X-ray^C4",
                          18: f"ACC{unique}", 24: "RAD", 25: "F"})
        + segment("OBX", {1: "1", 2: "ST", 3: "113014^DICOM Study^DCM", 5: uid, 11: "F"})
        + segment("OBX", {1: "2", 2: "ST", 3: "^SR Instance UID", 5: f"{uid}.1.1", 11: "F"})
        + segment("OBX", {1: "3", 2: "TX", 3: "71020^Findings^C4", 5: "Heart normal.",
                          11: "F"})
        + segment("OBX", {1: "4", 2: "TX", 3: "71020^Impression^C4", 4: "IMP",
                          5: "No acute disease.", 11: "F"})
    )  # fmt: skip
    assert msa(asyncio.run(send(server, message))[0])[1] == "AA"
    [report] = reports(fhir, unique)
    assert text_of(report) == "Heart normal.\nNo acute disease."
    assert report["conclusion"] == "No acute disease."
    assert report["imagingStudy"][0]["identifier"] == {
        "system": "urn:dicom:uid", "value": f"urn:oid:{uid}",
    }  # fmt: skip
    assert {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}.1.1"} in report["identifier"]
    # the study arrives later: the report's UID reference becomes a real one
    study = fhir.post(
        "ImagingStudy",
        json={
            "resourceType": "ImagingStudy",
            "status": "available",
            "subject": report["subject"],
            "identifier": [
                {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"},
                {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
                 "value": f"ACC{unique}"},
            ],
        },
    )  # fmt: skip
    assert study.status_code == 201, study.text
    deadline = time.monotonic() + 30
    while "reference" not in report["imagingStudy"][0] and time.monotonic() < deadline:
        [report] = reports(fhir, unique)
    assert report["imagingStudy"] == [
        {
            "reference": f"ImagingStudy/{study.json()['id']}",
            "type": "ImagingStudy",
            "identifier": {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"},
        }
    ]


def test_lab_report_accession_field_makes_no_imaging_study(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    message = (
        msh("LIS", "HOSP", "ORU^R01^ORU_R01", f"LAB-{unique}")
        + pid(unique)
        + segment("OBR", {1: "1", 2: f"PL{unique}", 3: f"F{unique}", 4: "24323-8^CMP^LN",
                          18: f"LAB{unique}", 25: "F"})
        + segment("OBX", {1: "1", 2: "NM", 3: "2345-7^Glucose^LN", 5: "5.4",
                          6: "mmol/L^mmol/L^UCUM", 11: "F"})
    )  # fmt: skip
    assert msa(asyncio.run(send(server, message))[0])[1] == "AA"
    [report] = reports(fhir, unique)
    assert "imagingStudy" not in report
    assert all(i.get("value") != f"LAB{unique}" for i in report["identifier"])
    [result] = report["result"]
    assert read(fhir, result["reference"])["valueQuantity"]["value"] == 5.4


def test_orders_and_reports_stored_before_domains_are_still_found(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    """Numbers stored sender-scoped (before order domains) keep matching their sender."""
    his = "https://medbridge.example.org/hl7v2/sender/HIS-HOSP/id"
    ris = "https://medbridge.example.org/hl7v2/sender/RIS-HOSP/id"
    placer = {"system": his, "value": f"PL{unique}",
              "type": {"coding": [{"system": V2_0203, "code": "PLAC"}]}}  # fmt: skip
    legacy_order = fhir.post(
        "ServiceRequest",
        json={"resourceType": "ServiceRequest", "status": "active", "intent": "order",
              "subject": {"display": "before"}, "identifier": [placer]},
    )  # fmt: skip
    assert legacy_order.status_code == 201, legacy_order.text
    update = (
        msh("HIS", "HOSP", "ORM^O01", f"XO-{unique}")
        + pid(unique)
        + segment("ORC", {1: "XO", 2: f"PL{unique}"})
        + segment("OBR", {1: "1", 2: f"PL{unique}", 4: "71020^Chest X-ray^C4"})
    )
    assert msa(asyncio.run(send(server, update))[0])[1] == "AA"
    request = one(fhir, "ServiceRequest", identifier=f"PL{unique}")
    assert request["id"] == legacy_order.json()["id"]
    assert {(i["system"], i["value"]) for i in request["identifier"]} == {
        (his, f"PL{unique}"),
        (f"{DOMAIN}/facility-HOSP", f"PL{unique}"),
    }
    filler = {"system": ris, "value": f"F{unique}",
              "type": {"coding": [{"system": V2_0203, "code": "FILL"}]}}  # fmt: skip
    text = base64.b64encode(b"Before.").decode()
    legacy_report = fhir.post(
        "DiagnosticReport",
        json={"resourceType": "DiagnosticReport", "status": "final", "identifier": [filler],
              "code": {"coding": [{"system": "http://www.ama-assn.org/go/cpt",
                                   "code": "71020"}]},
              "presentedForm": [{"contentType": "text/plain; charset=utf-8", "data": text}]},
    )  # fmt: skip
    assert legacy_report.status_code == 201, legacy_report.text
    corrected = oru(unique, "C1", "C", ["After."])
    assert msa(asyncio.run(send(server, corrected))[0])[1] == "AA"
    [report] = reports(fhir, unique)
    assert report["id"] == legacy_report.json()["id"]
    assert report["meta"]["versionId"] == "2"
    assert text_of(report) == "After."
    assert report["basedOn"][0]["reference"] == f"ServiceRequest/{request['id']}"


@pytest.fixture(scope="module")
def domain_server(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo
) -> Iterator[RunningServer]:
    """A server whose HIS (facility EAST) and RIS (facility WEST) share one domain."""
    env = {"MEDBRIDGE_HL7_ORDER_DOMAINS": "radiology=HIS^EAST,RIS^WEST"}
    running = start_server(tmp_path_factory.mktemp("domains"), store.uri, env=env)
    yield running
    running.stop()


def test_configured_domain_links_senders_of_two_facilities(
    domain_server: RunningServer, unique: str
) -> None:
    order = (
        msh("HIS", "EAST", "ORM^O01", f"ORM-{unique}")
        + pid(unique)
        + segment("ORC", {1: "NW", 2: f"PL{unique}"})
        + segment("OBR", {1: "1", 2: f"PL{unique}", 4: "71020^Chest X-ray^C4"})
    )
    report = oru(unique, "ORU", "F", ["Clear."], sender=("RIS", "WEST"))
    acks = asyncio.run(send(domain_server, order, report))
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    with httpx.Client(base_url=domain_server.fhir_base, timeout=30.0) as fhir:
        request = one(fhir, "ServiceRequest", identifier=f"{DOMAIN}/radiology|PL{unique}")
        [stored] = reports(fhir, unique)
    assert stored["basedOn"][0]["reference"] == f"ServiceRequest/{request['id']}"
    assert stored["identifier"][0]["system"] == f"{DOMAIN}/radiology"


def test_bad_base64_document_is_ae_102(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    message = (
        msh("RIS", "HOSP", "ORU^R01^ORU_R01", f"B64-{unique}")
        + pid(unique)
        + segment("OBR", {1: "1", 3: f"F{unique}", 4: "71020^Chest X-ray^C4", 25: "F"})
        + segment("OBX", {1: "1", 2: "ED", 3: "PDF^Report^L", 5: "^AP^PDF^Base64^%%%", 11: "F"})
    )  # fmt: skip
    [ack] = asyncio.run(send(server, message))
    assert msa(ack)[1] == "AE"
    assert err(ack)[2] == "OBX^4^5"
    assert err(ack)[3].startswith("102^")
    assert reports(fhir, unique) == []


def test_preliminary_then_final_is_one_report_other_code_is_another(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    preliminary = oru(unique, "P1", "P", ["Probable effusion."])
    final = oru(unique, "F1", "F", ["Small effusion."])
    acks = asyncio.run(send(server, preliminary, final))
    assert [msa(a)[1] for a in acks] == ["AA", "AA"]
    [report] = reports(fhir, unique)
    assert (report["status"], report["meta"]["versionId"]) == ("final", "2")
    assert text_of(report) == "Small effusion."
    # one message, two OBRs on the same order: a chest and an abdomen report
    both = oru(unique, "M1", "F", ["Chest normal."]).replace(
        "71020^Chest X-ray^C4", "71045^Chest X-ray 1 view^C4"
    ) + segment("OBR", {1: "2", 2: f"PL{unique}", 3: f"F{unique}", 4: "74018^Abdomen^C4",
                        25: "F"}) + segment(
        "OBX", {1: "1", 2: "TX", 3: "74018^Report^C4", 5: "Abdomen normal.", 11: "F"}
    )  # fmt: skip
    assert msa(asyncio.run(send(server, both))[0])[1] == "AA"
    stored = reports(fhir, unique)
    assert sorted(text_of(r) for r in stored) == [
        "Abdomen normal.",
        "Chest normal.",
        "Small effusion.",
    ]
    codes = sorted(r["code"]["coding"][0]["code"] for r in stored)
    assert codes == ["71020", "71045", "74018"]
