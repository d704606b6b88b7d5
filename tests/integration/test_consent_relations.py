"""The Consent cache holds what the engine reads of a patient and of a signed-in user
(consent/cache.py); a write of any of it takes effect on the very next request: a changed
Patient.generalPractitioner, a new PractitionerRole, a RelatedPerson made inactive. Each
step first reads as the user, so the cache holds the old facts when the write comes.

Over real HTTP with auth on and `MEDBRIDGE_CONSENT_CARE_RELATIONSHIP_REQUIRED=true`
(the site of test_consent_engine): a clinician sees a patient's records only with a care
relationship."""

from __future__ import annotations

from typing import Any

import httpx

from tests.integration.test_consent_engine import Site, chart, site, visible  # noqa: F401


def replace_resource(where: Site, resource: dict[str, Any]) -> None:
    url = f"{where.server.fhir_base}/{resource['resourceType']}/{resource['id']}"
    answer = httpx.put(url, json=resource, headers=where.system())
    assert answer.status_code == 200, answer.text


def test_a_new_family_doctor_holds_on_the_next_request(site: Site) -> None:  # noqa: F811
    mine = chart(site)  # the family doctor is site.gp
    gp = site.user(f"Practitioner/{site.gp}")
    stranger = site.user(f"Practitioner/{site.stranger}")
    assert site.get(f"Observation/{mine.lab}", gp).status_code == 200
    assert site.get(f"Observation/{mine.lab}", stranger).status_code == 404

    patient = httpx.get(f"{site.server.fhir_base}/Patient/{mine.patient}", headers=site.system())
    moved = {
        **patient.json(),
        "generalPractitioner": [{"reference": f"Practitioner/{site.stranger}"}],
    }
    replace_resource(site, moved)
    assert site.get(f"Observation/{mine.lab}", stranger).status_code == 200
    assert visible(site, stranger, mine.patient) == ({mine.lab, mine.vitals}, 2, 2)
    assert site.get(f"Observation/{mine.lab}", gp).status_code == 404
    assert visible(site, gp, mine.patient) == (set(), 0, 0)


def test_a_new_practitioner_role_holds_on_the_next_request(site: Site) -> None:  # noqa: F811
    """The Observations were performed by the clinic: a role there is a care
    relationship (rule 1, the record's organization), and it is read per user."""
    mine = chart(site)
    newcomer = site.create({"resourceType": "Practitioner", "name": [{"family": "Newcomer"}]})
    headers = site.user(f"Practitioner/{newcomer}")
    assert site.get(f"Observation/{mine.vitals}", headers).status_code == 404
    role = {
        "resourceType": "PractitionerRole", "active": True,
        "practitioner": {"reference": f"Practitioner/{newcomer}"},
        "organization": {"reference": f"Organization/{site.clinic}"},
    }  # fmt: skip
    role_id = site.create(role)
    assert site.get(f"Observation/{mine.vitals}", headers).status_code == 200
    replace_resource(site, {**role, "id": role_id, "active": False})
    assert site.get(f"Observation/{mine.vitals}", headers).status_code == 404


def test_an_inactive_related_person_loses_access_on_the_next_request(
    site: Site,  # noqa: F811
) -> None:
    mine = chart(site)
    child = {
        **httpx.get(
            f"{site.server.fhir_base}/Patient/{mine.patient}", headers=site.system()
        ).json(),
        "birthDate": "2016-01-01",
    }
    replace_resource(site, child)
    mother = {
        "resourceType": "RelatedPerson", "active": True,
        "patient": {"reference": f"Patient/{mine.patient}"},
        "relationship": [{"coding": [{
            "system": "http://terminology.hl7.org/CodeSystem/v3-RoleCode", "code": "MTH",
        }]}],
    }  # fmt: skip
    mother_id = site.create(mother)
    headers = site.user(f"RelatedPerson/{mother_id}")
    assert site.get(f"Observation/{mine.lab}", headers).status_code == 200
    replace_resource(site, {**mother, "id": mother_id, "active": False})
    assert site.get(f"Observation/{mine.lab}", headers).status_code == 404
