"""fhir_server/search/inline.py: which index rows an AuditEvent keeps in its own document,
and how a row filter is asked of those fields."""

from __future__ import annotations

import pytest

from fhir_server.search import inline
from fhir_server.search.keys import SEP, TOP, key, prefix_range

AUDIT = "AuditEvent"


def test_fields_are_plain_names() -> None:
    assert inline.field("agent:identifier", "c") == "i_agent_identifier_c"
    assert inline.field("_lastUpdated", "h") == "i__lastUpdated_h"
    assert "i_patient_k" in inline.indexed_fields(AUDIT)
    assert inline.indexed_fields("Patient") == ()


def test_the_first_row_of_each_declared_code_goes_inline_the_rest_stay_rows() -> None:
    first = {"k": key("patient", "Patient/a"), "c": key("patient", "a")}
    second = {"k": key("patient", "Patient/b"), "c": key("patient", "b")}
    date = {"k": key("date", "1"), "h": key("date", "2")}
    undeclared_slot = {"k": key("action", "", "R"), "h": key("action", "x")}
    undeclared_code = {"k": key("site", "", "fhir")}
    fields, rows = inline.split(AUDIT, [first, second, date, undeclared_slot, undeclared_code])
    assert fields == {
        "i_patient_k": first["k"], "i_patient_c": first["c"],
        "i_date_k": date["k"], "i_date_h": date["h"],
    }  # fmt: skip
    assert rows == [second, undeclared_slot, undeclared_code]


def test_a_type_without_inline_keys_keeps_every_row() -> None:
    rows = [{"k": key("name", "a")}]
    assert inline.split("Patient", rows) == ({}, rows)
    assert inline.translated("Patient", {"k": key("name", "a")}) == []


def test_an_exact_key_is_asked_of_its_code_field() -> None:
    assert inline.translated(AUDIT, {"c": key("patient", "a")}) == [
        {"i_patient_c": key("patient", "a")}
    ]
    assert inline.translated(AUDIT, {"k": key("outcome", "", "0")}) == [
        {"i_outcome_k": key("outcome", "", "0")}
    ]


def test_a_code_not_kept_inline_or_a_slot_it_lacks_asks_nothing() -> None:
    assert inline.translated(AUDIT, {"k": key("site", "", "x")}) == []
    assert inline.translated(AUDIT, {"h": {"$gt": key("action", "1")}}) == []


def test_in_lists_are_split_by_code() -> None:
    by_id, by_identifier = key("patient", "Patient/a"), key("patient:identifier", "s", "1")
    asked = inline.translated(AUDIT, {"k": {"$in": [by_id, by_identifier]}})
    assert asked == [{"i_patient_k": {"$in": [by_id]}}]  # patient:identifier is not inline
    both = inline.translated(AUDIT, {"k": {"$in": [by_id, key("entity", "Patient/a")]}})
    assert both == [
        {"i_patient_k": {"$in": [by_id]}},
        {"i_entity_k": {"$in": [key("entity", "Patient/a")]}},
    ]


def test_a_date_range_asks_both_bounds_of_the_same_row() -> None:
    low, high = key("date", "100"), key("date", "200")
    row_filter = {"k": {"$gte": low, "$lt": high}, "h": {"$lte": high}}
    assert inline.translated(AUDIT, row_filter) == [
        {"i_date_k": {"$gte": low, "$lt": high}, "i_date_h": {"$lte": high}}
    ]
    assert inline.translated(AUDIT, {"k": prefix_range(key("_id", ""))}) == [
        {"i__id_k": {"$gte": "_id" + SEP, "$lt": "_id" + SEP + TOP}}
    ]


def test_fields_of_two_codes_in_one_filter_match_no_one_row() -> None:
    row_filter = {"k": key("date", "1"), "h": {"$lte": key("_lastUpdated", "2")}}
    assert inline.translated(AUDIT, row_filter) == []


def test_an_expression_over_the_row_is_renamed_to_the_field() -> None:
    found = {"$gte": [{"$indexOfCP": ["$k", "rest"]}, 0]}
    bounds = prefix_range(key("type:text", ""))
    asked = inline.translated(AUDIT, {"k": bounds, "$expr": found})
    assert asked == [
        {
            "i_type_text_k": bounds,
            "$expr": {"$gte": [{"$indexOfCP": ["$i_type_text_k", "rest"]}, 0]},
        }
    ]


def test_a_filter_that_is_not_over_keys_is_refused() -> None:
    with pytest.raises(ValueError, match="not a key"):
        inline.translated(AUDIT, {"k": "no separator"})
    with pytest.raises(ValueError, match="names 'r'"):
        inline.translated(AUDIT, {"r": "x"})
