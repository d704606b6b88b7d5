"""batch and transaction Bundles posted to the FHIR base of the real server."""

from __future__ import annotations

import base64
import json
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx

from tests.integration.test_search import FHIR_JSON, MRN, TAGS, find, make, person, tagged


def entry(method: str, url: str, resource: dict[str, Any] | None = None, **request: str) -> Any:
    item: dict[str, Any] = {"request": {"method": method, "url": url, **request}}
    if resource is not None:
        item["resource"] = resource
    return item


def post_bundle(fhir: httpx.Client, kind: str, entries: list[Any]) -> httpx.Response:
    document = {"resourceType": "Bundle", "type": kind, "entry": entries}
    return fhir.post("", json=document, headers=FHIR_JSON)


def observation(tag: str, subject: str, text: str = "weight") -> dict[str, Any]:
    return tagged(
        {
            "resourceType": "Observation",
            "status": "final",
            "code": {"text": text},
            "subject": {"reference": subject},
        },
        tag,
    )


def test_transaction_resolves_urn_uuid_and_conditional_references(
    fhir: httpx.Client, unique: str
) -> None:
    existing = make(fhir, person(unique, "Jonaitis", "Petras", f"{unique}-old"))
    patient_url = f"urn:uuid:{uuid.uuid4()}"
    new_patient = {
        "fullUrl": patient_url,
        **entry("POST", "Patient", person(unique, "Ivanova", "Anna", f"{unique}-new")),
    }
    entries = [
        entry("POST", "Observation", observation(unique, patient_url, "by urn")),
        new_patient,
        entry(
            "POST",
            "Observation",
            observation(unique, f"Patient?identifier={MRN}|{unique}-old", "by criteria"),
        ),
        entry("GET", f"Patient?identifier={MRN}|{unique}-old"),
    ]
    response = post_bundle(fhir, "transaction", entries)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["type"] == "transaction-response"
    statuses = [e["response"]["status"] for e in body["entry"]]
    assert statuses[:3] == ["201 Created"] * 3
    assert statuses[3] == "200 OK"
    for item in body["entry"][:3]:
        assert item["response"]["etag"] == 'W/"1"'
        assert item["response"]["lastModified"].endswith("Z")
        # the instant of the version stored, as the write said it
        assert item["response"]["lastModified"] == item["resource"]["meta"]["lastUpdated"]
        assert "/_history/1" in item["response"]["location"]
    created_patient = body["entry"][1]["resource"]["id"]
    by_urn = body["entry"][0]["resource"]
    assert by_urn["subject"]["reference"] == f"Patient/{created_patient}"
    assert body["entry"][2]["resource"]["subject"]["reference"] == f"Patient/{existing}"
    assert body["entry"][3]["resource"]["entry"][0]["resource"]["id"] == existing


def test_failed_transaction_leaves_nothing(fhir: httpx.Client, unique: str) -> None:
    existing = make(fhir, person(unique, "Stays", "Same", f"{unique}-keep"))
    # a second resource to delete: a PUT and a DELETE of one id overlap, which R4 refuses
    doomed = make(fhir, person(unique, "Stays", "Too", f"{unique}-doomed"))
    changed = person(unique, "Changed", "Name", f"{unique}-keep")
    changed["id"] = existing
    entries = [
        entry("POST", "Patient", person(unique, "Ghost", "One", f"{unique}-ghost")),
        entry("PUT", f"Patient/{existing}", changed),
        entry("DELETE", f"Patient/{doomed}"),
        entry("POST", "Observation", {"resourceType": "Observation", "status": "bogus"}),
    ]
    response = post_bundle(fhir, "transaction", entries)
    assert response.status_code in (400, 422)
    outcome = response.json()
    assert outcome["resourceType"] == "OperationOutcome"
    assert outcome["issue"][0]["expression"] == ["Bundle.entry[3]"]
    assert find(fhir, f"/Patient?identifier={MRN}|{unique}-ghost", unique) == []
    current = fhir.get(f"/Patient/{existing}").json()
    assert current["name"][0]["family"] == "Stays"
    assert current["meta"]["versionId"] == "1"
    history = fhir.get(f"/Patient/{existing}/_history").json()
    assert history["total"] == 1
    assert fhir.get(f"/Patient/{doomed}").status_code == 200


def test_concurrent_transactions_on_one_resource(
    fhir: httpx.Client, unique: str, server: Any
) -> None:
    target = make(fhir, person(unique, "Contended", "One", f"{unique}-c"))

    def attempt(n: int) -> int:
        update = person(unique, f"Writer{n}", "One", f"{unique}-c")
        update["id"] = target
        entries = [
            entry("POST", "Observation", observation(unique, f"Patient/{target}", f"w{n}")),
            entry("PUT", f"Patient/{target}", update, ifMatch='W/"1"'),
        ]
        with httpx.Client(base_url=server.fhir_base, timeout=60.0) as client:
            return post_bundle(client, "transaction", entries).status_code

    with ThreadPoolExecutor(max_workers=6) as pool:
        statuses = list(pool.map(attempt, range(6)))
    assert statuses.count(200) == 1, statuses
    # a loser either read the winner's version (412, If-Match fails) or read version 1
    # while the winner was committing, and lost at commit (409): never a second winner
    assert all(s in (409, 412) for s in statuses if s != 200), statuses
    observations = fhir.get(f"/Observation?_tag={TAGS}|{unique}&_count=50").json()
    assert observations["total"] == 1
    winner = observations["entry"][0]["resource"]["code"]["text"]
    patient = fhir.get(f"/Patient/{target}").json()
    assert patient["meta"]["versionId"] == "2"
    assert patient["name"][0]["family"] == f"Writer{winner[1:]}"


