"""The patient's access log (issue 15) over real HTTP with auth and consent on: consent
overrides recorded on the access's AuditEvent and asked for first; a patient token reads
`AuditEvent?patient=<self>` (who opened which record, when, why), masked so that no
other patient shows; a minor's representative reads the minor's log and nobody else's.

Tokens are real ES256 JWTs of an external issuer the server trusts (as in
test_consent_engine.py); the stored events are read back with pymongo, as an auditor
would, and through the FHIR API, as the patient does."""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from pydicom.uid import generate_uid
from pymongo import MongoClient

from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_consent_engine import (
    Site,
    chart,
    hiding,
    keys_and_env,
    staff,
)
from tests.integration.test_smart_enforce import linked_patient, stow
from tests.support.dicom import renamed
from tests.support.servers import IsolatedStore, start_server

pytestmark = pytest.mark.integration

Event = dict[str, Any]
OVERRIDE = "urn:medbridge:consent-override"
LOG_SCOPE = "patient/AuditEvent.rs"


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("access-log")
    key, env = keys_and_env(root)
    running = start_server(root / "server", store.uri, env=env, auth=True)
    site = Site(running, key, root / "notes.jsonl")
    staff(site)
    yield site
    running.stop()


def stored(site: Site) -> list[Event]:
    with MongoClient(site.server.mongodb_uri) as client:
        found = client[site.server.database]["AuditEvent"].find({}, {"raw": 1}).sort("_id", 1)
        return [orjson.loads(doc["raw"]) for doc in found]


def codes(event: Event) -> set[str]:
    return {s["code"] for s in event.get("subtype", [])}


def entities(event: Event) -> set[str]:
    return {
        e["what"]["reference"] for e in event.get("entity", []) if "reference" in e.get("what", {})
    }


def last_read_of(site: Site, reference: str, start: int) -> Event:
    [event] = [e for e in stored(site)[start:] if "read" in codes(e) and reference in entities(e)]
    return event


def patient_headers(
    site: Site, fhir_user: str, patient: str, scope: str = LOG_SCOPE
) -> dict[str, str]:
    return {"Authorization": f"Bearer {site.token(scope, fhir_user, patient)}"}


def log_of(server: Site, headers: dict[str, str], /, **query: str) -> list[Event]:
    answer = server.get("AuditEvent", headers, _count="500", **query)
    assert answer.status_code == 200, answer.text
    return [e["resource"] for e in answer.json().get("entry", [])]


def test_overrides_are_recorded_and_the_patient_asks_for_them_first(site: Site) -> None:
    mine = chart(site)
    site.create(hiding(mine.patient, "laboratory"))
    gp = site.user(f"Practitioner/{site.gp}")
    doctor = site.user(f"Practitioner/{site.doctor}")
    glass = site.user(f"Practitioner/{site.doctor}", purpose="BTG")
    lab, vitals = f"Observation/{mine.lab}", f"Observation/{mine.vitals}"

    start = len(stored(site))
    assert site.get(lab, gp).status_code == 200
    by_gp = last_read_of(site, lab, start)
    assert "3-family-doctor" in codes(by_gp)
    [entity] = [e for e in by_gp["entity"] if e.get("what", {}).get("reference") == lab]
    assert entity["detail"] == [{"type": OVERRIDE, "valueString": "3-family-doctor"}]

    start = len(stored(site))
    assert site.get(lab, glass).status_code == 200
    by_glass = last_read_of(site, lab, start)
    assert {"3-emergency", "110113"} <= codes(by_glass)
    assert by_glass["purposeOfEvent"][0]["coding"][0]["code"] == "BTG"

    start = len(stored(site))
    assert site.get(vitals, doctor).status_code == 200  # nothing hidden: no override
    plain = last_read_of(site, vitals, start)
    assert not codes(plain) & {"3-emergency", "3-family-doctor", "110113"}
    assert site.get(lab, doctor).status_code == 404  # hidden, and no rule 3

    # the patient's log: overrides first, then the rest, with who, when and why
    own = patient_headers(site, f"Patient/{mine.patient}", mine.patient)
    first = log_of(site, own, patient=mine.patient, subtype=f"{OVERRIDE}|", _sort="-date")
    assert {e["id"] for e in first} == {by_gp["id"], by_glass["id"]}
    rest = log_of(site, own, patient=mine.patient, **{"subtype:not": f"{OVERRIDE}|"})
    assert plain["id"] in {e["id"] for e in rest}
    assert not {by_gp["id"], by_glass["id"]} & {e["id"] for e in rest}
    [seen] = [e for e in first if e["id"] == by_gp["id"]]
    [who] = [a for a in seen["agent"] if a["requestor"]]
    assert who["who"]["reference"] == f"Practitioner/{site.gp}"
    assert "network" not in who  # the staff's address and token id are not the patient's
    assert "policy" not in who
    assert seen["recorded"] == by_gp["recorded"]
    assert lab in entities(seen)


