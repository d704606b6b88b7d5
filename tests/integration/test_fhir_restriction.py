"""An authorize hook that narrows the FHIR door to one patient
(`Exchange.narrow(Restriction(patients=...))`) limits every read shape of a real server
and refuses every write outside it, over real HTTP.

The hook is tests/support/access_hooks.py (`{"fhir_only": [...]}`), loaded by the server
through `MEDBRIDGE_EXTRA_HOOKS`; the test rewrites the rule file between calls, and
writes its data with the rule empty. Alice is the allowed patient, Bob the other; the
Organization both belong to holds no patient data and stays visible."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.support.servers import RunningServer, start_server

FHIR_JSON = {"Content-Type": "application/fhir+json"}


@dataclass
class Site:
    server: RunningServer
    rule: Path
    alice: str
    bob: str
    organization: str
    alice_observations: list[str]  # three, the first has Bob's first as a member
    bob_observations: list[str]  # two

    def set_rule(self, **rule: Any) -> None:
        self.rule.write_bytes(orjson.dumps(rule))

    def only_alice(self) -> None:
        self.set_rule(fhir_only=[self.alice])

    def url(self, path: str) -> str:
        return f"{self.server.fhir_base}/{path}"

    def get(self, path: str, **params: str) -> httpx.Response:
        return httpx.get(self.url(path), params=params, timeout=60.0)

    def send(self, method: str, path: str, body: Any, **headers: str) -> httpx.Response:
        return httpx.request(
            method,
            self.url(path),
            content=orjson.dumps(body),
            headers={**FHIR_JSON, **headers},
            timeout=60.0,
        )

    def bundle(self, path: str, **params: str) -> dict[str, Any]:
        answer = self.get(path, **params)
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found


def observation(patient: str, text: str, member: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": text},
        "subject": {"reference": f"Patient/{patient}"},
    }
    if member is not None:
        resource["hasMember"] = [{"reference": f"Observation/{member}"}]
    return resource


def references(bundle: dict[str, Any], mode: str | None = None) -> set[str]:
    return {
        "/".join(entry["fullUrl"].rsplit("/", 2)[-2:])
        for entry in bundle.get("entry", [])
        if mode is None or entry.get("search", {}).get("mode") == mode
    }


def code_of(answer: httpx.Response) -> str:
    body = answer.json()
    assert body["resourceType"] == "OperationOutcome", body
    return str(body["issue"][0]["details"]["coding"][0]["code"])


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, store: Any) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("fhir-restriction")
    rule = root / "rule.json"
    rule.write_bytes(b"{}")
    server = start_server(
        root / "server",
        store.uri,
        env={
            "MEDBRIDGE_EXTRA_HOOKS": "tests.support.access_hooks:hooks",
            "MEDBRIDGE_TEST_ACCESS_FILE": str(rule),
        },
    )
    try:
        yield populated(server, rule)
    finally:
        server.stop()


def populated(server: RunningServer, rule: Path) -> Site:
    run = uuid.uuid4().hex[:10]
    site = Site(server, rule, f"alice-{run}", f"bob-{run}", f"acme-{run}", [], [])
    organization = {"resourceType": "Organization", "id": site.organization, "name": "Acme"}
    assert site.send("PUT", f"Organization/{site.organization}", organization).status_code == 201
    for patient in (site.alice, site.bob):
        resource = {
            "resourceType": "Patient",
            "id": patient,
            "name": [{"family": f"Restricted{run}"}],
            "managingOrganization": {"reference": f"Organization/{site.organization}"},
        }
        assert site.send("PUT", f"Patient/{patient}", resource).status_code == 201
    for n in range(2):
        created = site.send("POST", "Observation", observation(site.bob, f"bob {n}"))
        assert created.status_code == 201, created.text
        site.bob_observations.append(created.json()["id"])
    for n in range(3):
        member = site.bob_observations[0] if n == 0 else None
        created = site.send("POST", "Observation", observation(site.alice, f"alice {n}", member))
        assert created.status_code == 201, created.text
        site.alice_observations.append(created.json()["id"])
    # a second version of one of each, for history
    for patient, observation_id in (
        (site.alice, site.alice_observations[1]),
        (site.bob, site.bob_observations[1]),
    ):
        changed = {**observation(patient, "amended"), "id": observation_id}
        assert site.send("PUT", f"Observation/{observation_id}", changed).status_code == 200
    return site


@pytest.fixture
def alice_only(site: Site) -> Iterator[Site]:
    site.only_alice()
    try:
        yield site
    finally:
        site.set_rule()


def test_without_a_rule_both_patients_are_seen(site: Site) -> None:
    site.set_rule()
    found = site.bundle("Observation", subject=f"Patient/{site.alice},Patient/{site.bob}")
    assert found["total"] == 5


def test_read_and_vread_outside_answer_as_a_missing_resource(alice_only: Site) -> None:
    site = alice_only
    missing = site.get("Patient/no-such-patient")
    assert (missing.status_code, code_of(missing)) == (404, "MB-1002")
    for path in (
        f"Patient/{site.bob}",
        f"Patient/{site.bob}/_history/1",
        f"Observation/{site.bob_observations[0]}",
        f"Observation/{site.bob_observations[1]}/_history/2",
    ):
        answer = site.get(path)
        assert (answer.status_code, code_of(answer)) == (404, "MB-1002"), path
    for path in (
        f"Patient/{site.alice}",
        f"Patient/{site.alice}/_history/1",
        f"Observation/{site.alice_observations[0]}",
        f"Organization/{site.organization}",  # no patient data: not narrowed
    ):
        assert site.get(path).status_code == 200, path


def test_search_totals_paging_and_count_see_only_the_allowed_patient(alice_only: Site) -> None:
    site = alice_only
    everyone = f"Patient/{site.alice},Patient/{site.bob}"
    first = site.bundle("Observation", subject=everyone, _count="2")
    assert first["total"] == 3
    assert references(first) <= {f"Observation/{i}" for i in site.alice_observations}
    (next_url,) = [link["url"] for link in first["link"] if link["relation"] == "next"]
    second = httpx.get(next_url, timeout=60.0).json()
    assert second["total"] == 3
    assert not [link for link in second["link"] if link["relation"] == "next"]
    shown = references(first) | references(second)
    assert shown == {f"Observation/{i}" for i in site.alice_observations}
    counted = site.bundle("Observation", subject=everyone, _summary="count")
    assert (counted["total"], counted.get("entry", [])) == (3, [])
    patients = site.bundle("Patient", family=site.alice.replace("alice-", "Restricted"))
    assert references(patients) == {f"Patient/{site.alice}"}
    assert patients["total"] == 1
    # a search naming only the other patient finds nothing, and says so
    assert site.bundle("Observation", subject=f"Patient/{site.bob}")["total"] == 0
    assert site.bundle(f"Patient/{site.bob}/Observation")["total"] == 0
    assert site.bundle(f"Patient/{site.alice}/Observation")["total"] == 3
    organizations = site.bundle("Organization", _id=site.organization)
    assert references(organizations) == {f"Organization/{site.organization}"}


def test_includes_and_revincludes_are_filtered(alice_only: Site) -> None:
    site = alice_only
    with_member = site.bundle(
        "Observation", _id=site.alice_observations[0], _include="Observation:has-member"
    )
    assert references(with_member, "match") == {f"Observation/{site.alice_observations[0]}"}
    assert references(with_member, "include") == set()  # Bob's observation is left out
    site.set_rule()
    unrestricted = site.bundle(
        "Observation", _id=site.alice_observations[0], _include="Observation:has-member"
    )
    assert references(unrestricted, "include") == {f"Observation/{site.bob_observations[0]}"}
    # a chain's inner search is restricted too: no test of a hidden record's content
    chained = {"has-member:Observation.code:text": "bob 0"}
    site.only_alice()
    assert references(site.bundle("Observation", **chained)) == set()
    site.set_rule()
    assert references(site.bundle("Observation", **chained)) == {
        f"Observation/{site.alice_observations[0]}"
    }
    site.only_alice()
    members = site.bundle("Organization", _id=site.organization, _revinclude="Patient:organization")
    assert references(members, "include") == {f"Patient/{site.alice}"}
    reports = site.bundle("Patient", _id=site.alice, _revinclude="Observation:subject")
    assert references(reports, "include") == {f"Observation/{i}" for i in site.alice_observations}


def test_history_at_every_level_is_filtered(alice_only: Site) -> None:
    site = alice_only
    missing = site.bundle("Observation/no-such-observation/_history")
    hidden = site.bundle(f"Observation/{site.bob_observations[1]}/_history")
    assert (hidden["total"], hidden.get("entry", [])) == (missing["total"], []) == (0, [])
    own = site.bundle(f"Observation/{site.alice_observations[1]}/_history")
    assert own["total"] == 2
    by_type = site.bundle("Observation/_history", _count="1000")
    bob = {f"Observation/{i}" for i in site.bob_observations}
    assert not references(by_type) & bob
    alice = {f"Observation/{i}" for i in site.alice_observations}
    assert alice <= references(by_type)
    # the total counts only the versions shown (this module's store holds other tests'
    # data too, so compare with the pages rather than a fixed number)
    assert by_type["total"] == len(by_type["entry"])
    system = site.bundle("_history", _count="1000")
    assert not references(system) & (bob | {f"Patient/{site.bob}"})
    assert {f"Patient/{site.alice}", f"Organization/{site.organization}"} <= references(system)
    assert system["total"] == len(system["entry"])


def test_everything_of_another_patient_is_not_found(alice_only: Site) -> None:
    site = alice_only
    hidden = site.get(f"Patient/{site.bob}/$everything")
    assert (hidden.status_code, code_of(hidden)) == (404, "MB-1002")
    own = site.bundle(f"Patient/{site.alice}/$everything")
    assert references(own) == {
        f"Patient/{site.alice}",
        *(f"Observation/{i}" for i in site.alice_observations),
    }


def test_bundle_entries_get_the_bundle_restriction(alice_only: Site) -> None:
    site = alice_only

    def entry(method: str, url: str, resource: Any = None) -> dict[str, Any]:
        found: dict[str, Any] = {"request": {"method": method, "url": url}}
        if resource is not None:
            found["resource"] = resource
        return found

    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            entry("GET", f"Patient/{site.bob}"),
            entry("GET", f"Patient/{site.alice}"),
            entry("GET", f"Observation?subject=Patient/{site.bob}"),
            entry("POST", "Observation", observation(site.bob, "batch")),
        ],
    }
    answer = site.send("POST", "", batch)
    assert answer.status_code == 200, answer.text
    entries = answer.json()["entry"]
    statuses = [e["response"]["status"].split()[0] for e in entries]
    assert statuses == ["404", "200", "200", "403"]
    assert entries[2]["resource"]["total"] == 0
    transaction = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            entry("POST", "Observation", observation(site.alice, "transaction ok")),
            entry("POST", "Observation", observation(site.bob, "transaction refused")),
        ],
    }
    refused = site.send("POST", "", transaction)
    assert refused.status_code == 403, refused.text
    site.set_rule()
    for text in ("batch", "transaction ok", "transaction refused"):
        assert site.bundle("Observation", **{"code:text": text})["total"] == 0, text


def test_writes_outside_are_refused_and_nothing_is_written(alice_only: Site) -> None:
    site = alice_only
    bob_observation = site.bob_observations[0]
    alice_observation = site.alice_observations[2]
    moved = {**observation(site.bob, "moved"), "id": alice_observation}
    patch = [{"op": "replace", "path": "/status", "value": "amended"}]
    long = {"note": [{"text": "x" * 20_000}]}
    refusals = [
        site.send("POST", "Observation", observation(site.bob, "created outside")),
        site.send("POST", "Patient", {"resourceType": "Patient"}),  # a new patient
        site.send(
            "PUT", f"Observation/{bob_observation}",
            {**observation(site.bob, "changed"), "id": bob_observation},
        ),
        site.send("PUT", f"Observation/{alice_observation}", moved),  # to another patient
        site.send("PATCH", f"Observation/{bob_observation}", patch,
                  **{"Content-Type": "application/json-patch+json"}),
        httpx.delete(site.url(f"Observation/{bob_observation}"), timeout=60.0),
        httpx.delete(site.url(f"Patient/{site.bob}"), timeout=60.0),
        # a body from 16 KiB: the patients it names are found on the body worker
        site.send("POST", "Observation", {**observation(site.bob, "created outside"), **long}),
        site.send("PUT", f"Observation/{alice_observation}", {**moved, **long}),
    ]  # fmt: skip
    for answer in refusals:
        assert (answer.status_code, code_of(answer)) == (403, "MB-1030"), answer.text
    # the element that would link the record to another patient
    assert refusals[3].json()["issue"][0]["expression"] == ["Observation.subject"]
    allowed = site.send("POST", "Observation", observation(site.alice, "created inside"))
    assert allowed.status_code == 201, allowed.text
    removed = httpx.delete(site.url(f"Observation/{allowed.json()['id']}"), timeout=60.0)
    assert removed.status_code == 204  # so the other tests' counts stay as populated
    site.set_rule()
    assert site.bundle("Observation", **{"code:text": "created outside"})["total"] == 0
    assert site.bundle("Patient", _id=site.bob)["total"] == 1
    assert site.get(f"Observation/{bob_observation}").json()["meta"]["versionId"] == "1"
    kept = site.get(f"Observation/{alice_observation}").json()
    assert (kept["meta"]["versionId"], kept["subject"]["reference"]) == (
        "1",
        f"Patient/{site.alice}",
    )


def test_a_deny_hook_answers_access_denied(site: Site) -> None:
    site.set_rule(fhir_deny=True)
    try:
        answer = site.get(f"Patient/{site.alice}")
    finally:
        site.set_rule()
    assert (answer.status_code, code_of(answer)) == (403, "MB-1030")
    assert answer.json()["issue"][0]["code"] == "forbidden"
