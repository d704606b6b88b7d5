"""Rule 7 over real HTTP with auth on: a reader with purpose of use research (HRESCH,
from the `X-Purpose-Of-Use` header or the token's `purpose_of_use` claim) reads every
patient de-identified (name a placeholder, identifiers, telecom and address gone, the
references' display gone, ids kept so records still link, labelled PSEUDED), and nothing
at all of a patient who refused research; totals and `_summary=count` agree with what is
shown. Tokens are real ES256 JWTs; the data is written by a backend service."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from joserfc import jwt
from pydicom.uid import generate_uid

from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_consent_engine import Site, keys_and_env, observation, staff
from tests.integration.test_smart_enforce import linked_patient, stow
from tests.support.dicom import renamed
from tests.support.servers import IsolatedStore, start_server

RESEARCH = "HRESCH"
SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
PSEUDED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "PSEUDED",
    "display": "pseudonymized",
}
COHORT = "http://study.example/cohort"  # a search both patients of one test share


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("research")
    key, env = keys_and_env(root)
    running = start_server(root / "server", store.uri, env=env, auth=True)
    site = Site(running, key, root / "notes.jsonl")
    staff(site)
    yield site
    running.stop()


def patient(site: Site, family: str, mrn: str) -> str:
    return site.create({
        "resourceType": "Patient", "birthDate": "1971-02-03", "gender": "female",
        "identifier": [{"system": "http://hospital.example/mrn", "value": mrn}],
        "name": [{"family": family, "given": ["Ona"]}],
        "telecom": [{"system": "phone", "value": f"+370 6{mrn[-4:]}"}],
        "address": [{"line": ["Gedimino pr. 9"], "city": "Vilnius", "postalCode": "01103",
                     "country": "LT"}],
        "generalPractitioner": [{"reference": f"Practitioner/{site.gp}"}],
    })  # fmt: skip


def measured(site: Site, patient_id: str, family: str, cohort: str) -> str:
    resource = observation(patient_id, "laboratory", site.clinic)
    resource["subject"]["display"] = f"Ona {family}"
    resource["identifier"] = [{"system": "http://lab.example/accession", "value": f"A-{family}"}]
    resource["code"] = {"coding": [{"system": COHORT, "code": cohort}]}
    return site.create(resource)


def refusing(patient_id: str) -> dict[str, Any]:
    return {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": SCOPE, "code": "research"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{patient_id}"},
        "policyRule": {"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "OPTOUT",
        }]},
        "provision": {"type": "deny"},
    }  # fmt: skip


def researcher(site: Site, *, claim: bool = False) -> dict[str, str]:
    """A researcher's headers: purpose research in the token's claim, or in the header."""
    if not claim:
        return site.user("Practitioner/researcher", purpose=RESEARCH)
    now = int(time.time())
    claims = {
        "iss": "https://issuer.consent.test", "aud": site.server.fhir_base,
        "scope": "user/*.rs", "iat": now, "exp": now + 300, "jti": uuid.uuid4().hex,
        "sub": "researcher", "client_id": "study", "fhirUser": "Practitioner/researcher",
        "purpose_of_use": RESEARCH,
    }  # fmt: skip
    token = jwt.encode({"alg": "ES256", "kid": "k1"}, claims, site.key)
    return {"Authorization": f"Bearer {token}"}


def assert_deidentified(resource: dict[str, Any], *secrets: str) -> None:
    assert PSEUDED in resource["meta"]["security"], resource
    text = orjson.dumps(resource).decode()
    for secret in secrets:
        assert secret not in text, (secret, resource)


def test_research_reads_a_patient_de_identified(site: Site) -> None:
    family = f"Kazlauskaite{uuid.uuid4().hex[:6]}"
    ona = patient(site, family, "MRN-7001")
    for headers in (researcher(site), researcher(site, claim=True)):
        answer = site.get(f"Patient/{ona}", headers)
        assert answer.status_code == 200, answer.text
        shown = answer.json()
        assert shown["id"] == ona
        assert shown["name"] == [{"use": "anonymous", "family": "Anonymous"}]
        for removed in ("identifier", "telecom"):
            assert removed not in shown
        assert shown["address"] == [{"country": "LT"}]
        assert shown["birthDate"] == "1971"
        assert shown["gender"] == "female"
        assert_deidentified(shown, family, "MRN-7001", "Gedimino", "01103")

    # the same read for treatment by the family doctor is untouched
    gp = site.get(f"Patient/{ona}", site.user(f"Practitioner/{site.gp}")).json()
    assert gp["name"][0]["family"] == family
    assert gp["identifier"][0]["value"] == "MRN-7001"
    assert PSEUDED not in (gp.get("meta") or {}).get("security", [])


def test_research_search_leaves_out_who_refused_and_counts_consistently(site: Site) -> None:
    cohort = uuid.uuid4().hex
    willing_family, refused_family = (f"W{uuid.uuid4().hex[:6]}", f"R{uuid.uuid4().hex[:6]}")
    willing = patient(site, willing_family, "MRN-7002")
    refused = patient(site, refused_family, "MRN-7003")
    kept = measured(site, willing, willing_family, cohort)
    left_out = measured(site, refused, refused_family, cohort)
    site.create(refusing(refused))
    headers = researcher(site)
    code = f"{COHORT}|{cohort}"

    found = site.get("Observation", headers, code=code, _include="Observation:subject")
    assert found.status_code == 200, found.text
    bundle = found.json()
    resources = {
        f"{e['resource']['resourceType']}/{e['resource']['id']}": e["resource"]
        for e in bundle.get("entry", [])
    }
    assert set(resources) == {f"Observation/{kept}", f"Patient/{willing}"}
    assert bundle["total"] == 1
    counted = site.get("Observation", headers, code=code, _summary="count").json()
    assert counted["total"] == 1
    record = resources[f"Observation/{kept}"]
    assert record["subject"] == {"reference": f"Patient/{willing}"}  # still links
    assert "identifier" not in record
    assert_deidentified(record, willing_family, "MRN-7002", f"A-{willing_family}")
    assert_deidentified(resources[f"Patient/{willing}"], willing_family, "MRN-7002")
    for secret in (refused_family, "MRN-7003", refused, left_out):
        assert secret not in found.text

    # the refusing patient is not there to research, read or searched
    assert site.get(f"Patient/{refused}", headers).status_code == 404
    assert site.get(f"Observation/{left_out}", headers).status_code == 404
    assert site.get("Patient", headers, _id=refused).json()["total"] == 0
    # and the refusal is about research only: their family doctor still reads them
    gp = site.user(f"Practitioner/{site.gp}")
    assert site.get(f"Observation/{left_out}", gp).status_code == 200
    both = site.get("Observation", gp, code=code).json()
    assert both["total"] == 2


def test_research_may_not_find_a_patient_by_what_it_does_not_see(site: Site) -> None:
    family = f"Jankauskiene{uuid.uuid4().hex[:6]}"
    ona = patient(site, family, "MRN-7004")
    measured(site, ona, family, uuid.uuid4().hex)
    headers = researcher(site)
    for path, query in (
        ("Patient", {"family": family}),
        ("Patient", {"identifier": "MRN-7004"}),
        ("Observation", {"subject:Patient.family": family}),
        ("Patient", {"_has:Observation:patient:identifier": f"A-{family}"}),
    ):
        answer = site.get(path, headers, **query)
        assert answer.status_code == 403, (path, query, answer.text)
        outcome = answer.json()
        issue = outcome["issue"][0]
        assert outcome["resourceType"] == "OperationOutcome"
        assert issue["details"]["coding"][0]["code"] == "MB-1031"
        assert issue["expression"] == [next(iter(query))]
        assert ona not in answer.text
    # POST _search carries its parameters in the body: refused the same
    posted = httpx.post(
        f"{site.server.fhir_base}/Patient/_search", data={"family": family}, headers=headers
    )
    assert posted.status_code == 403, posted.text
    # and so does a batch's search entry
    batch = httpx.post(site.server.fhir_base, headers=headers, json={
        "resourceType": "Bundle", "type": "batch",
        "entry": [{"request": {"method": "GET", "url": f"Patient?family={family}"}}],
    })  # fmt: skip
    assert batch.status_code == 200, batch.text
    assert batch.json()["entry"][0]["response"]["status"].startswith("403"), batch.text
    assert ona not in batch.text
    # by what it does see, research still searches, and a clinician searches by name
    assert site.get("Patient", headers, _id=ona).json()["total"] == 1
    assert site.get("Patient", headers, gender="female", _id=ona).json()["total"] == 1
    gp = site.get("Patient", site.user(f"Practitioner/{site.gp}"), family=family).json()
    assert [e["resource"]["id"] for e in gp["entry"]] == [ona]


def test_research_everything_and_history_are_de_identified(site: Site) -> None:
    family = f"Vaitkute{uuid.uuid4().hex[:6]}"
    ona = patient(site, family, "MRN-7005")
    record = measured(site, ona, family, uuid.uuid4().hex)
    headers = researcher(site)
    for path in (f"Patient/{ona}/$everything", f"Patient/{ona}/_history"):
        answer = site.get(path, headers)
        assert answer.status_code == 200, (path, answer.text)
        resources = [e["resource"] for e in answer.json()["entry"] if "resource" in e]
        assert resources, path
        for resource in resources:
            assert_deidentified(resource, family, "MRN-7005", f"A-{family}")
    everything = site.get(f"Patient/{ona}/$everything", headers).json()
    assert {e["resource"]["id"] for e in everything["entry"]} >= {ona, record}


def test_research_sees_no_images_on_dicomweb(site: Site) -> None:
    study = generate_uid()
    part = renamed("CT_small.dcm", study=study, patient_id=f"R{uuid.uuid4().hex[:10]}")
    stow(site.server, site.token("system/*.cruds", None), part)
    linked_patient(site.server, site.token("system/*.cruds", None), study)
    base = site.server.base_url

    def studies(headers: dict[str, str]) -> list[str]:
        answer = httpx.get(
            f"{base}/dicomweb/studies", params={"StudyInstanceUID": study}, headers=headers
        )
        assert answer.status_code in (200, 204), answer.text
        return [row["0020000D"]["Value"][0] for row in (answer.json() if answer.content else [])]

    metadata = f"{base}/dicomweb/studies/{study}/metadata"
    # the same user for break-the-glass sees the study; for research, not a row and
    # not its metadata
    glass = site.user("Practitioner/researcher", purpose="BTG")
    assert studies(glass) == [study]
    research = researcher(site)
    assert studies(research) == []
    assert httpx.get(metadata, headers=research).status_code == 404
    # while the study's FHIR ImagingStudy is readable de-identified
    imaging = site.get(f"ImagingStudy/{study}", research)
    assert imaging.status_code == 200, imaging.text
    assert PSEUDED in imaging.json()["meta"]["security"]
