"""Sign-ins and token issues are audited (issue 15), in the same chain as every access:
a Login (DCM 110114/110122) per sign-in, success or failure, naming the user only when
an account has that name; a Get Access Token (IHE IUA ITI-71) per token, naming client,
user, grant type, scopes and the token's `jti`, never the token. An unwritable audit
store fails both closed: no sign-in, no token.

Real server processes, real HTTP (httpx as the browser and the app), the events read
back from the store with pymongo."""

from __future__ import annotations

import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from joserfc.jwk import ECKey
from pymongo import MongoClient

from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration import test_smart_server
from tests.integration.test_smart_server import (
    PASSWORD,
    Realm,
    _fields,
    assertion,
    authorize_params,
    backend_token,
    exchange,
    get_code,
    introspect,
    medbridge,
    new_verifier,
)
from tests.support.servers import RunningServer, start_server

pytestmark = pytest.mark.integration
shared_realm = test_smart_server.realm  # that module's fixture, registered here too


@pytest.fixture(scope="module")
def realm(shared_realm: Realm) -> Realm:
    """test_smart_server.py's accounts and clients, registered on this module's server."""
    return shared_realm


Event = dict[str, Any]
DCM = "http://dicom.nema.org/resources/ontology/DCM"


def stored(server: RunningServer, uri: str | None = None) -> list[Event]:
    with MongoClient(uri or server.mongodb_uri) as client:
        found = client[server.database]["AuditEvent"].find({}, {"raw": 1}).sort("_id", 1)
        return [orjson.loads(doc["raw"]) for doc in found]


def logins(events: list[Event]) -> list[Event]:
    return [e for e in events if e["type"]["code"] == "110114" and
            e["subtype"][0]["code"] == "110122"]  # fmt: skip


def token_events(events: list[Event]) -> list[Event]:
    return [e for e in events if e["subtype"][0]["code"] == "ITI-71"]


def requestor(event: Event) -> Event:
    [agent] = [a for a in event["agent"] if a["requestor"]]
    return agent


def sign_in(realm: Realm, user: str, password: str, timeout: float = 30) -> httpx.Response:
    with httpx.Client(base_url=realm.base, timeout=timeout) as browser:
        page = browser.get("/auth/authorize", params=authorize_params(realm, new_verifier()))
        assert page.status_code == 200, page.text
        fields = {**_fields(page.text), "username": user, "password": password}
        return browser.post("/auth/authorize", data=fields)


def test_a_sign_in_and_its_token_are_audited_by_jti(realm: Realm) -> None:
    start = len(stored(realm.server))
    verifier = new_verifier()
    code, _ = get_code(realm, verifier)
    answer = exchange(realm, code, verifier)
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    jti = introspect(realm, token)["jti"]
    new = stored(realm.server)[start:]

    [login] = logins(new)
    assert login["outcome"] == "0"
    user = requestor(login)
    assert user["who"]["identifier"]["value"] == realm.user
    assert user["who"]["reference"] == f"Patient/{realm.patient}"
    assert user["network"]["address"] == "127.0.0.1"
    assert realm.app in json.dumps(login["agent"])
    assert login["source"]["site"] == "auth"

    [issued] = token_events(new)
    assert issued["type"] == {"system": DCM, "code": "110114", "display": "User Authentication"}
    assert issued["outcome"] == "0"
    client = requestor(issued)
    assert client["who"]["identifier"]["value"] == realm.app
    assert client["policy"] == [jti]
    assert client["network"]["address"] == "127.0.0.1"
    [token_entity] = [e for e in issued["entity"] if e["role"]["code"] == "20"]
    assert token_entity["what"]["identifier"]["value"] == jti
    details = {d["type"]: d["valueString"] for d in token_entity["detail"]}
    assert details["grant_type"] == "authorization_code"
    assert "patient/*.rs" in details["scope"].split()
    # the patient context: the token shows in that patient's access log
    assert {"reference": f"Patient/{realm.patient}"} in [e["what"] for e in issued["entity"]]
    raw = json.dumps(new)
    for secret in (token, answer.json()["refresh_token"], answer.json()["id_token"], code):
        assert secret not in raw
        assert secret not in realm.server.log()
    # one chain: the new events follow the accesses' events in sequence
    chained = [e["id"] for e in stored(realm.server)]
    assert chained == sorted(chained)


