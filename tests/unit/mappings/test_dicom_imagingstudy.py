"""mappings.dicom: index rows -> ImagingStudy / Patient, validated by the server's profiles."""

from __future__ import annotations

from typing import Any

from mappings.dicom.imagingstudy import (
    StudyLinks,
    imaging_study,
    patient_from_header,
    patient_identifier,
)
from profiles.validator import validate

CT = "1.2.840.10008.5.1.4.1.1.2"
STUDY: dict[str, Any] = {
    "_id": "1.2.826.0.1.3680043.8.498.1",
    "PatientID": "P-17",
    "IssuerOfPatientID": "LTPK",
    "PatientName": "Šimkus^Jonas^Petras",
    "PatientBirthDate": "19800101",
    "PatientSex": "M",
    "StudyDate": "20261122",
    "StudyTime": "101500",
    "StudyDescription": "CT chest",
    "AccessionNumber": "ACC-1",
    "ReferringPhysicianName": "House^Gregory",
    "ProcedureCode": {"value": "RPID17", "scheme": "SCT", "meaning": "CT of chest"},
}
SERIES: list[dict[str, Any]] = [
    {
        "_id": "1.2.826.0.1.3680043.8.498.2",
        "SeriesNumber": 2,
        "Modality": "CT",
        "BodyPartExamined": "CHEST",
        "Laterality": "R",
        "instances": [
            {"_id": "1.2.826.0.1.3680043.8.498.4", "InstanceNumber": 2, "SOPClassUID": CT},
            {"_id": "1.2.826.0.1.3680043.8.498.3", "InstanceNumber": 1, "SOPClassUID": CT},
        ],
    },
    {"_id": "1.2.826.0.1.3680043.8.498.5", "SeriesNumber": 1, "Modality": "SR", "instances": []},
]  # fmt: skip


def test_imaging_study_carries_uid_subject_series_and_counts() -> None:
    links = StudyLinks("Patient/p1", "Endpoint/e1", ["ServiceRequest/sr1"])
    study = imaging_study(STUDY, SERIES, links)
    assert study["identifier"][0] == {
        "system": "urn:dicom:uid",
        "value": "urn:oid:1.2.826.0.1.3680043.8.498.1",
    }
    assert study["identifier"][1]["value"] == "ACC-1"
    assert study["subject"] == {"reference": "Patient/p1"}
    assert study["basedOn"] == [{"reference": "ServiceRequest/sr1"}]
    assert study["endpoint"] == [{"reference": "Endpoint/e1"}]
    assert study["started"] == "2026-11-22"  # no TimezoneOffsetFromUTC: the date alone
    assert [s["number"] for s in study["series"]] == [1, 2]
    ct = study["series"][1]
    assert ct["bodySite"]["code"] == "51185008"
    assert ct["laterality"]["code"] == "24028007"
    assert [i["number"] for i in ct["instance"]] == [1, 2]
    assert ct["instance"][0]["sopClass"]["code"] == "urn:oid:1.2.840.10008.5.1.4.1.1.2"
    assert study["numberOfSeries"] == 2
    assert study["numberOfInstances"] == 2
    assert [m["code"] for m in study["modality"]] == ["SR", "CT"]
    assert study["referrer"] == {"display": "Gregory House"}  # PN read as a name
    assert study["procedureCode"] == [
        {
            "coding": [
                {"code": "RPID17", "system": "http://snomed.info/sct", "display": "CT of chest"}
            ]
        }
    ]
    assert validate(study) == []


def test_started_uses_the_timezone_offset_when_present() -> None:
    study = imaging_study({**STUDY, "TimezoneOffsetFromUTC": "+0200"}, [], StudyLinks("Patient/p"))
    assert study["started"] == "2026-11-22T10:15:00+02:00"


def test_patient_identifier_follows_the_issuer_table() -> None:
    assert patient_identifier("P-17", "LTPK")["system"] == (
        "https://www.esveikata.lt/fhir/sid/asmens-kodas"
    )
    unknown = patient_identifier("P-17", "Some Hospital/1")
    assert unknown["system"].endswith("/Some-Hospital-1")
    assert "/" not in unknown["system"].rsplit("/", 1)[1]
    assert patient_identifier("P-17", None)["value"] == "P-17"


def test_patient_from_header_is_a_valid_patient() -> None:
    patient = patient_from_header(STUDY)
    assert patient["name"][0]["family"] == "Šimkus"
    assert patient["name"][0]["given"] == ["Jonas", "Petras"]
    assert patient["birthDate"] == "1980-01-01"
    assert patient["gender"] == "male"
    assert validate(patient) == []
