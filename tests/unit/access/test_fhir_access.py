"""The FHIR door describes each access from its route: hooks never parse the URL."""

from __future__ import annotations

import orjson

from access.access import Access, Action
from access.context import Actor, Door, RequestContext
from fhir_server.access import fhir_access, may_name_patients, written_patients
from fhir_server.exchange import FhirRequest
from fhir_server.router import parse_route


def describe(
    method: str,
    path: str,
    query: list[tuple[str, str]] | None = None,
    headers: dict[str, str] | None = None,
) -> Access:
    request = FhirRequest(method, path, query or [], headers or {})
    context = RequestContext(Door.FHIR, actor=Actor("user", "dr-who"), peer="10.0.0.7")
    return fhir_access(request, parse_route(request), context, None)


def test_an_instance_read_of_a_patient_names_that_patient() -> None:
    access = describe("GET", "Patient/p1", headers={"x-purpose-of-use": "TREAT"})
    assert access.action is Action.READ
    assert access.resource_types == {"Patient"}
    assert access.resource_id == "p1"
    assert access.patients == {"p1"}
    assert (access.purpose_of_use, access.client_address) == ("TREAT", "10.0.0.7")
    assert access.actor.identifier == "dr-who"


def test_a_read_of_another_type_names_no_patient_before_it_is_read() -> None:
    access = describe("GET", "Observation/o1")
    assert (access.action, access.resource_id, access.patients) == (
        Action.READ, "o1", frozenset()
    )  # fmt: skip


def test_compartment_search_and_everything_name_the_compartment_patient() -> None:
    compartment = describe("GET", "Patient/p2/Observation", [("code", "x")])
    assert compartment.action is Action.SEARCH_TYPE
    assert compartment.resource_types == {"Observation"}
    assert compartment.patients == {"p2"}
    everything = describe("GET", "Patient/p3/$everything")
    assert (everything.action, everything.event, everything.patients) == (
        Action.OPERATION, "$everything", frozenset({"p3"})
    )  # fmt: skip


def test_patient_and_subject_search_parameters_name_patients() -> None:
    access = describe(
        "GET",
        "Observation",
        [("subject", "Patient/a,http://h/fhir/Patient/b"), ("patient", "c"), ("_count", "5")],
    )
    assert access.patients == {"a", "b", "c"}
    assert access.patient_query == ()
    by_id = describe("GET", "Patient", [("_id", "d,e")])
    assert by_id.patients == {"d", "e"}


def test_a_search_naming_no_patient_is_described_by_its_query() -> None:
    access = describe("GET", "Observation", [("code", "1234-5"), ("_count", "5")])
    assert access.patients == frozenset()
    assert access.patient_query == (("code", "1234-5"),)
    # subject= without a type is not a patient reference
    assert describe("GET", "Observation", [("subject", "x")]).patients == frozenset()


def test_a_written_resource_names_the_patients_of_its_compartment() -> None:
    """A create or update describes whose compartment the body puts the resource in, so
    a patient-context token cannot write into another patient's record (docs/smart.md)."""
    body = {
        "resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "subject": {"reference": "Patient/p1"},
        "performer": [{"reference": "Patient/p2/_history/3"}, {"reference": "Practitioner/d"}],
    }  # fmt: skip
    for method, path in (("POST", "Observation"), ("PUT", "Observation/o1")):
        request = FhirRequest(method, path, body=orjson.dumps(body))
        access = fhir_access(request, parse_route(request), RequestContext(Door.FHIR), None)
        assert access.action in (Action.CREATE, Action.UPDATE)
        assert access.patients == frozenset({"p1", "p2"})
    for broken in (b"[1, 2]", b"{", b'{"resourceType": "Observation", "subject": 3}'):
        request = FhirRequest("POST", "Observation", body=broken)
        access = fhir_access(request, parse_route(request), RequestContext(Door.FHIR), None)
        assert access.patients == frozenset()  # the interaction answers the bad body


def test_types_outside_every_patient_compartment_name_no_patient_without_parsing() -> None:
    """The router skips the body worker for these (a 10 MiB Binary's trip across the pipe
    found nothing): what the worker would have found is nothing too."""
    binary = {"resourceType": "Binary", "contentType": "text/plain", "data": "QUFB",
              "securityContext": {"reference": "Patient/p1"}}  # fmt: skip
    assert not may_name_patients("Binary")
    assert written_patients("Binary", orjson.dumps(binary)) == set()
    assert may_name_patients("Patient")  # Patient.link names another one
    assert may_name_patients("Observation")
    assert may_name_patients("ImagingStudy")
