"""Every stored study has an ImagingStudy in step: patient, endpoint, orders by accession."""

from __future__ import annotations

import concurrent.futures
import io
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pydicom.uid import generate_uid

from hl7_bridge.client import MllpClient
from tests.support.dicom import dose_report, renamed
from tests.support.servers import RunningServer

FHIR_JSON = {"Content-Type": "application/fhir+json"}
BOUNDARY = "link-boundary"
LTPK = "https://www.esveikata.lt/fhir/sid/asmens-kodas"


def stow(server: RunningServer, parts: list[bytes]) -> httpx.Response:
    body = (
        b"".join(
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
            for p in parts
        )
        + f"--{BOUNDARY}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    return httpx.post(
        f"{server.base_url}/dicomweb/studies", content=body,
        headers={"Content-Type": content_type}, timeout=60.0,
    )  # fmt: skip


def order(accession: str, patient: str) -> dict[str, Any]:
    return {
        "resourceType": "ServiceRequest",
        "status": "active",
        "intent": "order",
        "identifier": [
            {
                "type": {
                    "coding": [
                        {"system": "http://terminology.hl7.org/CodeSystem/v2-0203", "code": "ACSN"}
                    ]
                },
                "system": "urn:oid:1.2.3.4.5",
                "value": accession,
            }
        ],
        "subject": {"reference": f"Patient/{patient}"},
    }


def eventually(fhir: httpx.Client, path: str, check: Callable[[dict[str, Any]], bool]) -> Any:
    """GET `path` until `check` holds: ImagingStudy upkeep runs just after the STOW answer."""
    deadline = time.monotonic() + 30
    while True:
        response = fhir.get(path)
        body = response.json()
        if response.status_code == 200 and check(body):
            return body
        assert time.monotonic() < deadline, f"{path}: {body}"


def study_of(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)


