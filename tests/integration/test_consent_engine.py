"""The consent engine over real HTTP with auth on: a patient hides an Observation category
from clinicians, and the engine holds it on the next request for read, search, totals and
_summary=count; the family doctor and a break-the-glass access still see it (the override
noted for audit); revoking the Consent shows it again at once.

Tokens are real ES256 JWTs checked by the server's JwtValidator against a JWKS file; the
data is written through the FHIR door with a backend-service token, which consent does not
filter."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey
from pydicom.uid import generate_uid

from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_smart_enforce import linked_patient, stow
from tests.support.dicom import renamed
from tests.support.servers import IsolatedStore, RunningServer, start_server

ISSUER = "https://issuer.consent.test"
CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"


@dataclass
class Site:
    server: RunningServer
    key: ECKey
    notes: Path
    clinic: str = ""  # the Organization that performed the Observations
    gp: str = ""  # Practitioner ids
    doctor: str = ""  # works for the clinic
    stranger: str = ""

    def token(self, scope: str, fhir_user: str | None, patient: str | None = None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": ISSUER, "aud": self.server.fhir_base, "scope": scope,
            "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex,
            "sub": "backend" if fhir_user is None else fhir_user.replace("/", "-"),
            "client_id": "backend" if fhir_user is None else "ehr",
        }  # fmt: skip
        if fhir_user is not None:
            claims["fhirUser"] = fhir_user
        if patient is not None:
            claims["patient"] = patient
        return jwt.encode({"alg": "ES256", "kid": "k1"}, claims, self.key)

    def system(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token('system/*.cruds', None)}"}

    def user(self, fhir_user: str, purpose: str | None = None) -> dict[str, str]:
        headers = {"Authorization": f"Bearer {self.token('user/*.rs', fhir_user)}"}
        if purpose is not None:
            headers["X-Purpose-Of-Use"] = purpose
        return headers

    def create(self, resource: dict[str, Any]) -> str:
        answer = httpx.post(
            f"{self.server.fhir_base}/{resource['resourceType']}", json=resource,
            headers=self.system(),
        )  # fmt: skip
        assert answer.status_code == 201, answer.text
        return str(answer.json()["id"])

    def get(self, path: str, headers: dict[str, str], **query: str) -> httpx.Response:
        return httpx.get(f"{self.server.fhir_base}/{path}", params=query, headers=headers)

    def noted(self) -> list[dict[str, Any]]:
        if not self.notes.exists():
            return []
        lines = self.notes.read_bytes().splitlines()
        return [o for line in lines for o in orjson.loads(line)["overrides"]]


def observation(patient: str, category: str, organization: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": CATEGORY, "code": category}]}],
        "code": {"text": category},
        "subject": {"reference": f"Patient/{patient}"},
        "performer": [{"reference": f"Organization/{organization}"}],
        "effectiveDateTime": "2026-03-01T10:00:00Z",
    }


def hiding(patient: str, category: str, status: str = "active") -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": status,
        "scope": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/consentscope",
            "code": "patient-privacy",
        }]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient}"},
        "policyRule": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTIN",
        }]},
        "provision": {
            "type": "permit",
            "provision": [{"type": "deny", "code": [{"coding": [{"code": category}]}]}],
        },
    }  # fmt: skip


def keys_and_env(root: Path) -> tuple[ECKey, dict[str, str]]:
    """A signing key, its JWKS file, and the environment of a server trusting it."""
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    jwks = root / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    return key, {
        "MEDBRIDGE_AUTH_ISSUER": ISSUER,
        "MEDBRIDGE_AUTH_JWKS": str(jwks),
        "MEDBRIDGE_CONSENT_CARE_RELATIONSHIP_REQUIRED": "true",
        "MEDBRIDGE_CONSENT_UNHIDEABLE_CATEGORIES": "notifiable",
        "MEDBRIDGE_EXTRA_HOOKS": "tests.support.consent_notes:hooks",
        "MEDBRIDGE_TEST_CONSENT_NOTES": str(root / "notes.jsonl"),
    }


def staff(site: Site) -> None:
    """The clinic, the family doctor, a doctor of the clinic and a stranger."""
    site.clinic = site.create({"resourceType": "Organization", "name": "Clinic"})
    site.gp, site.doctor, site.stranger = (
        site.create({"resourceType": "Practitioner", "name": [{"family": name}]})
        for name in ("Gp", "Doctor", "Stranger")
    )
    site.create({
        "resourceType": "PractitionerRole", "active": True,
        "practitioner": {"reference": f"Practitioner/{site.doctor}"},
        "organization": {"reference": f"Organization/{site.clinic}"},
    })  # fmt: skip


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("consent")
    key, env = keys_and_env(root)
    running = start_server(root / "server", store.uri, env=env, auth=True)
    site = Site(running, key, root / "notes.jsonl")
    staff(site)
    yield site
    running.stop()


@dataclass
class Chart:
    patient: str
    lab: str  # Observation ids
    vitals: str


def chart(site: Site) -> Chart:
    """A patient of the family doctor, with a laboratory and a vital-signs Observation
    performed by the clinic: each test its own, so the tests do not depend on each other."""
    patient = site.create({
        "resourceType": "Patient", "birthDate": "1980-05-01",
        "generalPractitioner": [{"reference": f"Practitioner/{site.gp}"}],
    })  # fmt: skip
    return Chart(
        patient,
        site.create(observation(patient, "laboratory", site.clinic)),
        site.create(observation(patient, "vital-signs", site.clinic)),
    )


def visible(site: Site, headers: dict[str, str], patient: str) -> tuple[set[str], int, int]:
    """The Observations a search shows, its total, and what _summary=count says."""
    found = site.get("Observation", headers, patient=patient).json()
    counted = site.get("Observation", headers, patient=patient, _summary="count").json()
    shown = {e["resource"]["id"] for e in found.get("entry", [])}
    return shown, found["total"], counted["total"]


def test_a_hidden_category_is_hidden_from_clinicians_but_not_from_rule_3(site: Site) -> None:
    mine = chart(site)
    doctor = site.user(f"Practitioner/{site.doctor}")
    gp = site.user(f"Practitioner/{site.gp}")
    everything = {mine.lab, mine.vitals}

    # rule 1: the clinic that performed them and the family doctor see them; a clinician
    # with no care relationship does not, and is not told they exist
    assert site.get(f"Observation/{mine.lab}", doctor).status_code == 200
    assert visible(site, doctor, mine.patient) == (everything, 2, 2)
    assert visible(site, gp, mine.patient) == (everything, 2, 2)
    stranger = site.user(f"Practitioner/{site.stranger}")
    assert site.get(f"Observation/{mine.lab}", stranger).status_code == 404
    assert visible(site, stranger, mine.patient) == (set(), 0, 0)

    # rule 2: the patient hides laboratory results; it holds on the very next request
    consent = site.create(hiding(mine.patient, "laboratory"))
    read = site.get(f"Observation/{mine.lab}", doctor)
    assert read.status_code == 404
    assert read.json()["resourceType"] == "OperationOutcome"
    assert visible(site, doctor, mine.patient) == ({mine.vitals}, 1, 1)
    # pages smaller than the matches: every page's total counts only what is visible
    # (a page may come out shorter: paging follows the stored order)
    page = site.get("Observation", doctor, patient=mine.patient, _count="1").json()
    seen: list[str] = []
    while True:
        assert page["total"] == 1
        seen += [e["resource"]["id"] for e in page.get("entry", [])]
        following = [link["url"] for link in page["link"] if link["relation"] == "next"]
        if not following:
            break
        page = httpx.get(following[0], headers=doctor).json()
    assert seen == [mine.vitals]

    # rule 3: the family doctor still sees it, without an override note of its own kind
    # for records nobody hid (vital signs)
    assert site.get(f"Observation/{mine.lab}", gp).status_code == 200
    assert visible(site, gp, mine.patient) == (everything, 2, 2)
    assert any(
        o["override"] == "family-doctor" and o["record"] == f"Observation/{mine.lab}"
        for o in site.noted()
    )
    assert not any(o["record"] == f"Observation/{mine.vitals}" for o in site.noted())

    # rule 3: break-the-glass sees it, and the override is noted with its purpose
    before = len(site.noted())
    glass = site.user(f"Practitioner/{site.doctor}", purpose="BTG")
    assert site.get(f"Observation/{mine.lab}", glass).status_code == 200
    new = site.noted()[before:]
    assert new == [{
        "rule": "3-emergency", "override": "BTG", "purpose": "BTG",
        "patient": f"Patient/{mine.patient}", "record": f"Observation/{mine.lab}",
        "reason": new[0]["reason"],
    }]  # fmt: skip

    # the patient sees their own records
    self_token = site.token("patient/*.rs", f"Patient/{mine.patient}", mine.patient)
    own = {"Authorization": f"Bearer {self_token}"}
    assert site.get(f"Observation/{mine.lab}", own).status_code == 200

    # revocable at once: the Consent made inactive, the next request shows it again
    revoked = {**hiding(mine.patient, "laboratory", status="inactive"), "id": consent}
    answer = httpx.put(
        f"{site.server.fhir_base}/Consent/{consent}", json=revoked, headers=site.system()
    )
    assert answer.status_code == 200, answer.text
    assert site.get(f"Observation/{mine.lab}", doctor).status_code == 200
    assert visible(site, doctor, mine.patient) == (everything, 2, 2)


def test_backend_services_are_not_filtered(site: Site) -> None:
    mine = chart(site)
    site.create(hiding(mine.patient, "vital-signs"))
    assert site.get(f"Observation/{mine.vitals}", site.system()).status_code == 200
    doctor = site.user(f"Practitioner/{site.doctor}")
    assert site.get(f"Observation/{mine.vitals}", doctor).status_code == 404


def test_a_category_the_law_does_not_let_hide_stays_visible_with_a_warning(site: Site) -> None:
    mine = chart(site)
    reported = site.create(observation(mine.patient, "notifiable", site.clinic))
    answer = httpx.post(
        f"{site.server.fhir_base}/Consent",
        json=hiding(mine.patient, "notifiable"),
        headers={**site.system(), "Prefer": "return=OperationOutcome"},
    )
    assert answer.status_code == 201, answer.text
    (warning,) = [i for i in answer.json()["issue"] if i["severity"] == "warning"]
    assert warning["details"]["coding"][0]["code"] == "MB-1500"
    assert "notifiable" in warning["diagnostics"]
    doctor = site.user(f"Practitioner/{site.doctor}")
    assert site.get(f"Observation/{reported}", doctor).status_code == 200
    # a category that may be hidden is hidden by the same kind of Consent
    site.create(hiding(mine.patient, "laboratory"))
    assert site.get(f"Observation/{mine.lab}", doctor).status_code == 404


def test_an_active_encounter_is_a_care_relationship(site: Site) -> None:
    mine = chart(site)
    stranger = site.user(f"Practitioner/{site.stranger}")
    assert site.get(f"Observation/{mine.vitals}", stranger).status_code == 404
    encounter = {
        "resourceType": "Encounter",
        "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{mine.patient}"},
        "participant": [{"individual": {"reference": f"Practitioner/{site.stranger}"}}],
    }
    encounter_id = site.create(encounter)
    assert site.get(f"Observation/{mine.vitals}", stranger).status_code == 200
    finished = {**encounter, "id": encounter_id, "status": "finished"}
    answer = httpx.put(
        f"{site.server.fhir_base}/Encounter/{encounter_id}", json=finished, headers=site.system()
    )
    assert answer.status_code == 200, answer.text
    assert site.get(f"Observation/{mine.vitals}", stranger).status_code == 404


def test_representatives_of_a_minor_and_next_of_kin_after_death(site: Site) -> None:
    mine = chart(site)
    patient_url = f"{site.server.fhir_base}/Patient/{mine.patient}"
    patient = httpx.get(patient_url, headers=site.system()).json()

    def change_patient(**elements: Any) -> None:
        answer = httpx.put(patient_url, json={**patient, **elements}, headers=site.system())
        assert answer.status_code == 200, answer.text

    mother = site.create({
        "resourceType": "RelatedPerson", "active": True,
        "patient": {"reference": f"Patient/{mine.patient}"},
        "relationship": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "MTH",
        }]}],
    })  # fmt: skip
    friend = site.create({
        "resourceType": "RelatedPerson", "active": True,
        "patient": {"reference": f"Patient/{mine.patient}"},
        "relationship": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "FRND",
        }]}],
    })  # fmt: skip
    as_mother = site.user(f"RelatedPerson/{mother}")
    as_friend = site.user(f"RelatedPerson/{friend}")
    # an adult patient: the mother is no representative any more, the friend never was
    assert site.get(f"Observation/{mine.lab}", as_mother).status_code == 404
    assert site.get(f"Observation/{mine.lab}", as_friend).status_code == 404
    # a minor (rule 6): the mother sees the child's records
    change_patient(birthDate="2016-01-01")
    assert site.get(f"Observation/{mine.lab}", as_mother).status_code == 200
    assert visible(site, as_mother, mine.patient)[1:] == (2, 2)
    assert site.get(f"Observation/{mine.lab}", as_friend).status_code == 404
    # after death (rule 8): next of kin read, others still do not
    change_patient(birthDate="1950-01-01", deceasedBoolean=True)
    assert site.get(f"Observation/{mine.lab}", as_mother).status_code == 200
    assert site.get(f"Observation/{mine.lab}", as_friend).status_code == 404


def test_who_may_write_a_patients_consents(site: Site) -> None:
    adult, child = chart(site), chart(site)
    answer = httpx.put(
        f"{site.server.fhir_base}/Patient/{child.patient}",
        json={"resourceType": "Patient", "id": child.patient, "birthDate": "2016-01-01"},
        headers=site.system(),
    )
    assert answer.status_code == 200, answer.text
    mother = site.create({
        "resourceType": "RelatedPerson", "active": True,
        "patient": {"reference": f"Patient/{child.patient}"},
        "relationship": [{"coding": [{"code": "MTH"}]}],
    })  # fmt: skip

    def write(token: str, patient: str) -> httpx.Response:
        return httpx.post(
            f"{site.server.fhir_base}/Consent",
            json=hiding(patient, "laboratory"),
            headers={"Authorization": f"Bearer {token}"},
        )

    def as_patient(patient: str) -> str:
        return site.token("patient/Consent.cu", f"Patient/{patient}", patient)

    mothers = site.token("user/Consent.cu", f"RelatedPerson/{mother}")
    # the adult writes their own; the child may not, the mother may for the child
    assert write(as_patient(adult.patient), adult.patient).status_code == 201
    refused = write(as_patient(child.patient), child.patient)
    assert refused.status_code == 403
    assert refused.json()["issue"][0]["details"]["coding"][0]["code"] == "MB-1030"
    assert write(mothers, adult.patient).status_code == 403
    assert write(mothers, child.patient).status_code == 201
    # both hold
    doctor = site.user(f"Practitioner/{site.doctor}")
    for mine in (adult, child):
        assert site.get(f"Observation/{mine.lab}", doctor).status_code == 404
        assert site.get(f"Observation/{mine.vitals}", doctor).status_code == 200


def test_hidden_images_are_hidden_on_dicomweb_too(site: Site) -> None:
    study = generate_uid()
    part = renamed("CT_small.dcm", study=study, patient_id=f"C{uuid.uuid4().hex[:10]}")
    stow(site.server, site.token("system/*.cruds", None), part)
    patient = linked_patient(site.server, site.token("system/*.cruds", None), study)
    # the doctor's care relationship: an Encounter in progress
    site.create({
        "resourceType": "Encounter", "status": "in-progress",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "subject": {"reference": f"Patient/{patient}"},
        "participant": [{"individual": {"reference": f"Practitioner/{site.doctor}"}}],
    })  # fmt: skip
    base = site.server.base_url

    def studies(headers: dict[str, str]) -> list[str]:
        answer = httpx.get(
            f"{base}/dicomweb/studies", params={"StudyInstanceUID": study}, headers=headers
        )
        assert answer.status_code in (200, 204), answer.text
        return [row["0020000D"]["Value"][0] for row in (answer.json() if answer.content else [])]

    doctor = site.user(f"Practitioner/{site.doctor}")
    assert studies(doctor) == [study]
    metadata = f"{base}/dicomweb/studies/{study}/metadata"
    assert httpx.get(metadata, headers=doctor).status_code == 200
    images = hiding(patient, "unused")
    images["provision"]["provision"] = [{
        "type": "deny",
        "class": [{"system": "http://hl7.org/fhir/resource-types", "code": "ImagingStudy"}],
    }]  # fmt: skip
    site.create(images)
    assert studies(doctor) == []
    assert httpx.get(metadata, headers=doctor).status_code == 404
    assert site.get(f"ImagingStudy/{study}", doctor).status_code == 404
    glass = site.user(f"Practitioner/{site.doctor}", purpose="BTG")
    assert studies(glass) == [study]
    assert httpx.get(metadata, headers=glass).status_code == 200
