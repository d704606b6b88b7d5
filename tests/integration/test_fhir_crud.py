"""The FHIR REST core through a real HTTP server and the real embedded store."""

from __future__ import annotations

from typing import Any

import httpx

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def patient(unique: str, family: str = "Šimkus") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.3.6.1.4.1.99999.1", "value": unique}],
        "name": [{"family": family, "given": ["Jonas"]}],
        "birthDate": "1980-01-01",
    }


def test_create_then_read_serves_the_stored_version(fhir: httpx.Client, unique: str) -> None:
    created = fhir.post("/Patient", json=patient(unique), headers=FHIR_JSON)
    assert created.status_code == 201
    body = created.json()
    assert body["meta"]["versionId"] == "1"
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["location"].endswith(f"/Patient/{body['id']}/_history/1")
    read = fhir.get(f"/Patient/{body['id']}")
    assert read.status_code == 200
    assert read.headers["content-type"].startswith("application/fhir+json")
    assert read.json() == body
    assert read.json()["name"][0]["family"] == "Šimkus"
