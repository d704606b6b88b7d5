"""AuditEvents are the server's record: no client creates, changes or deletes one, not
even without auth or with every scope, and not as a bundle entry (405, MB-1091)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import orjson
import pytest

from tests.support.servers import RunningServer

EVENT = {
    "resourceType": "AuditEvent",
    "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type", "code": "rest"},
    "recorded": "2026-01-01T00:00:00Z",
    "agent": [{"requestor": True, "who": {"display": "a forger"}}],
    "source": {"observer": {"display": "elsewhere"}},
}


def refused(answer: httpx.Response) -> None:
    assert answer.status_code == 405, answer.text
    issue = answer.json()["issue"][0]
    assert issue["details"]["coding"][0]["code"] == "MB-1091"


def forged(server: RunningServer) -> int:
    found = httpx.get(
        f"{server.fhir_base}/AuditEvent", params={"date": "2026-01-01", "_summary": "count"}
    )
    assert found.status_code == 200, found.text
    total: int = found.json()["total"]
    return total


@pytest.mark.parametrize("method", ["POST", "PUT", "PATCH", "DELETE"])
def test_no_client_writes_an_audit_event(server: RunningServer, method: str) -> None:
    event_id = uuid.uuid4().hex
    url = f"{server.fhir_base}/AuditEvent"
    body: Any = EVENT
    headers = {"content-type": "application/fhir+json"}
    if method != "POST":
        url += f"/{event_id}"
        body = {**EVENT, "id": event_id}
    if method == "PATCH":
        body = [{"op": "replace", "path": "/outcome", "value": "0"}]
        headers = {"content-type": "application/json-patch+json"}
    refused(httpx.request(method, url, content=orjson.dumps(body), headers=headers, timeout=30))
    assert httpx.get(f"{server.fhir_base}/AuditEvent/{event_id}").status_code == 404
    assert forged(server) == 0


def test_no_bundle_writes_an_audit_event(server: RunningServer) -> None:
    entry = {"resource": EVENT, "request": {"method": "POST", "url": "AuditEvent"}}
    batch = httpx.post(
        server.fhir_base,
        json={"resourceType": "Bundle", "type": "batch", "entry": [entry]},
        timeout=30,
    )
    assert batch.status_code == 200, batch.text
    assert batch.json()["entry"][0]["response"]["status"].startswith("405")
    transaction = httpx.post(
        server.fhir_base,
        json={"resourceType": "Bundle", "type": "transaction", "entry": [entry]},
        timeout=30,
    )
    # the transaction fails as a whole (MB-1101) with the refused entry's status
    assert transaction.status_code == 405, transaction.text
    assert "AuditEvents are written by the server" in transaction.text
    assert forged(server) == 0
