"""parse_search: the query string as a frozen SearchRequest, lenient or strict."""

from __future__ import annotations

import dataclasses

import pytest

from access.budget import Budget
from access.errors import AccessError
from fhir_server.search.request import Include, SearchRequest, SortKey, parse_search


def test_parses_result_parameters() -> None:
    request = parse_search(
        "ImagingStudy",
        [
            ("patient", "Patient/1"),
            ("_sort", "-started,_id"),
            ("_count", "5000"),
            ("_total", "none"),
            ("_include:iterate", "ImagingStudy:basedon"),
            ("_revinclude", "DiagnosticReport:study"),
            ("_elements", "status,started"),
        ],
    )
    assert request.criteria == (("patient", "Patient/1"),)
    assert request.sort == (SortKey("started", True), SortKey("_id", False))
    assert request.count == 1000
    assert request.total == "none"
    assert request.elements == ("status", "started")
    assert request.includes == (
        Include("ImagingStudy", "basedon", None, reverse=False, iterate=True),
        Include("DiagnosticReport", "study", None, reverse=True, iterate=False),
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        request.count = 1  # type: ignore[misc]


def test_lenient_drops_unknown_parameters() -> None:
    request = parse_search("Patient", [("name", "x"), ("bogus", "1"), ("_bogus", "2")])
    assert request == SearchRequest("Patient", criteria=(("name", "x"),), applied=(("name", "x"),))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("name", "\\"),
        ("identifier", "|"),
        ("_id", "|"),
        ("birthdate", "$gt"),
        ("birthdate", "yesterday"),
        ("_count", "x"),
        ("gender:contains", "f"),
    ],
)
def test_lenient_refuses_malformed_values_of_known_parameters(name: str, value: str) -> None:
    """Dropping them would answer every Patient to a client that asked for one."""
    with pytest.raises(AccessError) as caught:
        parse_search("Patient", [(name, value)])
    assert caught.value.code == "MB-1016"
    assert caught.value.expression == name
    if value == "\\":
        assert "lone" in caught.value.diagnostics


def test_value_budget_is_checked_in_both_modes() -> None:
    budget = Budget(max_search_values=3, max_search_value_chars=5)
    for strict in (False, True):
        with pytest.raises(AccessError) as caught:
            parse_search("Patient", [("_id", "a,b,c,d")], strict=strict, budget=budget)
        assert caught.value.code == "MB-1061"
        assert "max_search_values" in caught.value.diagnostics
        with pytest.raises(AccessError) as caught:
            parse_search("Patient", [("family:contains", "abcdef")], strict=strict, budget=budget)
        assert caught.value.code == "MB-1060"
        assert "max_search_value_chars" in caught.value.diagnostics
    assert parse_search("Patient", [("_id", "a,b,c")], budget=budget).criteria == (
        ("_id", "a,b,c"),
    )
    with pytest.raises(AccessError) as caught:
        parse_search("Patient", [("name", "a\x1fb")])
    assert caught.value.expression == "name"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("bogus", "1"),
        ("birthdate", "03/2024"),
        ("gender:contains", "f"),
        ("_sort", "colour"),
        ("_include", "Patient:nothing"),
        ("_has:Observation:patient:nope", "1"),
        ("subject.unknown", "x"),
        ("identifier:of-type", "only|two"),
    ],
)
def test_strict_names_the_parameter(name: str, value: str) -> None:
    resource_type = "ImagingStudy" if name.startswith("subject") else "Patient"
    with pytest.raises(AccessError) as caught:
        parse_search(resource_type, [(name, value)], strict=True)
    assert caught.value.code == "MB-1016"
    assert caught.value.expression == name
