"""fhir_server.bundle.bundle_in_steps: the same Bundle as `bundle`, built entry by entry."""

from __future__ import annotations

from typing import Any

import orjson

from fhir_server.bundle import bundle, bundle_in_steps


def _without_identity(raw: bytes) -> dict[str, Any]:
    document = orjson.loads(raw)
    document.pop("id")
    document.pop("meta")
    return dict(document)


async def test_entries_large_and_small_come_out_as_bundle_writes_them() -> None:
    big = orjson.Fragment(orjson.dumps({"resourceType": "Binary", "data": "QUFB" * (1 << 20)}))
    entries: list[dict[str, Any]] = [
        {"response": {"status": "201 Created"}, "resource": big},
        {"response": {"status": "200 OK", "lastModified": "2026-12-06T19:00:00.000Z"}},
        {"response": {"status": "201 Created"}, "resource": big},
    ]
    stepped = await bundle_in_steps("transaction-response", entries)
    whole = bundle("transaction-response", entries, [])
    assert _without_identity(stepped) == _without_identity(whole)
    assert list(orjson.loads(stepped)) == list(orjson.loads(whole))  # members in order


async def test_no_entries_no_entry_member() -> None:
    assert "entry" not in orjson.loads(await bundle_in_steps("batch-response", []))
