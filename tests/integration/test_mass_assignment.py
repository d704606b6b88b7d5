"""Mass assignment (issue 14, "Hardening"): what a client writes into the parts of a
resource the server owns is not taken, over real HTTP with auth on.

- `meta.security`, and `meta.tag` codings of the security-label code systems, are the
  server's (fhir_server/server_meta.py): dropped on create, kept from the replaced
  version on update, patch and bundle entries; ordinary tags are the client's.
- `id` on create is the server's; `meta.versionId` and `meta.lastUpdated` always are.
- a patient token cannot write a resource into another patient's compartment: create,
  update, PATCH, transaction and batch entries, by `subject` or by `performer`.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import orjson
import pytest
from joserfc.jwk import ECKey

from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_smart_enforce import ISSUER, Minter, bearer
from tests.support.every_door import settled
from tests.support.servers import IsolatedStore, RunningServer, start_server

pytestmark = pytest.mark.integration

FHIR_JSON = "application/fhir+json"
CONFIDENTIALITY = "http://terminology.hl7.org/CodeSystem/v3-Confidentiality"
LABEL = {"system": CONFIDENTIALITY, "code": "N"}  # "normal": a label a client might claim
LABEL_TAG = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "PSY"}
ORDINARY_TAG = {"system": "https://example.org/workflow", "code": "reviewed"}


@dataclass
class World:
    server: RunningServer
    store_uri: str
    system: dict[str, str]
    token: dict[str, str]  # patient/*.cruds for alice
    alice: str
    bob: str


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[World]:
    root = tmp_path_factory.mktemp("mass")
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    jwks = root / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    env = {"MEDBRIDGE_AUTH_ISSUER": ISSUER, "MEDBRIDGE_AUTH_JWKS": str(jwks)}
    server = start_server(root / "server", store.uri, env=env, auth=True)
    try:
        minter = Minter(key, server.fhir_base)
        system = bearer(minter.token("system/*.cruds"))
        alice, bob = (_send(server, system, "POST", "Patient", {"resourceType": "Patient",
                      "name": [{"family": name}]}).json()["id"]
                      for name in ("Alice", "Bob"))  # fmt: skip
        token = bearer(minter.token("patient/*.cruds", alice))
        yield World(server, store.uri, system, token, alice, bob)
    finally:
        server.stop()


def _send(
    server: RunningServer, headers: dict[str, str], method: str, path: str, body: Any,
    content_type: str = FHIR_JSON,
) -> httpx.Response:  # fmt: skip
    return httpx.request(method, f"{server.fhir_base}/{path}".rstrip("/"),
                         headers={**headers, "content-type": content_type},
                         content=orjson.dumps(body), timeout=30)  # fmt: skip


def observation(patient: str, **extra: Any) -> dict[str, Any]:
    return {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
            "subject": {"reference": f"Patient/{patient}"}, **extra}  # fmt: skip


def claimed_meta() -> dict[str, Any]:
    return {"versionId": "99", "lastUpdated": "2001-01-01T00:00:00Z", "security": [LABEL],
            "tag": [LABEL_TAG, ORDINARY_TAG]}  # fmt: skip


def read(world: World, reference: str) -> dict[str, Any]:
    answer = httpx.get(f"{world.server.fhir_base}/{reference}", headers=world.system)
    assert answer.status_code == 200, answer.text
    loaded: dict[str, Any] = answer.json()
    return loaded


def assert_server_meta(resource: dict[str, Any], version: str) -> None:
    meta = resource["meta"]
    assert meta["versionId"] == version
    assert not meta["lastUpdated"].startswith("2001")
    assert "security" not in meta
    assert meta["tag"] == [ORDINARY_TAG]


@pytest.mark.parametrize("who", ["system", "patient"])
def test_create_takes_no_id_version_or_security_label(world: World, who: str) -> None:
    headers = world.system if who == "system" else world.token
    chosen = f"chosen-{uuid.uuid4().hex[:8]}"
    answer = _send(world.server, headers, "POST", "Observation",
                   observation(world.alice, id=chosen, meta=claimed_meta()))  # fmt: skip
    assert answer.status_code == 201, answer.text
    created = answer.json()
    assert created["id"] != chosen
    assert_server_meta(created, "1")
    assert_server_meta(read(world, f"Observation/{created['id']}"), "1")
    missing = httpx.get(f"{world.server.fhir_base}/Observation/{chosen}", headers=world.system)
    assert missing.status_code == 404


def test_update_and_patch_keep_the_labels_of_the_stored_version(world: World) -> None:
    created = _send(world.server, world.system, "POST", "Observation", observation(world.alice))
    rid = created.json()["id"]
    updated = _send(world.server, world.token, "PUT", f"Observation/{rid}",
                    observation(world.alice, id=rid, meta=claimed_meta()))  # fmt: skip
    assert updated.status_code == 200, updated.text
    assert_server_meta(read(world, f"Observation/{rid}"), "2")
    patched = _send(world.server, world.token, "PATCH", f"Observation/{rid}", [
        {"op": "add", "path": "/meta/security", "value": [LABEL]},
        {"op": "add", "path": "/meta/tag/-", "value": LABEL_TAG},
        {"op": "replace", "path": "/meta/versionId", "value": "77"},
    ], "application/json-patch+json")  # fmt: skip
    assert patched.status_code == 200, patched.text
    assert_server_meta(read(world, f"Observation/{rid}"), "3")


def test_bundle_entries_take_no_id_or_security_label(world: World) -> None:
    chosen = f"chosen-{uuid.uuid4().hex[:8]}"
    put_id = f"put-{uuid.uuid4().hex[:8]}"
    bundle = {"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": f"urn:uuid:{uuid.uuid4()}",
         "resource": observation(world.alice, id=chosen, meta=claimed_meta()),
         "request": {"method": "POST", "url": "Observation"}},
        {"resource": observation(world.alice, id=put_id, meta=claimed_meta()),
         "request": {"method": "PUT", "url": f"Observation/{put_id}"}},
    ]}  # fmt: skip
    answer = _send(world.server, world.system, "POST", "", bundle)
    assert answer.status_code == 200, answer.text
    locations = [e["response"]["location"] for e in answer.json()["entry"]]
    posted = locations[0].split("/_history/")[0].rsplit("/", 2)[-1]
    assert posted != chosen
    assert_server_meta(read(world, f"Observation/{posted}"), "1")
    assert_server_meta(read(world, f"Observation/{put_id}"), "1")


def test_patient_token_writes_nothing_into_another_patient(world: World) -> None:
    own = _send(world.server, world.system, "POST", "Observation", observation(world.alice))
    rid = own.json()["id"]
    bob = {"reference": f"Patient/{world.bob}"}
    patch = orjson.dumps([{"op": "replace", "path": "/subject", "value": bob}])
    binary = {"resourceType": "Binary", "contentType": "application/json-patch+json",
              "data": base64.b64encode(patch).decode()}  # fmt: skip
    before = settled(world.server, world.store_uri)
    refused = [
        _send(world.server, world.token, "POST", "Observation", observation(world.bob)),
        _send(world.server, world.token, "POST", "Observation",
              observation(world.alice, performer=[bob])),
        _send(world.server, world.token, "PUT", f"Observation/{rid}",
              observation(world.bob, id=rid)),
        _send(world.server, world.token, "PATCH", f"Observation/{rid}",
              orjson.loads(patch), "application/json-patch+json"),
        _send(world.server, world.token, "POST", "Encounter", {
            "resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"},
            "subject": bob}),
        _send(world.server, world.token, "POST", "", {
            "resourceType": "Bundle", "type": "transaction", "entry": [
                {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": observation(world.alice),
                 "request": {"method": "POST", "url": "Observation"}},
                {"fullUrl": f"urn:uuid:{uuid.uuid4()}", "resource": observation(world.bob),
                 "request": {"method": "POST", "url": "Observation"}}]}),
        _send(world.server, world.token, "POST", "", {
            "resourceType": "Bundle", "type": "transaction", "entry": [
                {"resource": binary, "request": {"method": "PATCH", "url": f"Observation/{rid}"}}
            ]}),
    ]  # fmt: skip
    for answer in refused:
        assert answer.status_code == 403, (answer.request.content[:200], answer.text)
        outcome = answer.json()
        assert outcome["resourceType"] == "OperationOutcome"
        code = outcome["issue"][0]["details"]["coding"][0]["code"]
        # a transaction answers MB-1101 with the failed entry's status (its diagnostics
        # name the entry's refusal)
        assert code in {"MB-1254", "MB-1030", "MB-1101"}, outcome
    batch = _send(
        world.server,
        world.token,
        "POST",
        "",
        {
            "resourceType": "Bundle",
            "type": "batch",
            "entry": [
                {
                    "resource": observation(world.bob),
                    "request": {"method": "POST", "url": "Observation"},
                },
                {"resource": binary, "request": {"method": "PATCH", "url": f"Observation/{rid}"}},
            ],
        },
    )
    assert batch.status_code == 200, batch.text
    statuses = [e["response"]["status"] for e in batch.json()["entry"]]
    assert all(s.startswith("403") for s in statuses), statuses
    assert settled(world.server, world.store_uri) == before
    assert read(world, f"Observation/{rid}")["subject"]["reference"] == f"Patient/{world.alice}"
