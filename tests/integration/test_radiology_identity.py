"""One patient across the radiology loop: HL7 order -> worklist -> modality -> ImagingStudy.

Driven as a site runs it: the RIS sends OMI^O23 over MLLP, a modality (dcmtk `findscu -W`)
reads the worklist and sends (`storescu`) an instance built from the worklist's own
answer, without IssuerOfPatientID as most modalities do. The server runs with a peers
table giving the modality's AE title the issuer HOSP and a default issuer CLINIC.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from access.errors import AccessError
from imaging.parse import Limits, parse
from medbridge.embedded_mongo import EmbeddedMongo
from profiles.validator import validate
from tests.integration.test_dicomweb_fhir_link import eventually, stow
from tests.integration.test_mllp import msa, send
from tests.support.dcmtk import findscu, storescu, successes
from tests.support.dicom import base_dataset, part10, renamed
from tests.support.servers import RunningServer, start_server

HOSP = "https://medbridge.example.org/hl7v2/authority/HOSP"
CLINIC = "https://medbridge.example.org/hl7v2/authority/CLINIC"
RECONCILIATION = "https://medbridge.example.org/fhir/CodeSystem/imaging-reconciliation"
ANONYMOUS = "https://medbridge.example.org/dicom/anonymous-study-patient"
STEP = "ScheduledProcedureStepSequence[0]"
CHARSETS = Path(pydicom.data.__file__).parent / "charset_files"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo) -> Iterator[RunningServer]:
    """A server with the modality's issuer in the peers table, a default issuer, and the
    HIS's bare MRNs under the authority HOSP."""
    data_dir = tmp_path_factory.mktemp("identity")
    peers = data_dir / "peers.yaml"
    peers.write_text("peers:\n  - {ae_title: MODALITY, issuer: HOSP}\n", encoding="utf-8")
    authorities = data_dir / "authorities.yaml"
    authorities.write_text("senders:\n  HIS-HOSP: HOSP\n", encoding="utf-8")
    env = {
        "MEDBRIDGE_DICOM_PEERS_FILE": str(peers),
        "MEDBRIDGE_DICOM_DEFAULT_ISSUER": "CLINIC",
        "MEDBRIDGE_HL7_AUTHORITIES": str(authorities),
    }
    running = start_server(data_dir, store.uri, env=env)
    yield running
    running.stop()


@pytest.fixture
def client(site: RunningServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.fhir_base, timeout=30.0) as http:
        yield http


def omi(unique: str, mrn: str, name: str = "Doe^John^Quincy^Jr.^Dr.") -> str:
    """OMI^O23 as an IHE RAD-4 order placer sends it; PID-3 with assigning authority HOSP."""
    segments = [
        f"MSH|^~\\&|RIS|HOSP|MEDBRIDGE|MB|20261206080000||OMI^O23^OMI_O23|I{unique[:12]}|P|2.5.1",
        f"PID|1||{mrn}^^^HOSP||{name}||19700101|M",
        f"ORC|NW|PL{unique[:8]}^RIS|||SC",
        "TQ1|1||||||20261206093000",
        f"OBR|1|PL{unique[:8]}^RIS||MRBRAIN^MR brain^L",
        f"IPC|AI{unique[:10]}^RIS|RP{unique[:8]}|1.2.826.0.1.3680043.2.1125.{int(unique[:8], 16)}"
        f"|SPS{unique[:8]}|MR^Magnetic resonance^DCM||||MRI01",
    ]
    return "\r".join(segments) + "\r"


def order_for(client: httpx.Client, unique: str) -> dict[str, Any]:
    bundle = client.get("/ServiceRequest", params={"identifier": f"AI{unique[:10]}"}).json()
    [entry] = bundle["entry"]
    resource: dict[str, Any] = entry["resource"]
    return resource


def worklist_item(site: RunningServer, unique: str, tmp_path: Path) -> Dataset:
    keys = [
        "PatientName", "PatientID", "IssuerOfPatientID", "StudyInstanceUID",
        "RequestedProcedureID", f"AccessionNumber=AI{unique[:10]}",
        f"{STEP}.ScheduledProcedureStepID", f"{STEP}.Modality=MR",
    ]  # fmt: skip
    _, answers = findscu(site.dicom_port, "-W", keys, tmp_path / "mwl", "MODALITY")
    assert len(answers) == 1
    return answers[0]


def modality_instance(item: Dataset, path: Path, **header: str) -> Path:
    """An MR instance whose patient and study attributes come from the worklist item."""
    data = renamed(
        "MR_small.dcm",
        study=str(item.StudyInstanceUID),
        patient_id=str(item.PatientID),
        PatientName=str(item.PatientName),
        AccessionNumber=str(item.AccessionNumber),
    )
    dataset = pydicom.dcmread(io.BytesIO(data))
    if "IssuerOfPatientID" in dataset:
        del dataset.IssuerOfPatientID
    for keyword, value in header.items():
        setattr(dataset, keyword, value)
    dataset.save_as(path, enforce_file_format=True)
    return path


