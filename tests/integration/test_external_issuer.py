"""Access tokens of an external OpenID Connect issuer over real HTTP: the npm package
`oidc-provider` (tests/oidc, started by `tests/support/oidc_issuer.py`) issues RS256 (or
ES256) JWT access tokens by client_credentials; the server knows only the issuer's URL
(`MEDBRIDGE_AUTH_ISSUER`) and finds its keys through the discovery document. The audience
is the server's own FHIR base URL, the default. Forgeries are built from a real token of
that issuer, so only the one property under test differs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from joserfc.jwk import RSAKey
from pydicom.uid import generate_uid

from medbridge.embedded_mongo import EmbeddedMongo, free_port
from tests.support.dicom import renamed
from tests.support.oidc_issuer import IssuerUnavailable, OidcIssuer, start_issuer
from tests.support.servers import IsolatedStore, RunningServer, start_server

BOUNDARY = "external-boundary"
OTHER_AUDIENCE = "https://other-service.test/fhir"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def issuer_or_skip(audience: str, *others: str, port: int | None = None) -> OidcIssuer:
    try:
        return start_issuer(audience, *others, port=port)
    except IssuerUnavailable as missing:
        pytest.skip(f"the OpenID Connect issuer cannot start: {missing}")


def server_for(root: Path, store_uri: str, issuer_port: int, **settings: str) -> RunningServer:
    """A server trusting the issuer that will listen on `issuer_port`: its keys are
    fetched at the first token, so the issuer may start after the server (it needs the
    server's FHIR base URL as its audience). `settings`: more MEDBRIDGE_AUTH_* values."""
    env = {
        "MEDBRIDGE_AUTH_ISSUER": f"http://127.0.0.1:{issuer_port}",
        # the expired-token test waits for a real expiry: no clock skew to wait out
        "MEDBRIDGE_AUTH_LEEWAY_SECONDS": "0",
        **{f"MEDBRIDGE_AUTH_{name.upper()}": value for name, value in settings.items()},
    }
    return start_server(root, store_uri, env=env, auth=True)


@dataclass
class World:
    server: RunningServer
    issuer: OidcIssuer
    alice: str  # FHIR Patient ids, linked to their studies by the ImagingStudy upkeep
    bob: str
    alice_observation: str
    bob_observation: str
    alice_study: str
    bob_study: str

    def patient_token(self, scope: str = "patient/*.rs") -> str:
        return self.issuer.token(scope, patient=self.alice, fhir_user=f"Patient/{self.alice}")


@pytest.fixture(scope="module")
def world(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[World]:
    root = tmp_path_factory.mktemp("external")
    port = free_port()
    server = server_for(root / "server", store.uri, port)
    try:
        issuer = issuer_or_skip(server.fhir_base, OTHER_AUDIENCE, port=port)
    except BaseException:
        server.stop()
        raise
    try:
        yield populate(server, issuer)
    finally:
        issuer.stop()
        server.stop()


def populate(server: RunningServer, issuer: OidcIssuer) -> World:
    writer = issuer.token("system/*.cruds")
    run = uuid.uuid4().hex[:10]
    alice_study, bob_study = generate_uid(), generate_uid()
    for study, patient_id in ((alice_study, f"A{run}"), (bob_study, f"B{run}")):
        stow(server, writer, renamed("CT_small.dcm", study=study, patient_id=patient_id))
    alice = linked_patient(server, writer, alice_study)
    bob = linked_patient(server, writer, bob_study)
    assert alice != bob
    observations: list[str] = []
    for patient in (alice, bob):
        answer = httpx.post(
            f"{server.fhir_base}/Observation", json=observation(patient), headers=bearer(writer)
        )
        assert answer.status_code == 201, answer.text
        observations.append(answer.json()["id"])
    alice_observation, bob_observation = observations
    return World(
        server, issuer, alice, bob, alice_observation, bob_observation, alice_study, bob_study
    )


def stow(server: RunningServer, token: str, part: bytes) -> None:
    body = (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + part
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    answer = httpx.post(
        f"{server.base_url}/dicomweb/studies",
        content=body,
        headers={"Content-Type": content_type, **bearer(token)},
    )
    assert answer.status_code == 200, answer.text


def linked_patient(server: RunningServer, token: str, study: str) -> str:
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(f"{server.fhir_base}/ImagingStudy/{study}", headers=bearer(token))
        if answer.status_code == 200:
            return str(answer.json()["subject"]["reference"]).removeprefix("Patient/")
        assert time.monotonic() < deadline, f"ImagingStudy/{study}: {answer.status_code}"
        time.sleep(0.2)


def observation(patient: str) -> dict[str, Any]:
    return {
        "resourceType": "Observation",
        "status": "final",
        "code": {"text": "heart rate"},
        "subject": {"reference": f"Patient/{patient}"},
    }


def studies_found(answer: httpx.Response) -> set[str]:
    assert answer.status_code in (200, 204), answer.text
    rows = answer.json() if answer.status_code == 200 else []
    return {row["0020000D"]["Value"][0] for row in rows}


# -- accepted ---------------------------------------------------------------------------


def test_a_system_token_reads_and_searches_fhir_and_qido(world: World) -> None:
    fhir, token = world.server.fhir_base, world.issuer.token("system/*.rs")
    answer = httpx.get(f"{fhir}/Patient/{world.bob}", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert answer.json()["id"] == world.bob
    answer = httpx.get(f"{fhir}/Observation", params={"patient": world.alice},
                       headers=bearer(token))  # fmt: skip
    assert answer.status_code == 200, answer.text
    assert [e["resource"]["id"] for e in answer.json()["entry"]] == [world.alice_observation]
    answer = httpx.get(f"{world.server.base_url}/dicomweb/studies", headers=bearer(token))
    assert {world.alice_study, world.bob_study} <= studies_found(answer)
    # read-only scopes of the issuer do not write
    answer = httpx.post(f"{fhir}/Observation", json=observation(world.bob), headers=bearer(token))
    assert answer.status_code == 403, answer.text


def test_a_patient_token_sees_only_its_patient(world: World) -> None:
    fhir, token = world.server.fhir_base, world.patient_token()
    answer = httpx.get(f"{fhir}/Patient/{world.alice}", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    for path in (f"Patient/{world.bob}", f"Patient/{world.bob}/$everything"):
        answer = httpx.get(f"{fhir}/{path}", headers=bearer(token))
        assert answer.status_code == 404, (path, answer.text)
        assert world.bob_observation not in answer.text
    base = world.server.base_url
    found = studies_found(httpx.get(f"{base}/dicomweb/studies", headers=bearer(token)))
    assert world.alice_study in found
    assert world.bob_study not in found
    other = httpx.get(f"{base}/dicomweb/studies/{world.bob_study}/metadata", headers=bearer(token))
    assert other.status_code == 404
    assert world.bob_study not in other.text


def test_a_patient_token_searches_only_its_patient(world: World) -> None:
    fhir, token = world.server.fhir_base, world.patient_token()
    answer = httpx.get(f"{fhir}/Observation", params={"code:text": "heart"}, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    found = {e["resource"]["id"] for e in answer.json().get("entry", [])}
    assert world.alice_observation in found
    assert world.bob_observation not in found
    answer = httpx.get(f"{fhir}/Observation", params={"patient": world.bob}, headers=bearer(token))
    assert answer.status_code == 200, answer.text
    assert answer.json().get("entry", []) == []


def test_a_patient_token_reads_no_other_patients_record_by_id(world: World) -> None:
    fhir, token = world.server.fhir_base, world.patient_token()
    answer = httpx.get(f"{fhir}/Observation/{world.bob_observation}", headers=bearer(token))
    assert answer.status_code == 404, answer.text
    assert world.bob not in answer.text


def test_an_es256_token_of_the_issuer_reads(world: World) -> None:
    """The issuer's second key (P-256): another kid of the same JWKS."""
    token = world.issuer.token("system/*.rs", algorithm="ES256")
    answer = httpx.get(f"{world.server.fhir_base}/Patient/{world.alice}", headers=bearer(token))
    assert answer.status_code == 200, answer.text


# -- refused ------------------------------------------------------------------------------


def assert_invalid_token(world: World, token: str) -> None:
    """401 with `error="invalid_token"` on FHIR and DICOMweb, and nothing of bob's."""
    for url in (
        f"{world.server.fhir_base}/Patient/{world.bob}",
        f"{world.server.base_url}/dicomweb/studies",
    ):
        answer = httpx.get(url, headers=bearer(token))
        assert answer.status_code == 401, (url, answer.text)
        challenge = answer.headers["www-authenticate"]
        assert challenge.startswith('Bearer realm="medbridge"')
        assert 'error="invalid_token"' in challenge
        assert answer.json()["issue"][0]["details"]["coding"][0]["code"] == "MB-1251"
        assert world.bob not in answer.text
        assert world.bob_study not in answer.text


def test_a_token_of_another_issuer_is_401(world: World) -> None:
    """A second oidc-provider: its own key and kid, its own `iss`, the same audience."""
    second = issuer_or_skip(world.server.fhir_base)
    try:
        token = second.token("system/*.rs")
    finally:
        second.stop()
    assert claims_of(token)["aud"] == world.server.fhir_base
    assert_invalid_token(world, token)


def test_a_token_for_another_audience_is_401(world: World) -> None:
    token = world.issuer.token("system/*.rs", audience=OTHER_AUDIENCE)
    assert claims_of(token)["aud"] == OTHER_AUDIENCE  # signed by the trusted issuer
    assert_invalid_token(world, token)


def test_a_tampered_token_is_401(world: World) -> None:
    """A patient token whose payload is rewritten to a system grant, signature kept."""
    header, payload, signature = world.patient_token().split(".")
    claims = claims_of(f"{header}.{payload}.{signature}")
    claims.update(scope="system/*.rs", sub="root")
    del claims["patient"]
    assert_invalid_token(world, f"{header}.{b64(orjson.dumps(claims))}.{signature}")


def test_an_expired_token_is_401(world: World) -> None:
    token = world.issuer.token("system/*.rs", ttl=1)
    claims = claims_of(token)
    expires = claims["exp"]
    assert expires - claims["iat"] <= 1  # the issuer took the ttl
    while time.time() < expires + 1:  # the server allows no clock skew here
        time.sleep(0.2)
    assert_invalid_token(world, token)


def test_an_unsigned_token_is_401(world: World) -> None:
    """`alg: none` with the claims of a real token (and its kid)."""
    real = world.issuer.token("system/*.rs")
    header = {"alg": "none", "typ": "at+jwt", "kid": world.issuer.kid}
    for signature in ("", real.split(".")[2]):
        forged = f"{b64(orjson.dumps(header))}.{real.split('.')[1]}.{signature}"
        assert_invalid_token(world, forged)


def test_hs256_signed_with_the_issuers_public_key_is_401(world: World) -> None:
    """The key confusion attack: the issuer's published RSA key used as an HMAC secret,
    in the forms a confused verifier might hold it (JWK JSON, PEM). Signed by hand:
    joserfc itself refuses to make an HMAC key of a public key."""
    jwks_uri = httpx.get(world.issuer.discovery_url).json()["jwks_uri"]
    keys = httpx.get(jwks_uri).json()["keys"]
    (published,) = [k for k in keys if k["kid"] == world.issuer.kid]  # the RSA key
    pem = RSAKey.import_key(published).as_pem(private=False)
    payload = world.issuer.token("system/*.rs").split(".")[1]
    header = b64(orjson.dumps({"alg": "HS256", "typ": "at+jwt", "kid": world.issuer.kid}))
    for secret in (orjson.dumps(published), pem):
        signed = f"{header}.{payload}".encode()
        signature = b64(hmac.new(secret, signed, hashlib.sha256).digest())
        assert_invalid_token(world, f"{header}.{payload}.{signature}")


def claims_of(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    claims: dict[str, Any] = orjson.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return claims


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


# -- key rotation ---------------------------------------------------------------------------


def test_a_rotated_key_is_fetched_on_its_unknown_kid(
    tmp_path: Path, store: EmbeddedMongo | IsolatedStore
) -> None:
    """The issuer restarts on its port with a new key and kid: the server, which fetched
    the old JWKS moments ago, fetches it again for the unknown kid and accepts the token."""
    port = free_port()
    server = server_for(tmp_path / "server", store.uri, port)
    issuer: OidcIssuer | None = None
    try:
        issuer = issuer_or_skip(server.fhir_base, port=port)
        url = f"{server.fhir_base}/Patient"
        first = issuer.token("system/*.rs")
        assert httpx.get(url, headers=bearer(first)).status_code == 200
        old_kid = issuer.kid
        issuer.stop()
        issuer = issuer_or_skip(server.fhir_base, port=port)
        assert issuer.kid != old_kid
        second = issuer.token("system/*.rs")
        answer = httpx.get(url, headers=bearer(second))
        assert answer.status_code == 200, answer.text
    finally:
        if issuer is not None:
            issuer.stop()
        server.stop()


def test_an_algorithm_left_out_of_the_settings_is_401(
    tmp_path: Path, store: EmbeddedMongo | IsolatedStore
) -> None:
    """MEDBRIDGE_AUTH_ALGORITHMS=RS256: the trusted issuer's ES256 token, signed by a key
    of its JWKS, is refused all the same."""
    port = free_port()
    server = server_for(tmp_path / "server", store.uri, port, algorithms="RS256")
    issuer: OidcIssuer | None = None
    try:
        issuer = issuer_or_skip(server.fhir_base, port=port)
        url = f"{server.fhir_base}/Patient"
        assert httpx.get(url, headers=bearer(issuer.token("system/*.rs"))).status_code == 200
        es256 = issuer.token("system/*.rs", algorithm="ES256")
        answer = httpx.get(url, headers=bearer(es256))
        assert answer.status_code == 401, answer.text
        assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    finally:
        if issuer is not None:
            issuer.stop()
        server.stop()