def test_a_patient_sees_an_event_naming_other_patients_only_as_their_own(site: Site) -> None:
    a, b = chart(site), chart(site)
    b_patient = httpx.get(f"{site.server.fhir_base}/Patient/{b.patient}",
                          headers=site.system()).json()  # fmt: skip
    b_marker = f"Zemaitiene{b.patient[:6]}"
    b_patient["name"] = [{"family": b_marker}]
    answer = httpx.put(f"{site.server.fhir_base}/Patient/{b.patient}", json=b_patient,
                       headers=site.system())  # fmt: skip
    assert answer.status_code == 200, answer.text
    # the family doctor of both searches both patients' records in one request
    gp = site.user(f"Practitioner/{site.gp}")
    start = len(stored(site))
    both = site.get("Observation", gp, patient=f"{a.patient},{b.patient}")
    assert both.status_code == 200
    assert both.json()["total"] == 4
    [search] = [e for e in stored(site)[start:] if "search-type" in codes(e)]
    assert {f"Patient/{a.patient}", f"Patient/{b.patient}"} <= entities(search)

    own = patient_headers(site, f"Patient/{a.patient}", a.patient)
    answer = site.get("AuditEvent", own, patient=a.patient, _count="500")
    assert answer.status_code == 200, answer.text
    [seen] = [e["resource"] for e in answer.json()["entry"] if e["resource"]["id"] == search["id"]]
    assert entities(seen) == {f"Patient/{a.patient}"}
    assert seen["meta"]["security"][0]["code"] == "REDACTED"
    text = answer.text
    for marker in (b.patient, b.lab, b.vitals, b_marker):
        assert marker not in text, marker
    # which record was whose is not in the event: none of them is named
    assert a.lab not in orjson.dumps(seen).decode()
    assert all(e.get("role", {}).get("code") != "24" for e in seen.get("entity", []))
    # the same event read by id is masked the same way
    by_id = site.get(f"AuditEvent/{search['id']}", own)
    assert by_id.status_code == 200, by_id.text
    assert b.patient not in by_id.text
    # another patient's log is not theirs to read: asked for, only the events that are
    # also A's come back (the token's compartment), masked as A sees them
    other = site.get("AuditEvent", own, patient=b.patient)
    assert other.status_code in (200, 403), other.text
    assert b.patient not in str(other.json().get("entry", []))  # the links echo the query
    for entry in other.json().get("entry", []) if other.status_code == 200 else []:
        assert entities(entry["resource"]) <= {f"Patient/{a.patient}"}
    # staff see the whole event
    auditor = site.get(f"AuditEvent/{search['id']}", site.system())
    assert b.patient in auditor.text
    query = [e for e in auditor.json()["entity"] if e["role"]["code"] == "24"]
    assert base64.b64decode(query[0]["query"]).decode().startswith("Observation?patient=")


def test_a_representative_reads_the_minors_log_and_nobody_elses(site: Site) -> None:
    child, stranger = chart(site), chart(site)
    url = f"{site.server.fhir_base}/Patient/{child.patient}"
    patient = httpx.get(url, headers=site.system()).json()
    answer = httpx.put(url, json={**patient, "birthDate": "2016-01-01"}, headers=site.system())
    assert answer.status_code == 200, answer.text
    mother = site.create({
        "resourceType": "RelatedPerson", "active": True,
        "patient": {"reference": f"Patient/{child.patient}"},
        "relationship": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "MTH",
        }]}],
    })  # fmt: skip
    gp = site.user(f"Practitioner/{site.gp}")
    start = len(stored(site))
    assert site.get(f"Observation/{child.vitals}", gp).status_code == 200
    assert site.get(f"Observation/{stranger.vitals}", gp).status_code == 200
    child_read = last_read_of(site, f"Observation/{child.vitals}", start)

    as_mother = patient_headers(site, f"RelatedPerson/{mother}", child.patient)
    seen = log_of(site, as_mother, patient=child.patient)
    assert child_read["id"] in {e["id"] for e in seen}
    assert all(stranger.patient not in orjson.dumps(e).decode() for e in seen)
    # another patient's log: not in the token's patient context
    other = site.get("AuditEvent", as_mother, patient=stranger.patient)
    assert other.status_code in (200, 403), other.text
    assert stranger.patient not in str(other.json().get("entry", []))
    # a token for an adult stranger's context: consent rule 6 does not make her theirs
    claimed = patient_headers(site, f"RelatedPerson/{mother}", stranger.patient)
    refused = site.get("AuditEvent", claimed, patient=stranger.patient)
    assert refused.status_code in (200, 403), refused.text
    assert refused.status_code == 403 or refused.json().get("entry", []) == []


def test_the_access_log_scope_opens_the_log_only(site: Site) -> None:
    """`patient/AuditEvent.rs` is a scope like any other: the read letters of one type."""
    mine = chart(site)
    narrow = patient_headers(site, f"Patient/{mine.patient}", mine.patient, LOG_SCOPE)
    assert site.get("AuditEvent", narrow, patient=mine.patient).status_code == 200
    # the log scope opens the log, not the records
    assert site.get(f"Observation/{mine.lab}", narrow).status_code == 403


def test_who_opened_the_patients_images_is_in_their_log(site: Site) -> None:
    study = generate_uid()
    part = renamed("CT_small.dcm", study=study, patient_id=f"I{uuid.uuid4().hex[:10]}")
    stow(site.server, site.token("system/*.cruds", None), part)
    patient = linked_patient(site.server, site.token("system/*.cruds", None), study)
    site.create({
        "resourceType": "Encounter", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient}"},
        "participant": [{"individual": {"reference": f"Practitioner/{site.doctor}"}}],
    })  # fmt: skip
    doctor = site.user(f"Practitioner/{site.doctor}", purpose="TREAT")
    metadata = f"{site.server.base_url}/dicomweb/studies/{study}/metadata"
    assert httpx.get(metadata, headers=doctor).status_code == 200

    own = patient_headers(site, f"Patient/{patient}", patient)
    seen = log_of(site, own, patient=patient, site="dicomweb")
    [opened] = [e for e in seen if study in {x.get("name") for x in e.get("entity", [])}]
    [who] = [a for a in opened["agent"] if a["requestor"]]
    assert who["who"]["reference"] == f"Practitioner/{site.doctor}"
    assert who["purposeOfUse"][0]["coding"][0]["code"] == "TREAT"
    assert opened["subtype"][0]["code"] == "wado-rs"