def fresh(path: Path) -> bytes:
    """A pydicom character-set sample with new UIDs, so runs never collide."""
    dataset = pydicom.dcmread(path)
    dataset.StudyInstanceUID = generate_uid()
    dataset.SeriesInstanceUID = generate_uid()
    dataset.SOPInstanceUID = dataset.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    return out.getvalue()


def patients_with(client: httpx.Client, value: str) -> list[dict[str, Any]]:
    bundle = client.get("/Patient", params={"identifier": value}).json()
    return [entry["resource"] for entry in bundle.get("entry", [])]


def test_worklist_answer_then_modality_store_lands_on_one_patient(
    site: RunningServer, client: httpx.Client, unique: str, tmp_path: Path
) -> None:
    mrn = f"MRN{unique[:8]}"
    [ack] = asyncio.run(send(site, omi(unique, mrn)))
    assert msa(ack)[1] == "AA"

    item = worklist_item(site, unique, tmp_path)
    assert str(item.PatientID) == mrn
    assert item.IssuerOfPatientID == "HOSP"
    assert str(item.PatientName) == "Doe^John^Quincy^Dr.^Jr."
    assert item.RequestedProcedureID == f"RP{unique[:8]}"
    assert item.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID == f"SPS{unique[:8]}"

    order = order_for(client, unique)
    ids = {i.get("system"): i["value"] for i in order["identifier"]}
    assert ids["https://medbridge.example.org/dicom/requested-procedure-id"] == f"RP{unique[:8]}"
    assert ids["https://medbridge.example.org/dicom/scheduled-procedure-step-id"] == (
        f"SPS{unique[:8]}"
    )

    instance = modality_instance(item, tmp_path / "mr.dcm")
    assert successes(storescu(site.dicom_port, [instance], "MODALITY")) == 1
    study = str(item.StudyInstanceUID)
    imaging = eventually(client, f"/ImagingStudy/{study}", lambda body: "basedOn" in body)
    assert imaging["subject"] == order["subject"]
    assert imaging["basedOn"] == [{"reference": f"ServiceRequest/{order['id']}"}]
    assert "tag" not in imaging.get("meta", {})  # header and order agree
    [patient] = patients_with(client, mrn)
    assert f"Patient/{patient['id']}" == order["subject"]["reference"]
    assert patient["identifier"] == [{"system": HOSP, "value": mrn}]
    everything = client.get(f"/Patient/{patient['id']}/$everything").json()
    listed = {f"{e['resource']['resourceType']}/{e['resource']['id']}" for e in everything["entry"]}
    assert f"ImagingStudy/{study}" in listed
    assert f"ServiceRequest/{order['id']}" in listed


def test_issuer_of_the_calling_ae_and_the_default_issuer(
    site: RunningServer, client: httpx.Client, unique: str, tmp_path: Path
) -> None:
    """No order to follow: the calling AE's issuer (HOSP) finds the HL7 patient; STOW-RS
    gets the default issuer (CLINIC)."""
    mrn = f"MRN{unique[:8]}"
    [ack] = asyncio.run(send(site, omi(unique, mrn)))
    assert msa(ack)[1] == "AA"
    [known] = patients_with(client, mrn)
    path = tmp_path / "unordered.dcm"
    path.write_bytes(renamed("MR_small.dcm", patient_id=mrn, AccessionNumber=""))
    dataset = pydicom.dcmread(path)
    assert "IssuerOfPatientID" not in dataset
    assert successes(storescu(site.dicom_port, [path], "MODALITY")) == 1
    imaging = eventually(client, f"/ImagingStudy/{dataset.StudyInstanceUID}", lambda _: True)
    assert imaging["subject"]["reference"] == f"Patient/{known['id']}"
    assert len(patients_with(client, mrn)) == 1

    clinic_id = f"CL{unique[:8]}"
    data = renamed("CT_small.dcm", patient_id=clinic_id)
    assert stow(site, [data]).status_code == 200
    stowed = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID
    imaging = eventually(client, f"/ImagingStudy/{stowed}", lambda _: True)
    patient = client.get(f"/{imaging['subject']['reference']}").json()
    assert patient["identifier"] == [{"system": CLINIC, "value": clinic_id}]


