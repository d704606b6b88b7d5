"""`medbridge serve` on the embedded default: starts, answers, stops cleanly, keeps data."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import start_server

FHIR_JSON = {"Content-Type": "application/fhir+json"}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_embedded_store_starts_stops_and_keeps_data(tmp_path: Path) -> None:
    server = start_server(tmp_path, mongodb_uri=None)
    try:
        health = httpx.get(f"{server.base_url}/health")
        assert health.status_code == 200
        assert health.json()["listeners"]["http"] == "up"
        assert "ready: FHIR base http://127.0.0.1:" in server.log()
        created = httpx.post(
            f"{server.fhir_base}/Organization",
            json={"resourceType": "Organization", "name": "Vilniaus klinika"},
            headers=FHIR_JSON,
        )
        assert created.status_code == 201
        store_pid = int((tmp_path / "mongo" / "nx-27017.pid").read_text().strip())
        assert _pid_alive(store_pid)
    finally:
        server.stop()
    assert server.process.returncode == 0
    assert not _pid_alive(store_pid), "the embedded store outlived the server"

    again = start_server(tmp_path, mongodb_uri=None, database=server.database)
    try:
        read = httpx.get(f"{again.fhir_base}/Organization/{created.json()['id']}")
        assert read.status_code == 200
        assert read.json()["name"] == "Vilniaus klinika"
    finally:
        again.stop()


def test_body_size_limit_is_an_outcome(tmp_path: Path, store: EmbeddedMongo) -> None:
    server = start_server(tmp_path, mongodb_uri=store.uri, env={"MEDBRIDGE_MAX_BODY_BYTES": "2000"})
    try:
        big = {"resourceType": "Organization", "name": "x" * 5000}
        response = httpx.post(f"{server.fhir_base}/Organization", json=big, headers=FHIR_JSON)
        assert response.status_code == 413
        assert response.json()["issue"][0]["details"]["coding"][0]["code"] == "MB-1009"

        def chunks() -> object:
            for _ in range(10):
                yield b" " * 1000

        streamed = httpx.post(
            f"{server.fhir_base}/Organization",
            content=chunks(),
            headers=FHIR_JSON,  # type: ignore[arg-type]
        )
        assert streamed.status_code == 413
        small = httpx.post(
            f"{server.fhir_base}/Organization",
            json={"resourceType": "Organization", "name": "ok"},
            headers=FHIR_JSON,
        )
        assert small.status_code == 201
    finally:
        server.stop()


def test_metadata_is_generated_from_the_registry(fhir: httpx.Client) -> None:
    statement = fhir.get("/metadata").json()
    assert statement["resourceType"] == "CapabilityStatement"
    assert statement["fhirVersion"] == "4.0.1"
    resources = {r["type"]: r for r in statement["rest"][0]["resource"]}
    assert set(resources) == {
        "Patient", "Practitioner", "PractitionerRole", "Organization", "RelatedPerson",
        "Encounter", "ServiceRequest", "ImagingStudy", "DiagnosticReport", "Observation",
        "Endpoint", "Consent", "AuditEvent", "Provenance", "Task", "DocumentReference", "Binary",
    }  # fmt: skip
    interactions = {i["code"] for i in resources["Patient"]["interaction"]}
    assert {
        "read",
        "vread",
        "update",
        "patch",
        "delete",
        "create",
        "history-instance",
    } <= interactions
    patient_params = {p["name"] for p in resources["Patient"]["searchParam"]}
    assert {"identifier", "birthdate"} <= patient_params
    assert resources["ImagingStudy"]["supportedProfile"] == [
        "https://medbridge.example.org/fhir/StructureDefinition/mb-imagingstudy"
    ]
