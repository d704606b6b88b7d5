"""A patient restriction compiles to index clauses (no I/O here: the clauses alone)."""

from __future__ import annotations

from access.restriction import UNRESTRICTED, Restriction
from fhir_server.search.keys import key
from fhir_server.search.nodes import RowQuery
from fhir_server.search.restriction import (
    holds_patient_data,
    patients_clause,
    restriction_clauses,
)

ALICE = Restriction(patients=frozenset({"alice"}))


def keys(resource_type: str, restriction: Restriction) -> set[tuple[str, str]]:
    (clause,) = restriction_clauses(resource_type, restriction)
    assert not clause.negate
    found = set()
    for alternative in clause.alternatives:
        assert isinstance(alternative, RowQuery)
        ((field, value),) = alternative.filter
        found.add((field, value))
    return found


def test_a_patient_is_matched_by_its_id() -> None:
    assert keys("Patient", ALICE) == {("c", key("_id", "alice"))}


def test_other_types_by_every_compartment_parameter_of_every_patient() -> None:
    both = Restriction(patients=frozenset({"alice", "bob"}))
    # Observation is in a Patient's compartment by subject and performer
    assert keys("Observation", both) == {
        ("k", key(code, f"Patient/{p}")) for code in ("subject", "performer") for p in both.patients
    }
    assert keys("ImagingStudy", ALICE) == {("k", key("patient", "Patient/alice"))}


def test_types_without_patient_data_are_not_narrowed() -> None:
    for resource_type in ("Organization", "Practitioner", "Endpoint", "Binary"):
        assert not holds_patient_data(resource_type)
        assert restriction_clauses(resource_type, ALICE) == []
        assert patients_clause(resource_type, frozenset({"alice"})) is None


def test_unrestricted_adds_nothing_and_no_patients_matches_nothing() -> None:
    assert restriction_clauses("Observation", UNRESTRICTED) == []
    (nothing,) = restriction_clauses("Observation", Restriction(patients=frozenset()))
    assert nothing.alternatives == ()
