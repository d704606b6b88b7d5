"""SMART enforcement over real HTTP with auth on: tokens are real ES256 JWTs signed with a
key this module generates, checked by the server's `JwtValidator` against a JWKS file
(`MEDBRIDGE_AUTH_ISSUER`, `MEDBRIDGE_AUTH_JWKS`). Data is written through the real doors
with a system token; DICOM studies arrive by STOW-RS and are linked to their FHIR
Patients by the real ImagingStudy upkeep."""

from __future__ import annotations

import subprocess
import sys
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
from pymongo import AsyncMongoClient

from access.pipeline import Stage
from fhir_server.repository import Repository
from medbridge.auth import NoIssuer
from medbridge.compose import compose
from medbridge.embedded_mongo import EmbeddedMongo, free_port
from medbridge.settings import Settings
from tests.support.dicom import renamed
from tests.support.servers import IsolatedStore, RunningServer, start_server

ISSUER = "https://issuer.medbridge.test"
BOUNDARY = "smart-boundary"
SYSTEM_SCOPES = "system/*.cruds"


@dataclass
class Minter:
    key: ECKey
    audience: str

    def token(
        self,
        scope: str,
        patient: str | None = None,
        *,
        subject: str = "backend",
        audience: str | None = None,
        issuer: str = ISSUER,
        expires_in: int = 300,
        key: ECKey | None = None,
        fhir_user: str | None = None,
    ) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": issuer,
            "sub": subject,
            "aud": audience or self.audience,
            "client_id": "backend" if subject == "backend" else "portal",
            "scope": scope,
            "iat": now,
            "exp": now + expires_in,
            "jti": uuid.uuid4().hex,
        }
        if patient is not None:
            claims["patient"] = patient
        if fhir_user is not None:
            claims["fhirUser"] = fhir_user
        signing = key or self.key
        header = {"alg": "ES256", "kid": signing.kid or "k1"}
        return jwt.encode(header, claims, signing)


