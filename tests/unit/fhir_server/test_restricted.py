"""One resource in hand against a patient restriction: which reads and writes pass."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from access.context import Door, RequestContext
from access.errors import AccessError
from access.restriction import Restriction
from fhir_server.exchange import FhirExchange, FhirRequest
from fhir_server.interactions.restricted import check_write, compartment_of, may_see
from fhir_server.repository import Stored


def exchange(*patients: str) -> FhirExchange:
    found = FhirExchange(FhirRequest("GET", ""), RequestContext(Door.FHIR))
    found.narrow(Restriction(patients=frozenset(patients)))
    return found


def observation(*subjects: str, performer: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "id": "o1",
        "status": "final",
        "code": {"text": "x"},
    }
    if subjects:
        resource["subject"] = {"reference": f"Patient/{subjects[0]}"}
    if performer:
        resource["performer"] = [{"reference": f"Patient/{performer}"}]
    return resource


def stored(resource: dict[str, Any] | None, resource_type: str = "Observation") -> Stored:
    raw = orjson.dumps(resource) if resource is not None else None
    return Stored(resource_type, (resource or {}).get("id", "o1"), 1, 0, raw)


def test_compartment_by_every_compartment_parameter() -> None:
    assert compartment_of("Observation", "o1", observation("a", performer="b")) == {"a", "b"}
    assert compartment_of("Patient", "a", {"resourceType": "Patient"}) == {"a"}
    assert compartment_of("Organization", "x", {"resourceType": "Organization"}) == set()


def test_reads_see_the_allowed_compartment_and_data_of_no_patient() -> None:
    alice = exchange("alice")
    assert may_see(alice, stored(observation("alice")))
    assert not may_see(alice, stored(observation("bob")))
    assert not may_see(alice, stored(observation()))  # linked type, but no patient named
    assert may_see(alice, stored({"resourceType": "Organization", "id": "x"}, "Organization"))
    assert not may_see(alice, stored(None))  # a tombstone names no patient


@pytest.mark.parametrize(
    ("resource", "previous", "new_id", "expression"),
    [
        # another patient's record, and the element that says so
        (observation("bob"), None, None, "Observation.subject"),
        (observation("alice", performer="bob"), None, None, "Observation.performer"),
        (observation(), None, None, "Observation.subject"),  # names no patient at all
        (observation("bob"), observation("alice"), None, "Observation.subject"),  # moved
        (observation("alice"), observation("bob"), None, None),  # taken from another
        ({"resourceType": "Patient", "id": "alice"}, None, "new", "Patient.id"),  # new patient
        (None, observation("bob"), None, None),  # a delete
    ],
)
def test_writes_outside_are_access_denied(
    resource: dict[str, Any] | None,
    previous: dict[str, Any] | None,
    new_id: str | None,
    expression: str | None,
) -> None:
    with pytest.raises(AccessError) as refused:
        check_write(exchange("alice"), resource, stored(previous) if previous else None, new_id)
    assert (refused.value.code, refused.value.status) == ("MB-1030", 403)
    assert refused.value.expression == expression


def test_writes_inside_and_unrestricted_pass() -> None:
    check_write(exchange("alice"), observation("alice"), stored(observation("alice")))
    check_write(exchange("alice"), {"resourceType": "Organization", "id": "x"}, None)
    check_write(exchange("alice"), {"resourceType": "Patient", "id": "alice"}, None)
    unrestricted = FhirExchange(FhirRequest("GET", ""), RequestContext(Door.FHIR))
    check_write(unrestricted, observation("bob"), stored(observation("carol")))
