"""mappings.dicom: index rows -> ImagingStudy / Patient, validated by the server's profiles."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom.data
import pytest

from access.errors import AccessError
from imaging.parse import Limits, parse
from mappings.dicom.imagingstudy import (
    RECONCILIATION,
    StudyLinks,
    anonymous_identifier,
    human_name,
    imaging_study,
    issuer_of,
    patient_from_header,
    patient_identifier,
    use_site_authorities,
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


CHARSETS = Path(pydicom.data.__file__).parent / "charset_files"


def test_person_name_components_and_blank_names() -> None:
    assert human_name("Doe^John^Quincy^Dr.^Jr.") == {
        "text": "Dr. John Quincy Doe Jr.",
        "family": "Doe",
        "given": ["John", "Quincy"],
        "prefix": ["Dr."],
        "suffix": ["Jr."],
    }
    assert human_name("^^^^") is None
    assert human_name("") is None
    assert human_name("  ^ ") is None
    # no alphabetic group: the ideographic one names the patient
    assert human_name("=山田^太郎=やまだ^たろう") == {
        "text": "太郎 山田", "family": "山田", "given": ["太郎"],
    }  # fmt: skip


def test_header_naming_nobody_gives_a_valid_patient_and_study() -> None:
    row = {"_id": "1.2.826.0.1.3680043.8.498.77", "PatientName": "^^^^", "PatientID": ""}
    row["ReferringPhysicianName"] = "^^^^"
    row["StudyDescription"] = "   "
    identifier = anonymous_identifier(row["_id"])
    assert identifier == {
        "system": "https://medbridge.example.org/dicom/anonymous-study-patient",
        "value": "1.2.826.0.1.3680043.8.498.77",
    }
    patient = patient_from_header(row, identifier)
    assert patient == {"resourceType": "Patient", "identifier": [identifier]}
    assert validate(patient) == []
    study = imaging_study(row, [], StudyLinks(patient="Patient/p1"))
    assert "referrer" not in study
    assert "description" not in study
    assert validate(study) == []


@pytest.mark.parametrize(
    "name", sorted(p.name for p in CHARSETS.glob("chr*.dcm")) if CHARSETS.is_dir() else []
)
def test_every_character_set_sample_gives_valid_resources(name: str) -> None:
    try:
        parsed = parse((CHARSETS / name).read_bytes(), Limits())
    except AccessError as refused:  # not a storable instance at all (no study UID, ...)
        print(f"{name}: refused at ingest ({refused.code}), no ImagingStudy to make")
        return
    row = {"_id": parsed.study, **parsed.study_attrs}
    series = [{"_id": parsed.series, **parsed.series_attrs, "instances": [
        {"_id": parsed.sop, **parsed.instance_attrs}]}]  # fmt: skip
    identifier = patient_identifier(str(row.get("PatientID") or "x"), None)
    patient = patient_from_header(row, identifier)
    assert validate(patient) == []
    assert patient["name"][0]["text"]  # every sample names its patient
    assert validate(imaging_study(row, series, StudyLinks(patient="Patient/p1"))) == []


def test_issuer_of_reverses_patient_identifier() -> None:
    for issuer in ("HOSP", "LTPK", "SSN"):
        assert issuer_of(patient_identifier("1", issuer)["system"]) in (issuer, "USSSA")
    assert issuer_of(patient_identifier("1", None)["system"]) is None
    assert issuer_of("urn:oid:1.2.3") is None
    assert issuer_of("https://medbridge.example.org/hl7v2/sender/RIS-HOSP/MR") is None


def test_reconciliation_tags_on_the_study() -> None:
    study = imaging_study(STUDY, SERIES, StudyLinks(patient="Patient/p1", tags=[
        "patient-id-mismatch"]))  # fmt: skip
    assert study["meta"]["tag"] == [{
        "system": RECONCILIATION, "code": "patient-id-mismatch",
        "display": "PatientID of the header is not an identifier of the order's patient",
    }]  # fmt: skip
    assert validate(study) == []


def test_site_authorities_name_the_same_system_on_both_sides(tmp_path: Path) -> None:
    site = tmp_path / "authorities.yaml"
    site.write_text('authorities:\n  HOSP: "urn:oid:1.2.826.0.1.3680043.9.7777"\n')
    try:
        use_site_authorities(site)
        identifier = patient_identifier("MRN5005", "HOSP")
        assert identifier == {"system": "urn:oid:1.2.826.0.1.3680043.9.7777", "value": "MRN5005"}
        assert issuer_of(identifier["system"]) == "HOSP"  # the worklist answers HOSP
    finally:
        use_site_authorities(None)
    assert patient_identifier("MRN5005", "HOSP")["system"].endswith("/authority/HOSP")
