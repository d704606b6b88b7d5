"""Base R4 validation and server profiles report the element at fault."""

from __future__ import annotations

from profiles.validator import fhirpath, profiles_for, validate


def test_valid_patient_has_no_issues() -> None:
    assert validate({"resourceType": "Patient", "name": [{"family": "Šimkus"}]}) == []


def test_base_errors_name_the_element() -> None:
    issues = validate(
        {"resourceType": "Patient", "birthDate": "19800101", "name": [{"given": "x"}]}
    )
    assert {i.expression for i in issues} == {"Patient.birthDate", "Patient.name[0].given"}
    assert {i.code for i in issues} == {"value"}


def test_unknown_elements_and_types() -> None:
    assert validate({"resourceType": "Patient", "colour": "red"})[0].expression == "Patient.colour"
    unknown = validate({"resourceType": "Spaceship"})
    assert unknown[0].expression == "resourceType"
    assert validate({"name": "no type"})[0].code == "structure"


def test_imagingstudy_profile_wants_the_study_instance_uid() -> None:
    study = {
        "resourceType": "ImagingStudy",
        "status": "available",
        "subject": {"reference": "Patient/1"},
        "identifier": [{"system": "urn:ietf:rfc:3986", "value": "urn:oid:1.2.3"}],
    }
    issues = validate(study)
    assert [i.expression for i in issues] == ["ImagingStudy.identifier"]
    assert "urn:dicom:uid" in issues[0].diagnostics
    study["identifier"] = [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.840.1.2"}]
    assert validate(study) == []
    study["identifier"] = [{"system": "urn:dicom:uid", "value": "urn:oid:1.02.x"}]
    assert validate(study) != []


def test_consent_profile() -> None:
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"text": "privacy"},
        "category": [{"text": "x"}],
        "patient": {"reference": "Patient/1"},
    }
    assert [i.expression for i in validate(consent)] == ["Consent.provision"]
    assert validate({**consent, "policyRule": {"text": "national law"}}) == []
    no_patient = {k: v for k, v in consent.items() if k != "patient"}
    expressions = [i.expression for i in validate({**no_patient, "provision": {"type": "deny"}})]
    assert expressions == ["Consent.patient"]


def test_fhirpath_and_profiles_for() -> None:
    assert fhirpath("Patient", ("name", 0, "given", 1)) == "Patient.name[0].given[1]"
    assert profiles_for("Consent") == [
        "https://medbridge.example.org/fhir/StructureDefinition/mb-consent"
    ]
    assert profiles_for("Patient") == []
