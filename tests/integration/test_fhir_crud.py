"""The FHIR REST core through a real HTTP server and the real embedded store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import httpx
import pytest

FHIR_JSON = {"Content-Type": "application/fhir+json"}
SYSTEM = "urn:oid:1.3.6.1.4.1.99999.1"


def patient(unique: str, family: str = "Šimkus") -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": SYSTEM, "value": unique}],
        "name": [{"family": family, "given": ["Jonas"]}],
        "birthDate": "1980-01-01",
    }


def create(fhir: httpx.Client, resource: dict[str, Any]) -> dict[str, Any]:
    response = fhir.post(f"/{resource['resourceType']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def outcome_codes(response: httpx.Response) -> tuple[str, str, list[str]]:
    """(issue code, MB catalog code, expressions) of an OperationOutcome answer."""
    body = response.json()
    assert body["resourceType"] == "OperationOutcome"
    issue = body["issue"][0]
    return issue["code"], issue["details"]["coding"][0]["code"], issue.get("expression", [])


def test_create_then_read_serves_the_stored_version(fhir: httpx.Client, unique: str) -> None:
    created = fhir.post("/Patient", json=patient(unique), headers=FHIR_JSON)
    assert created.status_code == 201
    body = created.json()
    assert body["meta"]["versionId"] == "1"
    assert body["meta"]["lastUpdated"].endswith("Z")
    assert created.headers["etag"] == 'W/"1"'
    assert created.headers["location"].endswith(f"/fhir/Patient/{body['id']}/_history/1")
    read = fhir.get(f"/Patient/{body['id']}")
    assert read.status_code == 200
    assert read.headers["content-type"].startswith("application/fhir+json")
    assert read.headers["etag"] == 'W/"1"'
    assert "last-modified" in read.headers
    assert read.json() == body
    assert read.json()["name"][0]["family"] == "Šimkus"


def test_create_ignores_a_client_id_and_assigns_its_own(fhir: httpx.Client, unique: str) -> None:
    body = create(fhir, {**patient(unique), "id": "chosen-by-client"})
    assert body["id"] != "chosen-by-client"


@pytest.mark.parametrize("media", ["application/fhir+json", "application/json", "*/*"])
def test_accepts_every_json_media_type(fhir: httpx.Client, unique: str, media: str) -> None:
    body = create(fhir, patient(unique))
    response = fhir.get(f"/Patient/{body['id']}", headers={"Accept": media})
    assert response.status_code == 200
    created = fhir.post("/Patient", json=patient(unique + "x"), headers={"Content-Type": media})
    assert created.status_code == 201


def test_update_versions_and_vread_serves_each_version(fhir: httpx.Client, unique: str) -> None:
    body = create(fhir, patient(unique))
    body["name"][0]["family"] = "Petraitienė"
    updated = fhir.put(f"/Patient/{body['id']}", json=body, headers=FHIR_JSON)
    assert updated.status_code == 200
    assert updated.headers["etag"] == 'W/"2"'
    assert updated.json()["meta"]["versionId"] == "2"
    first = fhir.get(f"/Patient/{body['id']}/_history/1").json()
    second = fhir.get(f"/Patient/{body['id']}/_history/2").json()
    assert first["name"][0]["family"] == "Šimkus"
    assert second["name"][0]["family"] == "Petraitienė"
    assert fhir.get(f"/Patient/{body['id']}/_history/3").status_code == 404


def test_update_creates_at_a_client_chosen_id(fhir: httpx.Client, unique: str) -> None:
    resource = {**patient(unique), "id": f"lt-{unique[:20]}"}
    response = fhir.put(f"/Patient/{resource['id']}", json=resource, headers=FHIR_JSON)
    assert response.status_code == 201
    assert response.headers["location"].endswith(f"/Patient/{resource['id']}/_history/1")


def test_delete_leaves_a_versioned_tombstone(fhir: httpx.Client, unique: str) -> None:
    body = create(fhir, patient(unique))
    deleted = fhir.delete(f"/Patient/{body['id']}")
    assert deleted.status_code == 204
    assert deleted.headers["etag"] == 'W/"2"'
    gone = fhir.get(f"/Patient/{body['id']}")
    assert gone.status_code == 410
    assert outcome_codes(gone)[:2] == ("deleted", "MB-1003")
    assert fhir.get(f"/Patient/{body['id']}/_history/1").status_code == 200
    history = fhir.get(f"/Patient/{body['id']}/_history").json()
    assert [e["request"]["method"] for e in history["entry"]] == ["DELETE", "POST"]
    assert "resource" not in history["entry"][0]
    again = fhir.delete(f"/Patient/{body['id']}")
    assert again.status_code == 204
    revived = fhir.put(f"/Patient/{body['id']}", json=body, headers=FHIR_JSON)
    assert revived.status_code == 201
    assert revived.json()["meta"]["versionId"] == "3"


def test_missing_resources_answer_404_with_an_outcome(fhir: httpx.Client, unique: str) -> None:
    response = fhir.get(f"/Patient/{unique}")
    assert response.status_code == 404
    assert outcome_codes(response)[:2] == ("not-found", "MB-1002")


def test_unsupported_type_answers_404_outcome(fhir: httpx.Client) -> None:
    response = fhir.get("/Medication/1")
    assert response.status_code == 404
    assert outcome_codes(response)[:2] == ("not-supported", "MB-1001")
    assert fhir.get("/NotAType").status_code == 404


def test_if_match_mismatch_is_412(fhir: httpx.Client, unique: str) -> None:
    body = create(fhir, patient(unique))
    stale = fhir.put(
        f"/Patient/{body['id']}", json=body, headers={**FHIR_JSON, "If-Match": 'W/"7"'}
    )
    assert stale.status_code == 412
    assert outcome_codes(stale)[1] == "MB-1010"
    fresh = fhir.put(
        f"/Patient/{body['id']}", json=body, headers={**FHIR_JSON, "If-Match": 'W/"1"'}
    )
    assert fresh.status_code == 200


def test_conditional_reads_answer_304(fhir: httpx.Client, unique: str) -> None:
    body = create(fhir, patient(unique))
    url = f"/Patient/{body['id']}"
    assert fhir.get(url, headers={"If-None-Match": 'W/"1"'}).status_code == 304
    assert fhir.get(url, headers={"If-None-Match": 'W/"0"'}).status_code == 200
    later = format_datetime(datetime.now(UTC) + timedelta(minutes=5), usegmt=True)
    earlier = format_datetime(datetime.now(UTC) - timedelta(days=1), usegmt=True)
    assert fhir.get(url, headers={"If-Modified-Since": later}).status_code == 304
    assert fhir.get(url, headers={"If-Modified-Since": earlier}).status_code == 200


def test_prefer_return(fhir: httpx.Client, unique: str) -> None:
    minimal = fhir.post(
        "/Patient", json=patient(unique), headers={**FHIR_JSON, "Prefer": "return=minimal"}
    )
    assert minimal.status_code == 201
    assert minimal.content == b""
    assert "/Patient/" in minimal.headers["location"]
    outcome = fhir.post(
        "/Patient",
        json=patient(unique + "b"),
        headers={**FHIR_JSON, "Prefer": "return=OperationOutcome"},
    )
    assert outcome.status_code == 201
    assert outcome.json()["resourceType"] == "OperationOutcome"
    assert outcome.json()["issue"][0]["severity"] == "information"


def test_pretty_and_format(fhir: httpx.Client, unique: str) -> None:
    body = create(fhir, patient(unique))
    pretty = fhir.get(f"/Patient/{body['id']}", params={"_pretty": "true"})
    assert pretty.text.startswith('{\n  "resourceType"')
    assert pretty.json() == body
    compact = fhir.get(f"/Patient/{body['id']}", params={"_format": "application/fhir+json"})
    assert "\n" not in compact.text
    xml = fhir.get(f"/Patient/{body['id']}", params={"_format": "xml"})
    assert xml.status_code == 406
    assert outcome_codes(xml)[2] == ["_format"]
    accept_xml = fhir.get(f"/Patient/{body['id']}", headers={"Accept": "application/fhir+xml"})
    assert accept_xml.status_code == 406


def test_xml_bodies_answer_415(fhir: httpx.Client) -> None:
    response = fhir.post(
        "/Patient",
        content=b'<Patient xmlns="http://hl7.org/fhir"/>',
        headers={"Content-Type": "application/fhir+xml"},
    )
    assert response.status_code == 415
    assert outcome_codes(response)[1] == "MB-1014"


@pytest.mark.parametrize(
    ("body", "code"),
    [
        (b"{not json", "MB-1005"),
        (b"[1, 2]", "MB-1005"),
        (b"", "MB-1019"),
        (b'{"resourceType": "Observation", "status": "final", "code": {"text": "x"}}', "MB-1007"),
    ],
)
def test_malformed_bodies_get_clear_outcomes(fhir: httpx.Client, body: bytes, code: str) -> None:
    response = fhir.post("/Patient", content=body, headers=FHIR_JSON)
    assert response.status_code == 400
    assert outcome_codes(response)[1] == code


def test_put_id_mismatch_is_400(fhir: httpx.Client, unique: str) -> None:
    resource = {**patient(unique), "id": "one"}
    response = fhir.put("/Patient/two", json=resource, headers=FHIR_JSON)
    assert response.status_code == 400
    assert outcome_codes(response) == ("invalid", "MB-1008", ["Patient.id"])


def test_invalid_resource_names_the_element(fhir: httpx.Client, unique: str) -> None:
    resource = patient(unique)
    resource["birthDate"] = "1980-13-45"
    resource["name"] = [{"given": "not-a-list"}]
    response = fhir.post("/Patient", json=resource, headers=FHIR_JSON)
    assert response.status_code == 422
    expressions = {i["expression"][0] for i in response.json()["issue"]}
    assert {"Patient.birthDate", "Patient.name[0].given"} <= expressions
    unknown = fhir.post("/Patient", json={**patient(unique), "colour": "red"}, headers=FHIR_JSON)
    assert unknown.status_code == 422
    assert outcome_codes(unknown) == ("structure", "MB-1006", ["Patient.colour"])


def test_profiles_require_imagingstudy_subject_and_uid(fhir: httpx.Client) -> None:
    study = {"resourceType": "ImagingStudy", "status": "available"}
    response = fhir.post("/ImagingStudy", json=study, headers=FHIR_JSON)
    assert response.status_code == 422
    expressions = {i["expression"][0] for i in response.json()["issue"]}
    assert expressions == {"ImagingStudy.subject", "ImagingStudy.identifier"}
    study["subject"] = {"reference": "Patient/x"}
    study["identifier"] = [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3.4"}]
    assert fhir.post("/ImagingStudy", json=study, headers=FHIR_JSON).status_code == 201


def test_profiles_require_consent_provision_or_policy(fhir: httpx.Client) -> None:
    consent = {
        "resourceType": "Consent",
        "status": "active",
        "scope": {
            "coding": [
                {
                    "system": "http://terminology.hl7.org/CodeSystem/consentscope",
                    "code": "patient-privacy",
                }
            ]
        },
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": "Patient/x"},
    }
    response = fhir.post("/Consent", json=consent, headers=FHIR_JSON)
    assert response.status_code == 422
    assert outcome_codes(response)[2] == ["Consent.provision"]
    consent["provision"] = {"type": "deny"}
    assert fhir.post("/Consent", json=consent, headers=FHIR_JSON).status_code == 201


def test_invalid_ids_are_refused(fhir: httpx.Client, unique: str) -> None:
    resource = {**patient(unique), "id": "x" * 65}
    response = fhir.put(f"/Patient/{'x' * 65}", json=resource, headers=FHIR_JSON)
    assert response.status_code in (400, 422)
    assert response.json()["resourceType"] == "OperationOutcome"


def test_method_not_allowed_is_an_outcome(fhir: httpx.Client, unique: str) -> None:
    body = create(fhir, patient(unique))
    response = fhir.post(f"/Patient/{body['id']}", json=body, headers=FHIR_JSON)
    assert response.status_code == 405
    assert outcome_codes(response)[1] == "MB-1013"


def test_paths_outside_fhir_answer_outcomes(server: Any) -> None:
    response = httpx.get(f"{server.base_url}/nothing-here")
    assert response.status_code == 404
    assert response.json()["resourceType"] == "OperationOutcome"
