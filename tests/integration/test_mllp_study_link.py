"""Report and images linked by accession number, whichever arrives first."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx

from tests.integration.test_mllp import msa, msh, one, segment, send
from tests.support.servers import RunningServer

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


def report(unique: str, accession: str) -> str:
    return (
        msh("ORU^R01^ORU_R01", f"ORU-{unique}")
        + segment("PID", {1: "1", 3: f"P{unique}^^^LTPK", 5: "Šimkus^Jonas"})
        + segment("OBR", {1: "1", 2: f"PL-{unique}^RIS", 3: f"F-{unique}^PACS",
                          4: "71020^Chest X-ray^C4", 18: accession, 25: "F"})
        + segment("OBX", {1: "1", 2: "TX", 3: "71020&IMP^Impression^C4", 5: "Clear.",
                          11: "F"})
    )  # fmt: skip


def study(fhir: httpx.Client, patient: str, accession: str, uid: str) -> str:
    body = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": patient},
        "identifier": [
            {"system": "urn:dicom:uid", "value": f"urn:oid:{uid}"},
            {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]}, "value": accession},
        ],
    }
    response = fhir.post("ImagingStudy", json=body)
    assert response.status_code == 201, response.text
    return f"ImagingStudy/{response.json()['id']}"


def wait_for_reference(fhir: httpx.Client, unique: str) -> dict[str, Any]:
    """Poll (bounded) until the report's imagingStudy is a resolved reference."""
    deadline = time.monotonic() + 30
    while True:
        diagnostic = one(fhir, "DiagnosticReport", identifier=f"F-{unique}")
        if "reference" in diagnostic["imagingStudy"][0] or time.monotonic() > deadline:
            return diagnostic


def test_report_first_then_study(server: RunningServer, fhir: httpx.Client, unique: str) -> None:
    accession = f"ACC-{unique}"
    [ack] = asyncio.run(send(server, report(unique, accession)))
    assert msa(ack)[1] == "AA"
    waiting = one(fhir, "DiagnosticReport", identifier=f"F-{unique}")
    assert "reference" not in waiting["imagingStudy"][0]
    assert one(fhir, "DiagnosticReport", identifier=accession)["id"] == waiting["id"]
    uid = f"1.2.826.0.1.{int(unique[:8], 16)}"
    reference = study(fhir, waiting["subject"]["reference"], accession, uid)
    linked = wait_for_reference(fhir, unique)
    assert linked["imagingStudy"][0]["reference"] == reference
    assert linked["imagingStudy"][0]["identifier"]["value"] == accession


def test_study_first_then_report(server: RunningServer, fhir: httpx.Client, unique: str) -> None:
    accession = f"ACC-{unique}"
    patient = fhir.post(
        "Patient", json={"resourceType": "Patient", "name": [{"family": "Šimkus"}]}
    ).json()
    uid = f"1.2.826.0.2.{int(unique[:8], 16)}"
    reference = study(fhir, f"Patient/{patient['id']}", accession, uid)
    [ack] = asyncio.run(send(server, report(unique, accession)))
    assert msa(ack)[1] == "AA"
    diagnostic = one(fhir, "DiagnosticReport", identifier=f"F-{unique}")
    assert diagnostic["imagingStudy"][0]["reference"] == reference