def test_batch_answers_each_entry(fhir: httpx.Client, unique: str) -> None:
    existing = make(fhir, person(unique, "Batch", "Kept", f"{unique}-b"))
    entries = [
        entry("POST", "Patient", person(unique, "Batch", "New", f"{unique}-b2")),
        entry("GET", f"Patient/{existing}"),
        entry("GET", "Patient/does-not-exist"),
        entry("POST", "Observation", {"resourceType": "Observation", "status": "bogus"}),
        entry(
            "POST",
            "Patient",
            person(unique, "Batch", "Dup", f"{unique}-b"),
            ifNoneExist=f"identifier={MRN}|{unique}-b",
        ),
        entry("DELETE", f"Patient/{existing}"),
    ]
    response = post_bundle(fhir, "batch", entries)
    assert response.status_code == 200
    results = response.json()["entry"]
    assert response.json()["type"] == "batch-response"
    assert [r["response"]["status"][:3] for r in results] == [
        "201",
        "200",
        "404",
        "422",
        "200",
        "204",
    ]
    assert results[2]["response"]["outcome"]["resourceType"] == "OperationOutcome"
    assert results[4]["resource"]["id"] == existing
    assert len(find(fhir, f"/Patient?identifier={MRN}|{unique}-b2", unique)) == 1


def test_bad_bundles_are_outcomes(fhir: httpx.Client) -> None:
    wrong_type = fhir.post(
        "", json={"resourceType": "Bundle", "type": "collection"}, headers=FHIR_JSON
    )
    assert wrong_type.status_code == 400
    assert wrong_type.json()["issue"][0]["expression"] == ["Bundle.type"]
    dangling = post_bundle(
        fhir,
        "transaction",
        [entry("POST", "Observation", observation("x", "urn:uuid:nowhere"))],
    )
    assert dangling.status_code == 400
    assert dangling.json()["resourceType"] == "OperationOutcome"


def test_capabilities_declare_bundles_and_generated_parameters(fhir: httpx.Client) -> None:
    rest = fhir.get("/metadata").json()["rest"][0]
    assert {"batch", "transaction"} <= {i["code"] for i in rest["interaction"]}
    study = next(r for r in rest["resource"] if r["type"] == "ImagingStudy")
    params = {p["name"]: p for p in study["searchParam"]}
    assert params["modality"]["definition"].endswith("/ImagingStudy-modality")
    assert params["patient"]["definition"].endswith("/clinical-patient")
    assert {"_id", "_lastUpdated", "_tag", "_profile", "_security", "started"} <= set(params)


def test_nested_bundle_in_a_transaction_is_refused(fhir: httpx.Client, unique: str) -> None:
    inner = {"resourceType": "Bundle", "type": "batch", "entry": []}
    response = post_bundle(
        fhir,
        "transaction",
        [
            entry("POST", "Patient", person(unique, "Nested", "Not", f"{unique}-n")),
            entry("POST", "/", inner),
        ],
    )
    assert response.status_code == 400
    assert find(fhir, f"/Patient?identifier={MRN}|{unique}-n", unique) == []


def test_transaction_with_all_four_methods_and_conditionals(
    fhir: httpx.Client, unique: str
) -> None:
    doomed = make(fhir, person(unique, "Doomed", "X", f"{unique}-d"))
    patched = make(fhir, person(unique, "Before", "Y", f"{unique}-p"))
    operations = [{"op": "replace", "path": "/gender", "value": "male"}]
    patch = {
        "resourceType": "Binary",
        "contentType": "application/json-patch+json",
        "data": base64.b64encode(json.dumps(operations).encode()).decode(),
    }
    replacement = person(unique, "Upserted", "Z", f"{unique}-u")
    entries = [
        entry("GET", f"Patient?identifier={MRN}|{unique}-u"),
        entry("PATCH", f"Patient/{patched}", patch),
        entry("PUT", f"Patient?identifier={MRN}|{unique}-u", replacement),
        entry("DELETE", f"Patient?identifier={MRN}|{unique}-d"),
    ]
    response = post_bundle(fhir, "transaction", entries)
    assert response.status_code == 200, response.text
    results = response.json()["entry"]
    assert [r["response"]["status"][:3] for r in results] == ["200", "200", "201", "204"]
    # GET ran last (the spec's order), so it sees the conditional PUT's new resource
    assert results[0]["resource"]["total"] == 1
    assert fhir.get(f"/Patient/{patched}").json()["gender"] == "male"
    assert fhir.get(f"/Patient/{doomed}").status_code == 410


def test_capabilities_declare_includes_and_everything(fhir: httpx.Client) -> None:
    rest = fhir.get("/metadata").json()["rest"][0]
    report = next(r for r in rest["resource"] if r["type"] == "DiagnosticReport")
    assert "DiagnosticReport:study" in report["searchInclude"]
    study = next(r for r in rest["resource"] if r["type"] == "ImagingStudy")
    assert "DiagnosticReport:study" in study["searchRevInclude"]
    assert (
        "DiagnosticReport:study"
        not in next(r for r in rest["resource"] if r["type"] == "Patient")["searchRevInclude"]
    )
    patient = next(r for r in rest["resource"] if r["type"] == "Patient")
    assert patient["operation"][0]["name"] == "everything"
