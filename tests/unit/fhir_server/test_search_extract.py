"""Index rows from resources: the FHIRPath subset of the R4 expressions, one row per value."""

from __future__ import annotations

from decimal import Decimal

from fhir_server.search.extract import index_entries
from fhir_server.search.fhirpath import element_names, evaluate, top_element
from fhir_server.search.keys import SEP, number_key


def keys(resource: dict[str, object], code: str) -> list[str]:
    return [
        row["k"].split(SEP, 1)[1]
        for row in index_entries(resource).rows
        if row["k"].split(SEP, 1)[0] == code
    ]


def test_fhirpath_subset() -> None:
    observation = {
        "resourceType": "Observation",
        "valueQuantity": {"value": 5},
        "subject": {"reference": "Group/1"},
    }
    assert [n.value for n in evaluate("(Observation.value as Quantity)", observation)] == [
        {"value": 5}
    ]
    assert evaluate("(Observation.value as CodeableConcept)", observation) == []
    assert evaluate("Observation.subject.where(resolve() is Patient)", observation) == []
    patient = {
        "resourceType": "Patient",
        "telecom": [{"system": "phone", "value": "1"}, {"system": "email", "value": "a@b"}],
    }
    email = evaluate("Patient.telecom.where(system='email')", patient)
    assert [n.value["value"] for n in email] == ["a@b"]


def test_fhirpath_outside_the_subset_selects_nothing() -> None:
    patient = {"resourceType": "Patient", "name": [{"family": "Doe"}], "active": True}
    assert evaluate("Patient.name.first()", patient) == []
    assert evaluate("Patient.name.first().exists()", patient) == []
    assert evaluate("Patient.active and Patient.name.exists()", patient) == []
    # a `where` this subset cannot read matches no element, so `exists()` is false
    assert [n.value for n in evaluate("Patient.name.where(given.empty()).exists()", patient)] == [
        False
    ]
    assert [n.value for n in evaluate("Patient.name.exists()", patient)] == [True]


def test_expressions_skipped_only_when_their_element_is_absent() -> None:
    assert top_element("Patient.name.family") == "name"
    assert top_element("(Observation.value as Quantity)") == "value"
    assert top_element("Patient.deceased.exists() and Patient.deceased != false") is None
    assert top_element("Patient.name.exists()") is None  # absent is `false`, not nothing
    names = element_names({"resourceType": "Observation", "valueCodeableConcept": {}})
    assert {"value", "valueCodeable", "valueCodeableConcept", "resourceType"} <= names
    assert "val" not in names
    observation = {"resourceType": "Observation", "valueQuantity": {"value": 5}}
    assert keys(observation, "value-quantity") == [number_key(Decimal(5))]


def test_string_keys_fold_case_and_accents() -> None:
    for family, folded in (("DOE", "doe"), ("Šimkus", "simkus"), ("Straße", "strasse")):
        patient = {"resourceType": "Patient", "name": [{"family": family}]}
        assert keys(patient, "family") == [folded]


def test_rows_per_value_and_sort_keys() -> None:
    patient = {
        "resourceType": "Patient",
        "id": "p1",
        "name": [{"family": "Šimkus", "given": ["Jonas", "Petras"]}],
        "birthDate": "1980-05",
        "telecom": [{"system": "email", "value": "j@example.org"}],
    }
    assert keys(patient, "given") == ["jonas", "petras"]
    assert keys(patient, "email") == [f"email{SEP}j@example.org"]
    index = index_entries(patient)
    assert index.order["family"] == "simkus"
    assert index.order["_id"] == "p1"
    assert all(isinstance(value, str) for row in index.rows for value in row.values())


def test_subject_rows_only_for_the_right_target() -> None:
    study = {
        "resourceType": "ImagingStudy",
        "subject": {"reference": "Group/9"},
        "series": [{"modality": {"system": "DCM", "code": "CT"}}],
    }
    assert keys(study, "patient") == []
    assert keys(study, "subject") == ["Group/9"]
    assert keys(study, "modality") == [f"DCM{SEP}CT"]


def test_deceased_is_true_for_a_date_or_true_and_false_otherwise() -> None:
    alive = {"resourceType": "Patient", "deceasedBoolean": False}
    dead = {"resourceType": "Patient", "deceasedDateTime": "2020-01-01"}
    unknown = {"resourceType": "Patient"}
    assert keys(alive, "deceased") == [f"{SEP}false"]
    assert keys(dead, "deceased") == [f"{SEP}true"]
    assert keys(unknown, "deceased") == [f"{SEP}false"]
