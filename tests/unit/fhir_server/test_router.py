"""Method + path -> interaction, per the FHIR RESTful API."""

from __future__ import annotations

import pytest

from access.errors import AccessError
from fhir_server.exchange import FhirRequest
from fhir_server.registry import Interaction
from fhir_server.router import parse_route


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "metadata", [], (Interaction.CAPABILITIES, None, None, None)),
        ("GET", "_history", [], (Interaction.HISTORY_SYSTEM, None, None, None)),
        ("POST", "", [], (Interaction.BATCH, None, None, None)),
        ("GET", "Patient", [], (Interaction.SEARCH_TYPE, "Patient", None, None)),
        ("POST", "Patient/_search", [], (Interaction.SEARCH_TYPE, "Patient", None, None)),
        ("POST", "Patient", [], (Interaction.CREATE, "Patient", None, None)),
        ("PUT", "Patient", [("identifier", "x")], (Interaction.UPDATE, "Patient", None, None)),
        ("DELETE", "Patient", [("identifier", "x")], (Interaction.DELETE, "Patient", None, None)),
        ("GET", "Patient/_history", [], (Interaction.HISTORY_TYPE, "Patient", None, None)),
        ("GET", "Patient/1", [], (Interaction.READ, "Patient", "1", None)),
        ("PUT", "Patient/1", [], (Interaction.UPDATE, "Patient", "1", None)),
        ("PATCH", "Patient/1", [], (Interaction.PATCH, "Patient", "1", None)),
        ("DELETE", "Patient/1", [], (Interaction.DELETE, "Patient", "1", None)),
        ("GET", "Patient/1/_history", [], (Interaction.HISTORY_INSTANCE, "Patient", "1", None)),
        ("GET", "Patient/1/_history/2", [], (Interaction.VREAD, "Patient", "1", "2")),
    ],
)
def test_routes(
    method: str, path: str, query: list[tuple[str, str]], expected: tuple[object, ...]
) -> None:
    route = parse_route(FhirRequest(method, path, query))
    assert (route.interaction, route.resource_type, route.resource_id, route.version_id) == expected


@pytest.mark.parametrize(
    ("method", "path", "code"),
    [
        ("GET", "Medication/1", "MB-1001"),
        ("GET", "patient", "MB-1001"),
        ("POST", "Patient/1", "MB-1013"),
        ("PUT", "Patient", "MB-1020"),
        ("GET", "Patient/1/_history/2/extra", "MB-1002"),
        ("DELETE", "", "MB-1013"),
    ],
)
def test_unroutable_requests(method: str, path: str, code: str) -> None:
    with pytest.raises(AccessError) as raised:
        parse_route(FhirRequest(method, path))
    assert raised.value.code == code


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"resourceType": "Bundle", "type": "transaction"}, Interaction.TRANSACTION),
        ({"resourceType": "Bundle", "type": "batch"}, Interaction.BATCH),
        # unparsed or not a Bundle: the bundle handler answers it inside the pipeline
        (None, Interaction.BATCH),
        (["not", "an", "object"], Interaction.BATCH),
    ],
)
def test_a_bundle_post_is_named_by_its_type(document: object, expected: Interaction) -> None:
    route = parse_route(FhirRequest("POST", "", document=document))
    assert route.interaction == expected