def test_header_naming_another_patient_is_tagged_not_a_new_patient(
    site: RunningServer, client: httpx.Client, unique: str, tmp_path: Path
) -> None:
    mrn, other = f"MRN{unique[:8]}", f"OTH{unique[:8]}"
    [ack] = asyncio.run(send(site, omi(unique, mrn)))
    assert msa(ack)[1] == "AA"
    item = worklist_item(site, unique, tmp_path)
    instance = modality_instance(
        item, tmp_path / "other.dcm", PatientID=other, PatientName="Smith^Anna"
    )
    assert successes(storescu(site.dicom_port, [instance], "MODALITY")) == 1
    study = str(item.StudyInstanceUID)
    imaging = eventually(client, f"/ImagingStudy/{study}", lambda body: "basedOn" in body)
    order = order_for(client, unique)
    assert imaging["subject"] == order["subject"]
    tags = {(t["system"], t["code"]) for t in imaging["meta"]["tag"]}
    assert tags == {
        (RECONCILIATION, "patient-id-mismatch"),
        (RECONCILIATION, "patient-name-mismatch"),
    }
    assert patients_with(client, other) == []
    assert len(patients_with(client, mrn)) == 1
    for code in ("patient-id-mismatch", "patient-name-mismatch", ""):  # "": the whole system
        found = client.get("/ImagingStudy", params={"_tag": f"{RECONCILIATION}|{code}"}).json()
        assert study in {e["resource"]["id"] for e in found.get("entry", [])}


def test_japanese_and_empty_name_studies_get_valid_resources(
    site: RunningServer, client: httpx.Client, tmp_path: Path
) -> None:
    japanese = tmp_path / "chrH31.dcm"
    japanese.write_bytes(fresh(CHARSETS / "chrH31.dcm"))
    empty = base_dataset(PatientName="^^^^")
    del empty.PatientID
    nobody = tmp_path / "nobody.dcm"
    nobody.write_bytes(part10(empty))
    for path in (japanese, nobody):
        assert successes(storescu(site.dicom_port, [path], "MODALITY")) == 1

    header = pydicom.dcmread(japanese)
    imaging = eventually(client, f"/ImagingStudy/{header.StudyInstanceUID}", lambda _: True)
    assert validate(imaging) == []
    patient = client.get(f"/{imaging['subject']['reference']}").json()
    assert validate(patient) == []
    assert patient["identifier"] == [{"system": HOSP, "value": "H31EXAMPLE"}]
    assert patient["name"][0]["family"] == "Yamada"
    assert patient["name"][0]["given"] == ["Tarou"]

    study = str(pydicom.dcmread(nobody).StudyInstanceUID)
    imaging = eventually(client, f"/ImagingStudy/{study}", lambda _: True)
    assert validate(imaging) == []
    patient = client.get(f"/{imaging['subject']['reference']}").json()
    assert validate(patient) == []
    assert patient["identifier"] == [{"system": ANONYMOUS, "value": study}]
    assert "name" not in patient


def test_every_decodable_character_set_sample_gets_an_imaging_study(
    site: RunningServer, client: httpx.Client
) -> None:
    storable = []
    for path in sorted(CHARSETS.glob("chr*.dcm")):
        data = fresh(path)
        try:
            parse(data, Limits())
        except AccessError as refused:  # the ingest refuses it too: no study to link
            print(f"{path.name}: not a storable instance ({refused.code}), not sent")
            continue
        storable.append((path.name, data))
    assert len(storable) >= 10
    response = stow(site, [data for _, data in storable])
    assert response.status_code == 200, response.text
    for name, data in storable:
        header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
        imaging = eventually(client, f"/ImagingStudy/{header.StudyInstanceUID}", lambda _: True)
        assert validate(imaging) == [], name
        patient = client.get(f"/{imaging['subject']['reference']}").json()
        assert validate(patient) == [], name
        assert patient["identifier"] == [{"system": CLINIC, "value": str(header.PatientID)}]
        assert patient["name"][0]["text"], name


def test_bare_mrn_of_a_sender_with_a_default_authority_is_the_same_patient(
    site: RunningServer, client: httpx.Client, unique: str
) -> None:
    """The HIS sends PID-3 without CX-4, the RIS with `^^^HOSP`: one Patient."""
    mrn = f"MRN{unique[:8]}"
    adt = (
        f"MSH|^~\\&|HIS|HOSP|MEDBRIDGE|MB|20261206070000||ADT^A04^ADT_A01|A{unique[:12]}|P|2.5.1\r"
        f"EVN|A04|20261206070000\rPID|1||{mrn}||Doe^John||19700101|M\r"
    )
    [ack] = asyncio.run(send(site, adt))
    assert msa(ack)[1] == "AA"
    [registered] = patients_with(client, mrn)
    assert registered["identifier"] == [{"system": HOSP, "value": mrn}]
    [ack] = asyncio.run(send(site, omi(unique, mrn)))
    assert msa(ack)[1] == "AA"
    assert [p["id"] for p in patients_with(client, mrn)] == [registered["id"]]
    assert order_for(client, unique)["subject"]["reference"] == f"Patient/{registered['id']}"
