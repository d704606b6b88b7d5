"""Rule 7 for queries: which search parameters would find a patient by what research's
de-identified answer hides (consent/research.py)."""

from __future__ import annotations

import pytest

from consent.research import identifying


@pytest.mark.parametrize(
    ("resource_type", "name"),
    [
        ("Patient", "name"),
        ("Patient", "family:exact"),
        ("Patient", "identifier"),
        ("Patient", "birthdate"),
        ("Patient", "address-postalcode"),
        ("Patient", "phone"),
        ("Observation", "identifier"),
        ("Observation", "subject.name"),
        ("Observation", "subject:Patient.identifier"),
        ("Observation", "patient.address-city:contains"),
        ("Patient", "_has:Observation:patient:identifier"),
        ("Organization", "_has:Patient:organization:name"),
        ("Practitioner", "_has:Encounter:practitioner:patient.family"),
        ("Observation", "_text"),
        (None, "_content"),
    ],
)
def test_a_query_that_finds_a_patient_by_identity_is_named(
    resource_type: str | None, name: str
) -> None:
    assert identifying(resource_type, [("_count", "10"), (name, "x")]) == [name]


@pytest.mark.parametrize(
    ("resource_type", "name"),
    [
        ("Observation", "code"),
        ("Observation", "subject"),
        ("Observation", "patient"),
        ("Observation", "subject:Patient.gender"),
        ("Patient", "_id"),
        ("Patient", "gender"),
        ("Practitioner", "name"),
        ("Organization", "identifier"),
        ("Location", "address-city"),
        ("Observation", "_include"),
    ],
)
def test_a_query_that_does_not_may_run(resource_type: str, name: str) -> None:
    assert identifying(resource_type, [(name, "x")]) == []


def test_every_identifying_parameter_is_named_once_sorted() -> None:
    query = [("name", "a"), ("identifier", "b"), ("name", "c"), ("code", "d")]
    assert identifying("Patient", query) == ["identifier", "name"]
