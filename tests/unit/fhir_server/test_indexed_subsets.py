"""fhir_server/search/indexed_subsets.json: a type limited to some of its parameters has
only those indexed, searched and declared; a search by another is refused (strict) or
ignored (lenient), never answered from rows that were not written."""

from __future__ import annotations

import pytest

from access.errors import AccessError
from fhir_server.search.extract import index_rows
from fhir_server.search.parameters import parameters_for
from fhir_server.search.request import parse_search

ACCESS_LOG = {"action", "agent", "date", "entity", "outcome", "patient", "source", "subtype",
              "type"}  # fmt: skip
EVENT = {
    "resourceType": "AuditEvent",
    "id": "0000000000000001",
    "meta": {"lastUpdated": "2026-12-06T12:00:00.000Z"},
    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
    "action": "R",
    "recorded": "2026-12-06T12:00:00.000Z",
    "outcome": "0",
    "agent": [{"who": {"identifier": {"system": "urn:a", "value": "u"}}, "requestor": True,
               "network": {"address": "127.0.0.1", "type": "2"}, "policy": ["jti-1"]}],
    "source": {"site": "fhir", "observer": {"display": "host"}},
    "entity": [{"what": {"reference": "Patient/p1"}, "name": "x",
                "role": {"system": "http://terminology.hl7.org/CodeSystem/object-role",
                         "code": "1"}}],
}  # fmt: skip


def test_audit_event_keeps_the_access_log_parameters_and_resource_ones() -> None:
    codes = set(parameters_for("AuditEvent"))
    assert codes >= ACCESS_LOG
    assert {"_id", "_lastUpdated"} <= codes
    assert not {"site", "address", "policy", "entity-name", "entity-role"} & codes


def test_other_types_keep_every_parameter() -> None:
    assert {"name", "family", "identifier", "birthdate", "address"} <= set(
        parameters_for("Patient")
    )


def test_an_event_is_indexed_by_the_kept_parameters_only() -> None:
    codes = {row["k"].split("\x1f")[0].partition(":")[0] for row in index_rows(EVENT)}
    assert codes == {"_id", "_lastUpdated", "action", "agent", "date", "entity", "outcome",
                     "patient", "type"}  # fmt: skip


def test_a_search_by_a_left_out_parameter_is_refused_or_ignored() -> None:
    with pytest.raises(AccessError) as refused:
        parse_search("AuditEvent", [("site", "fhir")], strict=True)
    assert refused.value.code == "MB-1016"
    assert parse_search("AuditEvent", [("site", "fhir")]).criteria == ()
    kept = parse_search("AuditEvent", [("patient", "p1"), ("subtype", "read")], strict=True)
    assert kept.criteria == (("patient", "p1"), ("subtype", "read"))