@dataclass
class World:
    server: RunningServer
    minter: Minter
    alice: str  # FHIR Patient ids
    bob: str
    alice_observation: str
    bob_observation: str
    alice_study: str  # StudyInstanceUIDs, linked to alice / bob by the upkeep
    bob_study: str


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture(scope="module")
def smart_server(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[tuple[RunningServer, ECKey]]:
    root = tmp_path_factory.mktemp("smart")
    key = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    jwks = root / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    env = {"MEDBRIDGE_AUTH_ISSUER": ISSUER, "MEDBRIDGE_AUTH_JWKS": str(jwks)}
    running = start_server(root / "server", store.uri, env=env, auth=True)
    yield running, key
    running.stop()


def stow(server: RunningServer, token: str, part: bytes) -> None:
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + part
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    headers = {
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={BOUNDARY}',
        **bearer(token),
    }
    answer = httpx.post(f"{server.base_url}/dicomweb/studies", content=body, headers=headers)
    assert answer.status_code == 200, answer.text


def linked_patient(server: RunningServer, token: str, study: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(f"{server.fhir_base}/ImagingStudy/{study}", headers=bearer(token))
        if answer.status_code == 200:
            return str(answer.json()["subject"]["reference"]).removeprefix("Patient/")
        assert time.monotonic() < deadline, f"ImagingStudy/{study}: {answer.status_code}"
        time.sleep(0.2)


@pytest.fixture(scope="module")
def world(smart_server: tuple[RunningServer, ECKey]) -> World:
    server, key = smart_server
    minter = Minter(key, server.fhir_base)
    system = minter.token(SYSTEM_SCOPES)
    run = uuid.uuid4().hex[:10]
    alice_study, bob_study = generate_uid(), generate_uid()
    for study, patient in ((alice_study, f"A{run}"), (bob_study, f"B{run}")):
        stow(server, system, renamed("CT_small.dcm", study=study, patient_id=patient))
    alice = linked_patient(server, system, alice_study)
    bob = linked_patient(server, system, bob_study)
    assert alice != bob
    observations = []
    for patient in (alice, bob):
        answer = httpx.post(
            f"{server.fhir_base}/Observation",
            json=observation(patient),
            headers={**bearer(system), "Content-Type": "application/fhir+json"},
        )
        assert answer.status_code == 201, answer.text
        observations.append(answer.json()["id"])
    return World(server, minter, alice, bob, *observations, alice_study, bob_study)


def observation(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "heart rate"},
        "subject": {"reference": f"Patient/{patient}"},
    }


def assert_401(answer: httpx.Response, error: str | None = "invalid_token") -> None:
    assert answer.status_code == 401, answer.text
    challenge = answer.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="medbridge"')
    if error is not None:
        assert f'error="{error}"' in challenge
    issue = answer.json()["issue"][0]
    assert issue["code"] == "login"
    assert issue["details"]["coding"][0]["code"].startswith("MB-125")


# -- no token, bad tokens ----------------------------------------------------------------


def test_no_token_is_401_on_every_door(world: World) -> None:
    base, fhir = world.server.base_url, world.server.fhir_base
    for url in (
        f"{fhir}/Patient/{world.alice}",
        f"{fhir}/Observation?patient={world.alice}",
        f"{fhir}/Patient/{world.alice}/$everything",
        f"{base}/dicomweb/studies",
        f"{base}/dicomweb/studies/{world.alice_study}/metadata",
    ):
        answer = httpx.get(url)
        assert_401(answer, error=None)  # RFC 6750 3.1: no error code without credentials
        assert world.alice not in answer.text
    assert_401(httpx.post(f"{fhir}/Observation", json=observation(world.alice)), error=None)
    assert_401(httpx.post(fhir, json={"resourceType": "Bundle", "type": "batch"}), error=None)


def test_metadata_and_health_answer_without_a_token(world: World) -> None:
    assert httpx.get(f"{world.server.base_url}/health").status_code == 200
    answer = httpx.get(f"{world.server.fhir_base}/metadata")
    assert answer.status_code == 200
    security = answer.json()["rest"][0]["security"]
    coding = security["service"][0]["coding"][0]
    assert coding["code"] == "SMART-on-FHIR"
    (uris,) = [e for e in security["extension"] if e["url"].endswith("/oauth-uris")]
    found = {e["url"]: e["valueUri"] for e in uris["extension"]}
    auth = world.server.base_url + "/auth"
    assert found == {
        "authorize": f"{auth}/authorize",
        "token": f"{auth}/token",
        "introspect": f"{auth}/introspect",
        "revoke": f"{auth}/revoke",
    }


@pytest.mark.parametrize(
    "variant", ["expired", "tampered", "wrong-aud", "aud-trailing-slash", "other-issuer",
                "other-key", "alg-none"],
)  # fmt: skip
def test_bad_tokens_are_401(world: World, variant: str) -> None:
    minter, fhir = world.minter, world.server.fhir_base
    scope = SYSTEM_SCOPES
    token = {
        "expired": lambda: minter.token(scope, expires_in=-600),  # beyond the 60 s skew
        "tampered": lambda: _tampered(minter.token("patient/*.rs", world.alice)),
        "wrong-aud": lambda: minter.token(scope, audience="https://elsewhere.test/fhir"),
        "aud-trailing-slash": lambda: minter.token(scope, audience=fhir + "/"),
        "other-issuer": lambda: minter.token(scope, issuer="https://evil.test"),
        "other-key": lambda: minter.token(
            scope, key=ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
        ),
        "alg-none": lambda: _unsigned(minter.token(scope)),
    }[variant]()
    for url in (f"{fhir}/Patient/{world.bob}", f"{world.server.base_url}/dicomweb/studies"):
        answer = httpx.get(url, headers=bearer(token))
        assert_401(answer)
        assert world.bob not in answer.text


def _tampered(token: str) -> str:
    """The payload of a patient token rewritten to name every scope: signature broken."""
    header, payload, signature = token.split(".")
    claims = orjson.loads(_b64decode(payload))
    claims["scope"] = SYSTEM_SCOPES
    return ".".join((header, _b64encode(orjson.dumps(claims)), signature))


def _unsigned(token: str) -> str:
    _, payload, _ = token.split(".")
    return _b64encode(b'{"alg":"none","typ":"JWT"}') + "." + payload + "."


def _b64decode(text: str) -> bytes:
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _b64encode(data: bytes) -> str:
    import base64

    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


@pytest.mark.parametrize(
    "header",
    ["Bearer", "Bearer a b", "Bearer a,b", "Bearer ~~{}", "Bearer a=b", "Basic Zm9vOmJhcg==",
     "bearer", "Token x.y.z"],
)  # fmt: skip
def test_malformed_authorization_is_401_not_a_crash(world: World, header: str) -> None:
    for url in (f"{world.server.fhir_base}/Patient", f"{world.server.base_url}/dicomweb/studies"):
        answer = httpx.get(url, headers={"Authorization": header})
        assert answer.status_code == 401, answer.text
        assert answer.headers["www-authenticate"].startswith("Bearer ")
    assert "Traceback" not in world.server.log()


# -- scopes ----------------------------------------------------------------------------


def test_insufficient_scope_is_403(world: World) -> None:
    fhir = world.server.fhir_base
    observations_only = world.minter.token(
        "user/Observation.rs", subject="dr", fhir_user="Practitioner/1"
    )
    answer = httpx.get(f"{fhir}/Patient/{world.alice}", headers=bearer(observations_only))
    assert answer.status_code == 403, answer.text
    assert 'error="insufficient_scope"' in answer.headers["www-authenticate"]
    assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "MB-1253"
    assert httpx.get(f"{fhir}/Observation/{world.bob_observation}",
                     headers=bearer(observations_only)).status_code == 200  # fmt: skip
    # read-only scopes do not write
    answer = httpx.post(f"{fhir}/Observation", json=observation(world.alice),
                        headers=bearer(observations_only))  # fmt: skip
    assert answer.status_code == 403
    # no ImagingStudy scope: no QIDO, no WADO
    base = world.server.base_url
    assert (
        httpx.get(f"{base}/dicomweb/studies", headers=bearer(observations_only)).status_code == 403
    )
    # non-resource scopes grant nothing
    identity = world.minter.token("openid fhirUser launch/patient offline_access", world.alice)
    assert httpx.get(f"{fhir}/Patient/{world.alice}", headers=bearer(identity)).status_code == 403


def test_v1_and_v2_scopes_mean_the_same(world: World) -> None:
    fhir = world.server.fhir_base
    for scope in ("user/*.read", "user/*.rs"):
        token = world.minter.token(scope, subject="dr", fhir_user="Practitioner/1")
        assert httpx.get(f"{fhir}/Patient/{world.bob}", headers=bearer(token)).status_code == 200
        answer = httpx.post(
            f"{fhir}/Observation", json=observation(world.bob), headers=bearer(token)
        )
        assert answer.status_code == 403
    for scope in ("user/Observation.write", "user/Observation.cud"):
        token = world.minter.token(scope, subject="dr", fhir_user="Practitioner/1")
        answer = httpx.post(
            f"{fhir}/Observation", json=observation(world.bob), headers=bearer(token)
        )
        assert answer.status_code == 201, answer.text


# -- a patient's token ---------------------------------------------------------------------


def patient_token(world: World, scope: str = "patient/*.rs") -> str:
    return world.minter.token(
        scope, world.alice, subject="alice", fhir_user=f"Patient/{world.alice}"
    )


def test_patient_token_reads_its_own_patient(world: World) -> None:
    fhir, token = world.server.fhir_base, patient_token(world)
    answer = httpx.get(f"{fhir}/Patient/{world.alice}", headers=bearer(token))
    assert answer.status_code == 200
    assert answer.json()["id"] == world.alice


def test_patient_token_reading_another_patient_is_404(world: World) -> None:
    fhir, token = world.server.fhir_base, patient_token(world)
    for path in (
        f"Patient/{world.bob}",
        f"Patient/{world.bob}/_history",
        f"Patient/{world.bob}/$everything",
    ):
        answer = httpx.get(f"{fhir}/{path}", headers=bearer(token))
        assert answer.status_code == 404, (path, answer.text)
        assert world.bob_observation not in answer.text


def test_patient_token_cannot_write_for_another_patient(world: World) -> None:
    fhir = world.server.fhir_base
    token = patient_token(world, "patient/*.cruds")
    answer = httpx.post(f"{fhir}/Observation", json=observation(world.bob), headers=bearer(token))
    assert answer.status_code == 403, answer.text
    assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "MB-1254"
    answer = httpx.put(f"{fhir}/Patient/{world.bob}", headers=bearer(token),
                       json={"resourceType": "Patient", "id": world.bob})  # fmt: skip
    assert answer.status_code == 403
    # the same write inside a transaction: the entry is refused, nothing applied
    bundle = {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [{"resource": observation(world.bob),
                   "request": {"method": "POST", "url": "Observation"}}],
    }  # fmt: skip
    answer = httpx.post(fhir, json=bundle, headers=bearer(token))
    assert answer.status_code == 403, answer.text
    # its own patient's record it may write
    answer = httpx.post(f"{fhir}/Observation", json=observation(world.alice), headers=bearer(token))
    assert answer.status_code == 201, answer.text


def test_patient_token_qido_finds_only_its_own_studies(world: World) -> None:
    base, token = world.server.base_url, patient_token(world, "patient/ImagingStudy.rs")
    answer = httpx.get(f"{base}/dicomweb/studies", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    studies = {row["0020000D"]["Value"][0] for row in answer.json()}
    assert world.alice_study in studies
    assert world.bob_study not in studies
    # asking for the other study by UID finds nothing
    answer = httpx.get(
        f"{base}/dicomweb/studies", params={"StudyInstanceUID": world.bob_study},
        headers=bearer(token),
    )  # fmt: skip
    assert answer.status_code in (200, 204)
    assert world.bob_study not in answer.text


def test_patient_token_wado_of_another_patients_study_is_404(world: World) -> None:
    base, token = world.server.base_url, patient_token(world, "patient/ImagingStudy.rs")
    mine = httpx.get(f"{base}/dicomweb/studies/{world.alice_study}/metadata", headers=bearer(token))
    assert mine.status_code == 200
    other = httpx.get(f"{base}/dicomweb/studies/{world.bob_study}/metadata", headers=bearer(token))
    assert other.status_code == 404
    assert world.bob_study not in other.text


def test_patient_token_search_sees_only_its_own(world: World) -> None:
    fhir, token = world.server.fhir_base, patient_token(world)
    answer = httpx.get(f"{fhir}/Observation", params={"code:text": "heart"}, headers=bearer(token))
    assert answer.status_code == 200
    ids = {e["resource"]["id"] for e in answer.json().get("entry", [])}
    assert world.alice_observation in ids
    assert world.bob_observation not in ids
    answer = httpx.get(f"{fhir}/Observation", params={"patient": world.bob}, headers=bearer(token))
    assert answer.status_code == 200
    assert answer.json().get("entry", []) == []
    answer = httpx.get(f"{fhir}/Observation/{world.bob_observation}", headers=bearer(token))
    assert answer.status_code == 404


# -- --no-auth ---------------------------------------------------------------------------


def test_no_auth_off_loopback_refuses_to_start(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "medbridge", "serve", "--no-auth", "--host", "0.0.0.0",
         "--data-dir", str(tmp_path), "--http-port", str(free_port())],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "refusing to start" in done.stderr
    assert "0.0.0.0" in done.stderr
    assert not (tmp_path / "mongo").exists()  # refused before anything started


def test_no_auth_on_loopback_warns_and_answers(server: RunningServer) -> None:
    assert "authentication is OFF" in server.log()
    assert httpx.get(f"{server.fhir_base}/Patient").status_code == 200


def test_fhirclient_finds_the_oauth_endpoints(world: World) -> None:
    """SMART's own Python client, unmodified, reads the endpoints from rest.security
    (its CapabilityStatement model also checks the element is valid R4)."""
    from fhirclient import client

    smart = client.FHIRClient(
        settings={"app_id": "portal", "api_base": world.server.fhir_base + "/",
                  "redirect_uri": "http://127.0.0.1/callback"}
    )  # fmt: skip
    smart.server.get_capability()
    auth = smart.server.auth
    assert auth is not None
    assert auth.auth_type == "oauth2"
    assert auth._authorize_uri == world.server.base_url + "/auth/authorize"
    assert auth._token_uri == world.server.base_url + "/auth/token"


def test_query_restricted_scope_over_http(world: World) -> None:
    fhir = world.server.fhir_base
    token = world.minter.token("user/Observation.rs?category=laboratory", subject="lab")
    asked = {"category": "laboratory", "patient": world.alice}
    assert httpx.get(f"{fhir}/Observation", params=asked, headers=bearer(token)).status_code == 200
    for params in ({}, {"category": "vital-signs"}, {"patient": world.alice}):
        answer = httpx.get(f"{fhir}/Observation", params=params, headers=bearer(token))
        assert answer.status_code == 403, params
    answer = httpx.get(f"{fhir}/Observation/{world.alice_observation}", headers=bearer(token))
    assert answer.status_code == 403


def test_no_token_reaches_the_log(world: World) -> None:
    token = patient_token(world)
    assert httpx.get(f"{world.server.fhir_base}/Patient/{world.alice}",
                     headers=bearer(token)).status_code == 200  # fmt: skip
    httpx.get(f"{world.server.fhir_base}/Patient", headers={"Authorization": "Bearer a b"})
    signature = token.rsplit(".", 1)[1]
    assert signature not in world.server.log()


async def test_compose_registers_the_hooks_only_with_a_validator(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str
) -> None:
    repository = Repository(mongo, database_name)
    with_auth = (await compose(Settings(), repository, validator=NoIssuer())).router.pipeline
    assert with_auth.hooks(Stage.AUTHENTICATE) == ["smart.authenticate"]
    assert with_auth.hooks(Stage.AUTHORIZE) == ["smart.authorize", "audit.read-only"]
    without = (await compose(Settings(), repository)).router.pipeline
    assert without.hooks(Stage.AUTHENTICATE) == []
    assert without.hooks(Stage.AUTHORIZE) == ["audit.read-only"]


def test_patient_token_cannot_take_over_another_patients_record(world: World) -> None:
    """An update of bob's Observation whose body names alice would move bob's record into
    alice's compartment: refused by what the record is now, not by what the body says."""
    fhir = world.server.fhir_base
    token = patient_token(world, "patient/*.cruds")
    taken = {**observation(world.alice), "id": world.bob_observation}
    url = f"{fhir}/Observation/{world.bob_observation}"
    answer = httpx.put(url, json=taken, headers=bearer(token))
    assert answer.status_code == 403, answer.text
    assert httpx.delete(url, headers=bearer(token)).status_code == 403
    patch = [{"op": "replace", "path": "/status", "value": "cancelled"}]
    answer = httpx.patch(url, json=patch, headers={**bearer(token),
                         "Content-Type": "application/json-patch+json"})  # fmt: skip
    assert answer.status_code == 403
    system = world.minter.token(SYSTEM_SCOPES)
    kept = httpx.get(url, headers=bearer(system)).json()
    assert kept["subject"]["reference"] == f"Patient/{world.bob}"
    assert kept["status"] == "final"
    # alice's own record she may update
    own = f"{fhir}/Observation/{world.alice_observation}"
    mine = {**observation(world.alice), "id": world.alice_observation, "status": "amended"}
    assert httpx.put(own, json=mine, headers=bearer(token)).status_code == 200


def test_patient_token_batch_entries_are_confined_one_by_one(world: World) -> None:
    fhir, token = world.server.fhir_base, patient_token(world)
    batch = {
        "resourceType": "Bundle",
        "type": "batch",
        "entry": [
            {"request": {"method": "GET", "url": f"Patient/{world.alice}"}},
            {"request": {"method": "GET", "url": f"Patient/{world.bob}"}},
            {"request": {"method": "GET", "url": f"Patient/{world.bob}/$everything"}},
        ],
    }
    answer = httpx.post(fhir, json=batch, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    statuses = [e["response"]["status"] for e in answer.json()["entry"]]
    assert statuses[0].startswith("200")
    assert statuses[1].startswith("404")
    assert statuses[2].startswith("404")
    assert world.bob_observation not in answer.text


async def test_mllp_and_dimse_are_left_to_their_own_rules(world: World, tmp_path: Path) -> None:
    """With auth on, an HL7 message (no token: MLLP has none) is accepted and its FHIR
    writes apply; a C-STORE and C-FIND by an AE title work as before."""
    from tests.integration.test_mllp import adt, msa, send
    from tests.support.dcmtk import findscu, storescu, successes

    unique = uuid.uuid4().hex[:10]
    [ack] = await send(world.server, adt("A01", unique, f"P{unique}"))
    assert msa(ack)[1] == "AA", ack
    system = world.minter.token(SYSTEM_SCOPES)
    async with httpx.AsyncClient(headers=bearer(system)) as client:
        answer = await client.get(f"{world.server.fhir_base}/Patient",
                                  params={"identifier": f"P{unique}"})  # fmt: skip
    assert len(answer.json().get("entry", [])) == 1
    study = generate_uid()
    path = tmp_path / "ct.dcm"
    path.write_bytes(renamed("CT_small.dcm", study=study, patient_id=f"D{unique}"))
    assert successes(storescu(world.server.dicom_port, [path])) == 1
    keys = ["QueryRetrieveLevel=STUDY", f"StudyInstanceUID={study}"]
    _, responses = findscu(world.server.dicom_port, "-S", keys, tmp_path / "find")
    assert [r.StudyInstanceUID for r in responses] == [study]


def test_a_backend_service_s_total_counts_every_page_with_the_audit_on(world: World) -> None:
    # the audit trail (on here, its default) reads the items of every answer, but hides
    # none: the search does not read the other pages' matches for it, and the total is
    # still every match (not the one on this page)
    system = bearer(world.minter.token(SYSTEM_SCOPES))
    for _ in range(2):
        answer = httpx.post(
            f"{world.server.fhir_base}/Observation",
            json=observation(world.alice),
            headers={**system, "Content-Type": "application/fhir+json"},
        )
        assert answer.status_code == 201, answer.text
    url: str | None = f"{world.server.fhir_base}/Observation?_count=1"
    totals, seen = set(), []
    while url is not None:
        page = httpx.get(url, headers=system).json()
        totals.add(page["total"])
        seen += [entry["resource"]["id"] for entry in page.get("entry", [])]
        url = next((link["url"] for link in page["link"] if link["relation"] == "next"), None)
    assert len(seen) >= 4
    assert totals == {len(seen)}
