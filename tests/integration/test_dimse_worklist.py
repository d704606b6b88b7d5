"""Modality Worklist C-FIND (findscu -W) answered from scheduled FHIR ServiceRequests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pydicom

from tests.support.dcmtk import findscu
from tests.support.servers import RunningServer

V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DCM = "http://dicom.nema.org/resources/ontology/DCM"
STEP = "ScheduledProcedureStepSequence[0]"


def schedule(fhir: httpx.Client, unique: str, status: str = "active", modality: str = "CT") -> str:
    """A patient and an order as the HL7 bridge would write them; the accession number."""
    patient = {
        "resourceType": "Patient",
        "identifier": [
            {"type": {"coding": [{"system": V2_0203, "code": "MR"}]},
             "system": "urn:oid:1.2.3.4", "value": f"MRN{unique[:10]}"}
        ],
        "name": [{"family": "Worklist", "given": ["Lisa", "Ann"]}],
        "birthDate": "1970-01-02",
        "gender": "female",
    }  # fmt: skip
    created = fhir.post("Patient", json=patient)
    assert created.status_code == 201, created.text
    accession = f"A{unique[:12]}"
    schedule_for(fhir, created.json()["id"], accession, status, modality, f"RP{unique[:8]}")
    return accession


def schedule_for(
    fhir: httpx.Client,
    patient: str,
    accession: str,
    status: str = "active",
    modality: str = "CT",
    procedure: str = "RP1",
) -> None:
    """An order of an existing FHIR Patient, as the HL7 bridge would write it."""
    order = {
        "resourceType": "ServiceRequest",
        "status": status,
        "intent": "order",
        "subject": {"reference": f"Patient/{patient}"},
        "identifier": [
            {"type": {"coding": [{"system": V2_0203, "code": "ACSN"}]},
             "system": "urn:oid:1.2.3.5", "value": accession},
            {"type": {"coding": [{"system": V2_0203, "code": "FILL"}]},
             "system": "urn:oid:1.2.3.6", "value": procedure},
        ],
        "category": [{"coding": [{"system": DCM, "code": modality}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "24627-2",
                             "display": "CT Chest"}], "text": "CT chest without contrast"},
        "occurrenceDateTime": "2026-11-23T09:30:00+01:00",
        "performer": [{"identifier": {"system": "urn:dicom:ae", "value": "CT01"}}],
        "requester": {"display": "Referrer^Rita"},
    }  # fmt: skip
    answer = fhir.post("ServiceRequest", json=order)
    assert answer.status_code == 201, answer.text


def worklist(server: RunningServer, out: Path, *keys: str) -> tuple[str, list[pydicom.Dataset]]:
    wanted = [
        "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
        "RequestedProcedureDescription", "RequestedProcedureID", "ReferringPhysicianName",
        f"{STEP}.ScheduledStationAETitle", f"{STEP}.ScheduledProcedureStepStartTime",
        f"{STEP}.ScheduledProcedureStepDescription", *keys,
    ]  # fmt: skip
    return findscu(server.dicom_port, "-W", wanted, out, "MODALITY")


def test_scheduled_order_is_on_the_worklist(
    server: RunningServer, fhir: httpx.Client, unique: str, tmp_path: Path
) -> None:
    accession = schedule(fhir, unique)
    output, found = worklist(
        server, tmp_path, f"AccessionNumber={accession}", f"{STEP}.Modality=CT",
        f"{STEP}.ScheduledProcedureStepStartDate=20261101-20261130",
    )  # fmt: skip
    assert "Received Final Find Response (Success)" in output, output[-2000:]
    assert len(found) == 1
    item: Any = found[0]
    assert item.AccessionNumber == accession
    assert str(item.PatientName) == "Worklist^Lisa^Ann"  # given[1:] is the middle name
    assert item.PatientID == f"MRN{unique[:10]}"
    assert (item.PatientBirthDate, item.PatientSex) == ("19700102", "F")
    assert item.RequestedProcedureDescription == "CT chest without contrast"
    assert item.RequestedProcedureID == f"RP{unique[:8]}"
    assert str(item.ReferringPhysicianName) == "Referrer^Rita"
    step = item.ScheduledProcedureStepSequence[0]
    assert step.Modality == "CT"
    assert step.ScheduledStationAETitle == "CT01"
    assert step.ScheduledProcedureStepStartDate == "20261123"
    assert step.ScheduledProcedureStepStartTime == "093000"


def test_worklist_keys_filter_orders(
    server: RunningServer, fhir: httpx.Client, unique: str, tmp_path: Path
) -> None:
    accession = schedule(fhir, unique, modality="MR")
    done = schedule(fhir, unique[::-1], status="completed")
    _, other_modality = worklist(
        server, tmp_path, f"AccessionNumber={accession}", f"{STEP}.Modality=CT"
    )
    assert other_modality == []
    _, other_day = worklist(
        server, tmp_path, f"AccessionNumber={accession}",
        f"{STEP}.ScheduledProcedureStepStartDate=20261124",
    )  # fmt: skip
    assert other_day == []
    _, completed = worklist(server, tmp_path, f"AccessionNumber={done}")
    assert completed == []
    _, by_name = worklist(
        server, tmp_path, f"AccessionNumber={accession}", "PatientName=WORKLIST^L*"
    )
    assert [d.AccessionNumber for d in by_name] == [accession]
