"""Conditional create, update, delete and JSON Patch through the real server."""

from __future__ import annotations

import httpx

from tests.integration.test_fhir_crud import FHIR_JSON, SYSTEM, create, outcome_codes, patient

PATCH_JSON = {"Content-Type": "application/json-patch+json"}


def test_if_none_exist_creates_once(fhir: httpx.Client, unique: str) -> None:
    criteria = {"If-None-Exist": f"identifier={SYSTEM}|{unique}"}
    first = fhir.post("/Patient", json=patient(unique), headers={**FHIR_JSON, **criteria})
    assert first.status_code == 201
    second = fhir.post("/Patient", json=patient(unique), headers={**FHIR_JSON, **criteria})
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["meta"]["versionId"] == "1"


def test_if_none_exist_with_several_matches_is_412(fhir: httpx.Client, unique: str) -> None:
    create(fhir, patient(unique))
    create(fhir, patient(unique))
    response = fhir.post(
        "/Patient",
        json=patient(unique),
        headers={**FHIR_JSON, "If-None-Exist": f"identifier={SYSTEM}|{unique}"},
    )
    assert response.status_code == 412
    assert outcome_codes(response)[1] == "MB-1012"


def test_conditional_update_creates_then_updates(fhir: httpx.Client, unique: str) -> None:
    url = f"/Patient?identifier={SYSTEM}|{unique}"
    first = fhir.put(url, json=patient(unique), headers=FHIR_JSON)
    assert first.status_code == 201
    changed = patient(unique, family="Ёлкин")
    second = fhir.put(url, json=changed, headers=FHIR_JSON)
    assert second.status_code == 200
    assert second.json()["id"] == first.json()["id"]
    assert second.json()["meta"]["versionId"] == "2"
    assert second.json()["name"][0]["family"] == "Ёлкин"


def test_conditional_update_with_a_different_body_id_is_400(
    fhir: httpx.Client, unique: str
) -> None:
    create(fhir, patient(unique))
    response = fhir.put(
        f"/Patient?identifier={SYSTEM}|{unique}",
        json={**patient(unique), "id": "someone-else"},
        headers=FHIR_JSON,
    )
    assert response.status_code == 400
    assert outcome_codes(response)[1] == "MB-1008"


def test_conditional_update_matching_several_is_412(fhir: httpx.Client, unique: str) -> None:
    create(fhir, patient(unique))
    create(fhir, patient(unique))
    response = fhir.put(
        f"/Patient?identifier={SYSTEM}|{unique}", json=patient(unique), headers=FHIR_JSON
    )
    assert response.status_code == 412


def test_conditional_delete(fhir: httpx.Client, unique: str) -> None:
    body = create(fhir, patient(unique))
    response = fhir.delete(f"/Patient?identifier={SYSTEM}|{unique}")
    assert response.status_code == 204
    assert fhir.get(f"/Patient/{body['id']}").status_code == 410
    nothing = fhir.delete(f"/Patient?identifier={SYSTEM}|{unique}")
    assert nothing.status_code == 204


def test_unknown_criteria_parameter_is_an_outcome(fhir: httpx.Client, unique: str) -> None:
    response = fhir.post(
        "/Patient",
        json=patient(unique),
        headers={**FHIR_JSON, "If-None-Exist": "no-such-parameter=1"},
    )
    assert response.status_code == 400
    assert outcome_codes(response)[2] == ["no-such-parameter"]


def test_json_patch(fhir: httpx.Client, unique: str) -> None:
    body = create(fhir, patient(unique))
    operations = [
        {"op": "test", "path": "/birthDate", "value": "1980-01-01"},
        {"op": "replace", "path": "/birthDate", "value": "1981-02-03"},
        {"op": "add", "path": "/name/0/given/-", "value": "Petras"},
    ]
    response = fhir.patch(f"/Patient/{body['id']}", json=operations, headers=PATCH_JSON)
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["birthDate"] == "1981-02-03"
    assert patched["name"][0]["given"] == ["Jonas", "Petras"]
    assert patched["meta"]["versionId"] == "2"


def test_json_patch_failures(fhir: httpx.Client, unique: str) -> None:
    body = create(fhir, patient(unique))
    url = f"/Patient/{body['id']}"
    failed_test = [{"op": "test", "path": "/birthDate", "value": "2000-01-01"}]
    assert fhir.patch(url, json=failed_test, headers=PATCH_JSON).status_code == 422
    invalid_result = [{"op": "replace", "path": "/birthDate", "value": "not a date"}]
    response = fhir.patch(url, json=invalid_result, headers=PATCH_JSON)
    assert response.status_code == 422
    assert outcome_codes(response)[2] == ["Patient.birthDate"]
    changes_id = [{"op": "replace", "path": "/id", "value": "other"}]
    assert fhir.patch(url, json=changes_id, headers=PATCH_JSON).status_code == 422
    wrong_type = fhir.patch(url, json=failed_test, headers=FHIR_JSON)
    assert wrong_type.status_code == 415
    stale = fhir.patch(
        url,
        json=[{"op": "add", "path": "/gender", "value": "male"}],
        headers={**PATCH_JSON, "If-Match": 'W/"9"'},
    )
    assert stale.status_code == 412
    assert fhir.get(url).json()["meta"]["versionId"] == "1"


def test_conditional_patch(fhir: httpx.Client, unique: str) -> None:
    create(fhir, patient(unique))
    response = fhir.patch(
        f"/Patient?identifier={SYSTEM}|{unique}",
        json=[{"op": "add", "path": "/gender", "value": "female"}],
        headers=PATCH_JSON,
    )
    assert response.status_code == 200
    assert response.json()["gender"] == "female"
