"""History at instance, type and system level, with _since, _count and paging."""

from __future__ import annotations

import httpx

from tests.integration.test_fhir_crud import FHIR_JSON, create, patient


def test_instance_history_newest_first(fhir: httpx.Client, unique: str) -> None:
    body = create(fhir, patient(unique))
    for family in ("Kazlauskas", "Jankauskas"):
        body["name"][0]["family"] = family
        assert fhir.put(f"/Patient/{body['id']}", json=body, headers=FHIR_JSON).status_code == 200
    history = fhir.get(f"/Patient/{body['id']}/_history").json()
    assert history["type"] == "history"
    assert history["total"] == 3
    versions = [e["resource"]["meta"]["versionId"] for e in history["entry"]]
    assert versions == ["3", "2", "1"]
    assert [e["request"]["method"] for e in history["entry"]] == ["PUT", "PUT", "POST"]
    assert history["entry"][0]["response"]["etag"] == 'W/"3"'


def test_history_since_and_count_with_paging(fhir: httpx.Client, unique: str) -> None:
    body = create(fhir, patient(unique))
    since = fhir.get(f"/Patient/{body['id']}").json()["meta"]["lastUpdated"]
    for n in range(4):
        body["gender"] = ["male", "female", "other", "unknown"][n]
        fhir.put(f"/Patient/{body['id']}", json=body, headers=FHIR_JSON)
    url = f"/Patient/{body['id']}/_history"
    everything = fhir.get(url).json()
    assert everything["total"] == 5
    recent = fhir.get(url, params={"_since": since}).json()
    assert recent["total"] == 5  # _since is inclusive: version 1 was updated at `since`
    page = fhir.get(url, params={"_count": "2"}).json()
    assert [e["resource"]["meta"]["versionId"] for e in page["entry"]] == ["5", "4"]
    next_url = next(link["url"] for link in page["link"] if link["relation"] == "next")
    # a write after the first page does not shift the pages that follow
    body["gender"] = "male"
    fhir.put(f"/Patient/{body['id']}", json=body, headers=FHIR_JSON)
    second = httpx.get(next_url).json()
    assert [e["resource"]["meta"]["versionId"] for e in second["entry"]] == ["3", "2"]


def test_type_and_system_history(fhir: httpx.Client, unique: str) -> None:
    before = create(fhir, patient(unique))["meta"]["lastUpdated"]
    organization = create(fhir, {"resourceType": "Organization", "name": f"Klinika {unique}"})
    practitioner = create(fhir, {"resourceType": "Practitioner", "name": [{"family": "Ivanov"}]})
    by_type = fhir.get("/Organization/_history", params={"_since": before}).json()
    ids = {e["resource"]["id"] for e in by_type["entry"]}
    assert organization["id"] in ids
    assert all(e["resource"]["resourceType"] == "Organization" for e in by_type["entry"])
    system = fhir.get("/_history", params={"_since": before, "_count": "1000"}).json()
    urls = {e["fullUrl"].split("/fhir/")[1] for e in system["entry"]}
    assert {f"Organization/{organization['id']}", f"Practitioner/{practitioner['id']}"} <= urls


def test_bad_history_parameters(fhir: httpx.Client) -> None:
    assert fhir.get("/_history", params={"_since": "yesterday"}).status_code == 400
    assert fhir.get("/_history", params={"_count": "-1"}).status_code == 400
