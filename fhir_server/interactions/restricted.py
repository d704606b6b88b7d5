"""One resource in hand against the access's patient restriction: reads and writes.

Search and history compile the restriction into their index queries
(`search/restriction.py`); an interaction on one resource already holds its stored
bytes, so membership is read from them: the same index rows the search would match,
computed from the same Patient compartment table. A read outside the allowed patients
answers exactly what a missing resource answers (404 `MB-1002`), a write 403 `MB-1030`
with nothing written.
"""

from __future__ import annotations

from typing import Any

import orjson

from access.errors import AccessError
from fhir_server.exchange import FhirExchange
from fhir_server.repository import Stored
from fhir_server.search.extract import index_rows
from fhir_server.search.keys import key
from fhir_server.search.parameters import parameters_for, patient_compartment
from fhir_server.search.restriction import holds_patient_data
from fhir_server.shown import not_shown


def compartment_of(resource_type: str, resource_id: str | None, resource: Any) -> frozenset[str]:
    """The Patient ids whose compartment holds `resource` (a parsed resource)."""
    if resource_type == "Patient":
        return frozenset({resource_id}) if resource_id else frozenset()
    return frozenset(patient for _, patient in _links(resource_type, resource))


def _links(resource_type: str, resource: Any) -> list[tuple[str, str]]:
    """(compartment parameter, Patient id) of each patient `resource` names."""
    codes = patient_compartment().get(resource_type)
    if not codes or not isinstance(resource, dict):
        return []
    prefixes = [(code, key(code, "Patient/")) for code in codes]
    return [
        (code, row["k"][len(prefix) :])
        for row in index_rows(resource)
        for code, prefix in prefixes
        if row["k"].startswith(prefix)
    ]


def _element(resource_type: str, code: str) -> str:
    """The element a compartment parameter reads (`Observation.subject`), for the
    OperationOutcome's expression."""
    parameter = parameters_for(resource_type).get(code)
    if parameter is None or not parameter.branches:
        return resource_type
    return parameter.branches[0].split(".where(", 1)[0]


def may_see(exchange: FhirExchange, stored: Stored) -> bool:
    """Whether this version is in an allowed patient's compartment (or holds no patient
    data). A deleted version has no content to place: only a Patient's id places it."""
    allowed = exchange.restriction.patients
    if allowed is None or not holds_patient_data(stored.resource_type):
        return True
    if stored.resource_type == "Patient":
        return stored.id in allowed
    if stored.raw is None:
        return False
    resource = orjson.loads(stored.raw)
    return bool(compartment_of(stored.resource_type, stored.id, resource) & allowed)


def check_read(exchange: FhirExchange, stored: Stored, reference: str) -> None:
    """404 for a version outside the restriction, as for one that does not exist."""
    if not may_see(exchange, stored):
        raise not_shown(reference)


def check_write(
    exchange: FhirExchange,
    resource: dict[str, Any] | None,
    previous: Stored | None,
    new_id: str | None = None,
) -> None:
    """403 unless what is replaced (or deleted) and what is written are both inside the
    allowed patients: a write may not touch another patient's record, nor move a record
    to another patient (every patient it names must be allowed). `new_id`: the id a
    create gives the resource (whatever id its body carries)."""
    allowed = exchange.restriction.patients
    if allowed is None:
        return
    if previous is not None and not previous.deleted and not may_see(exchange, previous):
        raise denied(f"{previous.resource_type}/{previous.id}")
    if resource is None:
        return
    resource_type = str(resource.get("resourceType"))
    if not holds_patient_data(resource_type):
        return
    resource_id = new_id or (resource.get("id") if isinstance(resource.get("id"), str) else None)
    reference = f"{resource_type}/{resource_id or '(new)'}"
    if resource_type == "Patient":
        if resource_id not in allowed:
            raise denied(reference, "Patient.id")
        return
    links = _links(resource_type, resource)
    outside = [code for code, patient in links if patient not in allowed]
    if outside or not links:
        codes = outside or list(patient_compartment().get(resource_type, ()))
        raise denied(reference, _element(resource_type, codes[0]) if codes else None)


def denied(reference: str, expression: str | None = None) -> AccessError:
    """403: `expression` names the element that links the record to a patient not allowed
    (or, when it names none, where one would be)."""
    return AccessError(
        "MB-1030",
        f"{reference}: outside the patients this access is restricted to",
        expression=expression,
    )