def test_failed_sign_ins_are_audited_naming_only_real_accounts(realm: Realm) -> None:
    start = len(stored(realm.server))
    assert sign_in(realm, realm.user, "not-the-password").status_code == 401
    typed = f"nobody-{uuid.uuid4().hex[:8]}"
    assert sign_in(realm, typed, "whatever-password").status_code == 401
    wrong, unknown = logins(stored(realm.server)[start:])
    assert wrong["outcome"] == "4"
    assert wrong["outcomeDesc"] == "wrong user name or password"
    assert requestor(wrong)["who"]["identifier"]["value"] == realm.user
    assert unknown["outcome"] == "4"
    assert requestor(unknown)["who"] == {"display": "unknown user"}
    assert requestor(unknown)["network"]["address"] == "127.0.0.1"
    # the name as typed is neither recorded nor logged (it may be a misplaced password)
    assert typed not in json.dumps(stored(realm.server))
    assert typed not in realm.server.log()


def test_a_backend_token_is_audited_without_its_assertion(realm: Realm) -> None:
    start = len(stored(realm.server))
    signed = assertion(realm)
    answer = backend_token(realm, signed)
    assert answer.status_code == 200, answer.text
    [issued] = token_events(stored(realm.server)[start:])
    assert requestor(issued)["who"]["identifier"]["value"] == realm.backend
    assert len(issued["agent"]) == 2  # the client and this server: no user
    details = {d["type"]: d["valueString"] for e in issued["entity"] for d in e["detail"]}
    assert details == {"grant_type": "client_credentials", "scope": "system/*.rs"}
    raw = json.dumps(issued)
    assert signed not in raw
    assert answer.json()["access_token"] not in raw
    assert signed not in realm.server.log()


def register(server: RunningServer, files: Path) -> Realm:
    """A patient user, a public app and a backend client (private_key_jwt) of `server`."""
    suffix = uuid.uuid4().hex[:8]
    (files / "password").write_text(PASSWORD + "\n")
    key = ECKey.generate_key("P-384", {"kid": f"b-{suffix}", "alg": "ES384"}, private=True)
    (files / "jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    user, app, backend = f"u-{suffix}", f"app-{suffix}", f"backend-{suffix}"
    for command in (
        ("users", "add", user, "--password-file", str(files / "password"),
         "--fhir-user", f"Patient/p-{suffix}"),
        ("clients", "add", app, "--public", "--redirect-uri", "https://app.example/cb",
         "--scope", "openid fhirUser launch/patient offline_access patient/*.rs"),
        ("clients", "add", backend, "--jwks-file", str(files / "jwks.json"),
         "--scope", "system/*.cruds system/*.rs"),
    ):  # fmt: skip
        done = medbridge(server, *command)
        assert done.returncode == 0, done.stderr
    return Realm(server, suffix, f"p-{suffix}", user, app, "", backend, key)


def test_no_sign_in_and_no_token_when_the_audit_cannot_be_written(
    tmp_path: Path, store: Any
) -> None:
    audit_store = EmbeddedMongo(tmp_path / "audit-store")
    audit_uri = audit_store.start()
    server = start_server(tmp_path / "server", store.uri,
                          env={"MEDBRIDGE_AUDIT_MONGODB_URI": audit_uri})  # fmt: skip
    try:
        realm = register(server, tmp_path)
        assert sign_in(realm, realm.user, PASSWORD).status_code == 200  # audited: it can be
        audit_store.stop()

        # an unreachable store takes the chain's retries to give up (as for any access)
        refused = sign_in(realm, realm.user, PASSWORD, timeout=120)
        assert refused.status_code == 503, refused.text
        assert "ticket" not in refused.text  # no approval page: the sign-in did not happen
        answer = httpx.post(realm.token_url, timeout=120, data={
            "grant_type": "client_credentials", "scope": "system/*.rs",
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": assertion(realm),
        })  # fmt: skip
        assert answer.status_code == 503, answer.text
        assert answer.json()["error"] == "temporarily_unavailable"
        assert "access_token" not in answer.text
        assert "Traceback" not in server.log()
        assert httpx.get(f"{server.base_url}/health", timeout=30).status_code == 200
    finally:
        server.stop()
        audit_store.stop()


def test_the_typed_password_never_reaches_an_event(realm: Realm) -> None:
    wrong = f"pw-{secrets.token_hex(6)}"
    start = len(stored(realm.server))
    assert sign_in(realm, realm.user, wrong).status_code == 401
    assert wrong not in json.dumps(stored(realm.server)[start:])
