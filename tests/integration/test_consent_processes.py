"""Two `medbridge serve` processes with auth on share one isolated store (the production
path, docs/scale.md): a Consent written through one holds on the very next request to
the other, whose Consent cache was filled before the write; revoking it likewise."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import httpx
import pytest

from tests.integration.test_consent_engine import Site, chart, hiding, keys_and_env, staff
from tests.integration.test_multi_process import isolated  # noqa: F401 (a fixture)
from tests.support.servers import start_server


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory, isolated: str) -> Iterator[tuple[Site, Site]]:  # noqa: F811
    root = tmp_path_factory.mktemp("consent-processes")
    key, env = keys_and_env(root)
    database = f"t{uuid.uuid4().hex[:12]}"
    first = start_server(root / "a", isolated, database=database, env=env, auth=True)
    second = start_server(root / "b", isolated, database=database, env=env, auth=True)
    writer = Site(first, key, root / "notes.jsonl")
    staff(writer)
    yield writer, replace(writer, server=second)
    first.stop()
    second.stop()


def test_a_consent_written_through_one_process_holds_at_the_other(
    pair: tuple[Site, Site],
) -> None:
    writer, reader = pair
    mine = chart(writer)
    doctor = reader.user(f"Practitioner/{reader.doctor}")
    # the reader's cache holds this patient's Consents (none) before the write
    assert reader.get(f"Observation/{mine.lab}", doctor).status_code == 200
    consent = writer.create(hiding(mine.patient, "laboratory"))
    assert reader.get(f"Observation/{mine.lab}", doctor).status_code == 404
    assert reader.get(f"Observation/{mine.vitals}", doctor).status_code == 200
    revoked = {**hiding(mine.patient, "laboratory", status="inactive"), "id": consent}
    answer = httpx.put(
        f"{writer.server.fhir_base}/Consent/{consent}", json=revoked, headers=writer.system()
    )
    assert answer.status_code == 200, answer.text
    assert reader.get(f"Observation/{mine.lab}", doctor).status_code == 200


def test_a_care_relationship_written_through_one_process_holds_at_the_other(
    pair: tuple[Site, Site],
) -> None:
    """What the engine reads besides Consents (Encounters, the Patient's family doctor)
    is cached per process too, and dropped by the same counter."""
    writer, reader = pair
    mine = chart(writer)
    stranger = reader.user(f"Practitioner/{reader.stranger}")
    gp = reader.user(f"Practitioner/{reader.gp}")
    # the reader's cache holds this patient's facts (no Encounter, gp) before each write
    assert reader.get(f"Observation/{mine.vitals}", stranger).status_code == 404
    assert reader.get(f"Observation/{mine.vitals}", gp).status_code == 200
    encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{mine.patient}"},
        "participant": [{"individual": {"reference": f"Practitioner/{writer.stranger}"}}],
    }
    writer.create(encounter)
    assert reader.get(f"Observation/{mine.vitals}", stranger).status_code == 200

    patient_url = f"{writer.server.fhir_base}/Patient/{mine.patient}"
    patient = httpx.get(patient_url, headers=writer.system()).json()
    patient["generalPractitioner"] = [{"reference": f"Practitioner/{writer.doctor}"}]
    answer = httpx.put(patient_url, json=patient, headers=writer.system())
    assert answer.status_code == 200, answer.text
    assert reader.get(f"Observation/{mine.vitals}", gp).status_code == 404
