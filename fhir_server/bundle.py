"""Bundles assembled around stored JSON bytes, never re-serializing the resources."""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from access.loop_turns import Turns, joined
from fhir_server.repository import Stored, instant, now_ms


def history_entry(base_url: str, stored: Stored) -> dict[str, Any]:
    url = f"{stored.resource_type}/{stored.id}"
    entry: dict[str, Any] = {"fullUrl": f"{base_url}/{url}"}
    if stored.raw is not None:
        entry["resource"] = orjson.Fragment(stored.raw)
    method = {"POST": "POST", "DELETE": "DELETE"}.get(stored.method, "PUT")
    status = {"POST": "201 Created", "DELETE": "204 No Content"}.get(method, "200 OK")
    entry["request"] = {"method": method, "url": url if method != "POST" else stored.resource_type}
    entry["response"] = {
        "status": status,
        "etag": f'W/"{stored.version}"',
        "lastModified": stored.last_updated,
    }
    return entry


def bundle(
    bundle_type: str,
    entries: list[dict[str, Any]],
    links: list[tuple[str, str]],
    total: int | None = None,
) -> bytes:
    document: dict[str, Any] = {
        "resourceType": "Bundle",
        "id": str(uuid.uuid4()),
        "meta": {"lastUpdated": instant(now_ms())},
        "type": bundle_type,
    }
    if total is not None:
        document["total"] = total
    if links:
        document["link"] = [{"relation": relation, "url": url} for relation, url in links]
    if entries:  # FHIR JSON has no empty arrays: an empty page has no `entry` at all
        document["entry"] = entries
    return orjson.dumps(document)


async def bundle_in_steps(bundle_type: str, entries: list[dict[str, Any]]) -> bytes:
    """`bundle` (no links, no total), its entries serialized one by one with a turn for
    the event loop when one is due (access/loop_turns.py): a transaction of 32 MiB of
    Binary answered with the resources was one 45 ms call holding the loop (issue 17,
    largest-fhir)."""
    head = bundle(bundle_type, [], [])
    if not entries:
        return head
    # `entry` is the document's last member, as in `bundle`; one join of it all
    parts: list[bytes] = [head[:-1], b',"entry":[']
    turns = Turns()
    for index, entry in enumerate(entries):
        if index:
            parts.append(b",")
        parts.append(orjson.dumps(entry))
        await turns.take()
    parts.append(b"]}")
    return await joined(parts)
