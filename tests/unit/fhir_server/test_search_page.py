"""Keyset paging conditions and sort fields, before any I/O."""

from __future__ import annotations

import pytest

from access.errors import AccessError
from fhir_server.search.page import _after, _decode, _encode, sort_fields
from fhir_server.search.request import parse_search


def test_sort_fields_end_with_the_id() -> None:
    request = parse_search("ImagingStudy", [("_sort", "-started,status")])
    assert sort_fields(request) == [("o.started", -1), ("o.status", 1), ("_id", 1)]
    assert sort_fields(parse_search("Patient", [])) == [("_id", 1)]


def test_after_is_strictly_after_in_the_given_order() -> None:
    order = [("o.started", -1), ("_id", 1)]
    assert _after(order, ["2024", "b"]) == [
        {"o.started": {"$lt": "2024"}},
        {"o.started": "2024", "_id": {"$gt": "b"}},
    ]


def test_page_tokens_round_trip_and_reject_others() -> None:
    token = _encode("n", ["2024", "Šimkus", "id-1"])
    assert _decode(token, 3) == ("n", ["2024", "Šimkus", "id-1"])
    for bad in ("not-base64!", _encode("x", ["a"]), token):
        with pytest.raises(AccessError):
            _decode(bad, 1)