def test_study_gets_an_imaging_study_on_the_known_patient(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    patient = fhir.post(
        "/Patient",
        json={"resourceType": "Patient", "identifier": [{"system": LTPK, "value": unique}]},
        headers=FHIR_JSON,
    ).json()
    study = generate_uid()
    parts = [
        renamed("CT_small.dcm", study=study, patient_id=unique, IssuerOfPatientID="LTPK"),
        renamed("CT_small.dcm", study=study, patient_id=unique, IssuerOfPatientID="LTPK"),
    ]
    assert stow(server, parts).status_code == 200
    found = eventually(
        fhir, f"/ImagingStudy?identifier=urn:dicom:uid|urn:oid:{study}",
        lambda bundle: bool(bundle.get("entry")),
    )  # fmt: skip
    entries = found["entry"]
    assert len(entries) == 1
    imaging = entries[0]["resource"]
    assert imaging["subject"]["reference"] == f"Patient/{patient['id']}"
    assert imaging["numberOfSeries"] == 2
    assert imaging["numberOfInstances"] == 2
    assert imaging["status"] == "available"
    endpoint = fhir.get(f"/{imaging['endpoint'][0]['reference']}").json()
    assert endpoint["connectionType"]["code"] == "dicom-wado-rs"
    assert endpoint["address"] == f"{server.base_url}/dicomweb"


def test_unknown_patient_is_created_from_the_header(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    data = renamed("MR_small.dcm", patient_id=unique, PatientName="Header^Created")
    assert stow(server, [data]).status_code == 200
    study = study_of(data).StudyInstanceUID
    imaging = eventually(fhir, f"/ImagingStudy/{study}", lambda _: True)
    patient = fhir.get(f"/{imaging['subject']['reference']}").json()
    assert patient["identifier"][0]["value"] == unique
    assert patient["name"][0]["family"] == "Header"


def test_order_first_then_study(server: RunningServer, fhir: httpx.Client, unique: str) -> None:
    accession = f"A{unique[:12]}"
    created = fhir.post("/ServiceRequest", json=order(accession, "p1"), headers=FHIR_JSON).json()
    data = renamed("CT_small.dcm", patient_id=unique, AccessionNumber=accession)
    assert stow(server, [data]).status_code == 200
    imaging = eventually(fhir, f"/ImagingStudy/{study_of(data).StudyInstanceUID}", lambda _: True)
    assert imaging["basedOn"] == [{"reference": f"ServiceRequest/{created['id']}"}]
    eventually(fhir, f"/ServiceRequest/{created['id']}", lambda sr: sr["status"] == "completed")


def test_study_first_then_order(server: RunningServer, fhir: httpx.Client, unique: str) -> None:
    accession = f"B{unique[:12]}"
    data = renamed("CT_small.dcm", patient_id=unique, AccessionNumber=accession)
    assert stow(server, [data]).status_code == 200
    study = study_of(data).StudyInstanceUID
    assert "basedOn" not in eventually(fhir, f"/ImagingStudy/{study}", lambda _: True)
    created = fhir.post("/ServiceRequest", json=order(accession, "p1"), headers=FHIR_JSON).json()
    eventually(fhir, f"/ImagingStudy/{study}", lambda body: "basedOn" in body)
    imaging = fhir.get(f"/ImagingStudy/{study}").json()
    assert imaging["basedOn"] == [{"reference": f"ServiceRequest/{created['id']}"}]
    eventually(fhir, f"/ServiceRequest/{created['id']}", lambda sr: sr["status"] == "completed")


def test_concurrent_stow_of_one_study(server: RunningServer, fhir: httpx.Client) -> None:
    study, series = generate_uid(), generate_uid()
    batches = [
        [renamed("CT_small.dcm", study=study, series=series, patient_id="CONC") for _ in range(3)]
        for _ in range(6)
    ]
    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        statuses = list(pool.map(lambda parts: stow(server, parts).status_code, batches))
    assert statuses == [200] * 6
    qido = httpx.get(f"{server.base_url}/dicomweb/studies", params={"StudyInstanceUID": study})
    attributes = qido.json()[0]
    assert attributes["00201206"]["Value"] == [1]  # NumberOfStudyRelatedSeries
    assert attributes["00201208"]["Value"] == [18]  # NumberOfStudyRelatedInstances
    imaging = eventually(
        fhir, f"/ImagingStudy/{study}", lambda body: body.get("numberOfInstances") == 18
    )
    assert len(imaging["series"][0]["instance"]) == 18


def test_dose_report_records_dlp_and_ctdivol(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    study = generate_uid()
    ct = renamed("CT_small.dcm", study=study, patient_id=unique)
    assert stow(server, [ct, dose_report(study, unique, 812.0, [12.5, 18.75])]).status_code == 200
    imaging = eventually(
        fhir, f"/ImagingStudy/{study}", lambda body: body.get("numberOfSeries") == 2
    )
    observations = eventually(
        fhir, f"/Observation?subject={imaging['subject']['reference']}",
        lambda bundle: bool(bundle.get("entry")),
    )  # fmt: skip
    observation = observations["entry"][0]["resource"]
    assert observation["valueQuantity"]["value"] == 812.0
    assert observation["component"][0]["valueQuantity"]["value"] == 18.75
    assert observation["partOf"] == [{"reference": f"ImagingStudy/{study}"}]


async def test_hl7_order_after_the_study_links_it(
    server: RunningServer, fhir: httpx.Client, unique: str
) -> None:
    """The RIS's ORM^O01 (IHE RAD-4 sample) arrives over MLLP after the modality's study."""
    accession = f"H{unique[:12]}"
    data = renamed("CT_small.dcm", patient_id=unique, AccessionNumber=accession)
    assert stow(server, [data]).status_code == 200
    study = study_of(data).StudyInstanceUID
    eventually(fhir, f"/ImagingStudy/{study}", lambda _: True)
    sample = (
        Path(__file__).parent.parent / "data" / "hl7" / "orm-o01_v2.3.1_v2tofhir-ihe-rad4-zds.hl7"
    )
    message = (
        sample.read_bytes()
        .replace(b"ACCISCVEP1", accession.encode())
        .replace(b"f8d3a7f8-9ff0-4312-93b1-c57976bf66fb", unique.encode())
        .replace(b"MRNISCVEP1", f"M{unique[:10]}".encode())
    )
    client = await MllpClient.connect("127.0.0.1", server.mllp_port)
    try:
        ack = (await client.send(message, 60)).decode("utf-8", "replace")
    finally:
        await client.close()
    assert "MSA|AA" in ack
    imaging = eventually(fhir, f"/ImagingStudy/{study}", lambda body: "basedOn" in body)
    order_reference = imaging["basedOn"][0]["reference"]
    eventually(fhir, f"/{order_reference}", lambda sr: sr["status"] == "completed")
