"""The authorization server over real HTTP: the `medbridge users/clients/token`
commands against a running server, the sign-in and approval pages, the token
endpoint's PKCE and private_key_jwt checks, refresh rotation, introspection and
revocation. Attacks are each a test case."""

from __future__ import annotations

import base64
import hashlib
import hmac
import http.server
import json
import re
import secrets
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from tests.support.servers import RunningServer

pytestmark = pytest.mark.integration

REDIRECT = "https://app.example/cb"
PASSWORD = "alice-password-1"
RS_SECRET = "resource-server-secret-1"


def medbridge(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medbridge", *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@dataclass
class Realm:
    """One test module's accounts and clients, registered through the commands."""

    server: RunningServer
    suffix: str
    patient: str
    user: str
    app: str  # public client
    rs: str  # confidential-symmetric: the resource server that introspects
    backend: str  # confidential-asymmetric (private_key_jwt)
    backend_key: ECKey

    @property
    def base(self) -> str:
        return self.server.base_url

    @property
    def token_url(self) -> str:
        return f"{self.base}/auth/token"


@pytest.fixture(scope="module")
def realm(server: RunningServer, tmp_path_factory: pytest.TempPathFactory) -> Realm:
    suffix = uuid.uuid4().hex[:8]
    files = tmp_path_factory.mktemp("smart")
    (files / "password").write_text(PASSWORD + "\n")
    (files / "secret").write_text(RS_SECRET + "\n")
    key = ECKey.generate_key("P-384", {"kid": f"backend-{suffix}", "alg": "ES384"}, private=True)
    (files / "jwks.json").write_text(json.dumps({"keys": [key.as_dict(private=False)]}))
    realm = Realm(
        server,
        suffix,
        f"p-{suffix}",
        f"alice-{suffix}",
        f"app-{suffix}",
        f"rs-{suffix}",
        f"backend-{suffix}",
        key,
    )
    commands = [
        (
            "users",
            "add",
            realm.user,
            "--password-file",
            str(files / "password"),
            "--fhir-user",
            f"Patient/{realm.patient}",
        ),
        (
            "clients",
            "add",
            realm.app,
            "--public",
            "--redirect-uri",
            REDIRECT,
            "--scope",
            "openid fhirUser launch/patient offline_access patient/*.rs",
        ),
        (
            "clients",
            "add",
            realm.rs,
            "--secret-file",
            str(files / "secret"),
            "--scope",
            "system/*.rs",
        ),
        (
            "clients",
            "add",
            realm.backend,
            "--jwks-file",
            str(files / "jwks.json"),
            "--scope",
            "system/*.rs system/Patient.rs",
        ),
    ]
    for command in commands:
        done = medbridge(server, *command)
        assert done.returncode == 0, done.stderr
    return realm


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def challenge_of(verifier: str) -> str:
    return _b64(hashlib.sha256(verifier.encode()).digest())


def _hidden(html: str, name: str) -> str:
    found = re.search(rf'name="{name}" value="([^"]*)"', html)
    assert found is not None, f"no {name} in the page"
    return found.group(1)


def _fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))


def authorize_params(realm: Realm, verifier: str, **changes: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code",
        "client_id": realm.app,
        "redirect_uri": REDIRECT,
        "scope": "openid fhirUser launch/patient offline_access patient/*.rs",
        "state": "st-" + secrets.token_hex(4),
        "aud": f"{realm.base}/fhir",
        "code_challenge": challenge_of(verifier),
        "code_challenge_method": "S256",
    }
    params.update(changes)
    return {name: value for name, value in params.items() if value is not None}


def sign_in_and_approve(
    realm: Realm, params: dict[str, str], decision: str = "approve"
) -> httpx.Response:
    """Drive the two pages as a browser would; the final redirect (not followed)."""
    with httpx.Client(base_url=realm.base, timeout=30) as browser:
        page = browser.get("/auth/authorize", params=params)
        assert page.status_code == 200, page.text
        fields = _fields(page.text)
        fields.update(username=realm.user, password=PASSWORD)
        approval = browser.post("/auth/authorize", data=fields)
        assert approval.status_code == 200, approval.text
        assert "patient/*.rs" not in approval.text or "records" in approval.text
        decide = _fields(approval.text)
        decide["decision"] = decision
        return browser.post("/auth/authorize", data=decide)


def get_code(realm: Realm, verifier: str, **changes: str | None) -> tuple[str, dict[str, str]]:
    params = authorize_params(realm, verifier, **changes)
    redirect = sign_in_and_approve(realm, params)
    assert redirect.status_code == 302, redirect.text
    location = urlsplit(redirect.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    query = {name: values[0] for name, values in parse_qs(location.query).items()}
    assert query["state"] == params["state"]
    return query["code"], params


def exchange(realm: Realm, code: str, verifier: str | None, **extra: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "redirect_uri": REDIRECT,
        "client_id": realm.app,
        **extra,
    }
    if verifier is not None:
        form["code_verifier"] = verifier
    return httpx.post(realm.token_url, data=form, timeout=30)


def introspect(realm: Realm, token: str) -> dict[str, Any]:
    answer = httpx.post(
        f"{realm.base}/auth/introspect",
        data={"token": token},
        auth=(realm.rs, RS_SECRET),
        timeout=30,
    )
    assert answer.status_code == 200, answer.text
    body: dict[str, Any] = answer.json()
    return body


def new_verifier() -> str:
    return secrets.token_urlsafe(48)


# --- the commands -------------------------------------------------------------------


def test_token_command_prints_the_token_last(realm: Realm) -> None:
    done = medbridge(realm.server, "token", "--scope", "patient/*.rs", "--user", realm.user)
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip().splitlines()[-1]
    claims = introspect(realm, token)
    assert claims["active"] is True
    assert claims["patient"] == realm.patient  # a patient user's own context
    assert claims["fhirUser"] == f"Patient/{realm.patient}"
    assert claims["scope"] == "patient/*.rs"
    practitioner = medbridge(
        realm.server,
        "token",
        "--scope",
        "user/*.rs",
        "--user",
        "Practitioner/d1",
        "--patient",
        "p9",
    )
    assert practitioner.returncode == 0, practitioner.stderr
    claims = introspect(realm, practitioner.stdout.strip().splitlines()[-1])
    assert claims["sub"] == "Practitioner/d1"
    assert claims["patient"] == "p9"
    assert claims["client_id"] == "medbridge-admin"


def test_commands_refuse_clearly(realm: Realm, tmp_path: Path) -> None:
    again = medbridge(
        realm.server,
        "clients",
        "add",
        realm.app,
        "--public",
        "--redirect-uri",
        REDIRECT,
        "--scope",
        "openid",
    )
    assert again.returncode == 1
    assert "exists already" in again.stderr
    unknown = medbridge(realm.server, "token", "--scope", "x", "--user", "nobody-at-all")
    assert unknown.returncode == 1
    assert "no user" in unknown.stderr
    (tmp_path / "short").write_text("short\n")
    weak = medbridge(
        realm.server,
        "users",
        "add",
        "bob",
        "--password-file",
        str(tmp_path / "short"),
        "--fhir-user",
        "Patient/b",
    )
    assert weak.returncode == 1
    assert "password" in weak.stderr
    nothing_runs = subprocess.run(
        [sys.executable, "-m", "medbridge", "token", "--scope", "x", "--data-dir", str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert nothing_runs.returncode == 2
    assert "no MedBridge server runs" in nothing_runs.stderr


# --- discovery -----------------------------------------------------------------------


def test_discovery_documents_and_jwks(realm: Realm) -> None:
    smart = httpx.get(f"{realm.base}/fhir/.well-known/smart-configuration").json()
    assert smart["issuer"] == f"{realm.base}/auth"
    assert smart["token_endpoint"] == f"{realm.base}/auth/token"
    assert smart["code_challenge_methods_supported"] == ["S256"]
    assert "client-confidential-asymmetric" in smart["capabilities"]
    # scopes v1 and v2, patient and user permissions are enforced (smart/scopes.py)
    assert {"permission-v1", "permission-v2", "permission-patient", "permission-user"} <= set(
        smart["capabilities"]
    )
    # the EHR launch: tests/integration/test_smart_launch.py
    assert {"launch-ehr", "context-ehr-patient"} <= set(smart["capabilities"])
    # nothing announced that is not built
    assert "context-standalone-encounter" not in smart["capabilities"]
    openid = httpx.get(f"{realm.base}/.well-known/openid-configuration").json()
    assert openid["jwks_uri"] == f"{realm.base}/auth/jwks"
    keys = httpx.get(openid["jwks_uri"]).json()["keys"]
    assert keys
    assert all("d" not in key and key["kid"] for key in keys)


# --- authorization code + PKCE ------------------------------------------------------


def test_standalone_patient_launch(realm: Realm) -> None:
    verifier = new_verifier()
    code, _ = get_code(realm, verifier, nonce="n-0S6_WzA2Mj")
    answer = exchange(realm, code, verifier)
    assert answer.status_code == 200, answer.text
    assert answer.headers["cache-control"] == "no-store"
    assert answer.headers["pragma"] == "no-cache"
    body = answer.json()
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == 3600
    assert body["patient"] == realm.patient
    assert body["need_patient_banner"] is True
    assert set(body["scope"].split()) == {
        "openid",
        "fhirUser",
        "launch/patient",
        "offline_access",
        "patient/*.rs",
    }
    assert body["refresh_token"]
    id_token = jwt.decode(body["id_token"], _jwks(realm), algorithms=["RS384", "ES384"]).claims
    assert id_token["aud"] == realm.app
    assert id_token["fhirUser"] == f"{realm.base}/fhir/Patient/{realm.patient}"
    assert id_token["nonce"] == "n-0S6_WzA2Mj"
    claims = introspect(realm, body["access_token"])
    assert claims["active"] is True
    assert claims["sub"] == realm.user


def _jwks(realm: Realm) -> Any:
    from joserfc.jwk import KeySet

    return KeySet.import_key_set(httpx.get(f"{realm.base}/auth/jwks").json())


def test_deny_redirects_with_access_denied(realm: Realm) -> None:
    params = authorize_params(realm, new_verifier())
    redirect = sign_in_and_approve(realm, params, decision="deny")
    assert redirect.status_code == 302
    query = parse_qs(urlsplit(redirect.headers["location"]).query)
    assert query["error"] == ["access_denied"]
    assert query["state"] == [params["state"]]
    assert "code" not in query


@pytest.mark.parametrize(
    ("changes", "description"),
    [
        ({"code_challenge": None, "code_challenge_method": None}, "missing challenge"),
        ({"code_challenge_method": "plain"}, "method plain"),
        ({"code_challenge_method": None}, "method missing (would default to plain)"),
        ({"code_challenge": "short"}, "challenge outside the allowed length"),
        ({"aud": "AUDIENCE/"}, "aud with a trailing slash"),
        ({"aud": "https://other.example/fhir"}, "aud of another server"),
        ({"scope": "user/*.cruds system/*.rs"}, "no scope the client may have"),
    ],
)
def test_authorize_refusals_go_back_to_the_app(
    realm: Realm, changes: dict[str, str | None], description: str
) -> None:
    if changes.get("aud") == "AUDIENCE/":
        changes = {"aud": f"{realm.base}/fhir/"}
    params = authorize_params(realm, new_verifier(), **changes)
    answer = httpx.get(f"{realm.base}/auth/authorize", params=params)
    assert answer.status_code == 302, description
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    expected = "invalid_scope" if "scope" in changes else "invalid_request"
    assert query["error"] == [expected], description
    assert query["state"] == [params["state"]]


@pytest.mark.parametrize(
    "redirect_uri",
    [
        "https://app.example/cb.evil.example/",
        "https://app.example/cb/../steal",
        "https://app.example/cbx",
        "https://app.example/cb?x=1",
        "https://app.example.evil.example/cb",
        "https://APP.example/cb",
    ],
)
def test_redirect_uri_prefix_tricks_are_never_followed(realm: Realm, redirect_uri: str) -> None:
    params = authorize_params(realm, new_verifier(), redirect_uri=redirect_uri)
    answer = httpx.get(f"{realm.base}/auth/authorize", params=params)
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert "Request refused" in answer.text


def test_a_confidential_client_also_needs_pkce(realm: Realm, tmp_path: Path) -> None:
    (tmp_path / "secret").write_text("ehr-client-secret-value\n")
    ehr = f"ehr-{realm.suffix}"
    done = medbridge(
        realm.server, "clients", "add", ehr, "--secret-file", str(tmp_path / "secret"),
        "--redirect-uri", REDIRECT, "--scope", "user/*.rs openid fhirUser",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    params = authorize_params(
        realm, new_verifier(), client_id=ehr, code_challenge=None, code_challenge_method=None
    )
    answer = httpx.get(f"{realm.base}/auth/authorize", params=params)
    assert answer.status_code == 302
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["error"] == ["invalid_request"]
    assert "code_challenge" in query["error_description"][0]


def test_a_redirect_uri_other_than_the_codes_is_refused_at_the_token_endpoint(
    realm: Realm,
) -> None:
    verifier = new_verifier()
    code, _ = get_code(realm, verifier)
    answer = exchange(realm, code, verifier, redirect_uri=REDIRECT + "/x")
    assert answer.status_code == 400
    assert answer.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("verifier_of", "error"),
    [
        (lambda right: None, "invalid_request"),  # no verifier
        (lambda right: "", "invalid_request"),  # blank
        (lambda right: new_verifier(), "invalid_grant"),  # wrong
        (lambda right: challenge_of(right), "invalid_grant"),  # the challenge itself
        (lambda right: right[:42], "invalid_request"),  # too short
        (lambda right: right[:-1] + "!", "invalid_request"),  # outside the alphabet
    ],
)
def test_pkce_matrix_at_the_token_endpoint(realm: Realm, verifier_of: Any, error: str) -> None:
    verifier = new_verifier()
    code, _ = get_code(realm, verifier)
    answer = exchange(realm, code, verifier_of(verifier))
    assert answer.status_code in (400, 401)
    assert answer.json()["error"] == error
    assert "access_token" not in answer.json()


def test_a_reused_code_is_refused_and_revokes_what_it_issued(realm: Realm) -> None:
    verifier = new_verifier()
    code, _ = get_code(realm, verifier)
    first = exchange(realm, code, verifier)
    assert first.status_code == 200
    issued = first.json()
    assert introspect(realm, issued["access_token"])["active"] is True
    second = exchange(realm, code, verifier)
    assert second.status_code == 400
    assert second.json()["error"] == "invalid_grant"
    assert introspect(realm, issued["access_token"]) == {"active": False}
    refresh = httpx.post(
        realm.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": issued["refresh_token"],
            "client_id": realm.app,
        },
    )
    assert refresh.status_code == 400


def test_a_code_is_bound_to_its_client(realm: Realm) -> None:
    verifier = new_verifier()
    code, _ = get_code(realm, verifier)
    answer = exchange(realm, code, verifier, client_id=realm.rs)  # no secret: not authenticated
    assert answer.status_code in (400, 401)
    assert "access_token" not in answer.json()


def test_wrong_password_shows_the_sign_in_page_again(realm: Realm) -> None:
    params = authorize_params(realm, new_verifier())
    with httpx.Client(base_url=realm.base, timeout=30) as browser:
        page = browser.get("/auth/authorize", params=params)
        fields = _fields(page.text)
        fields.update(username=realm.user, password="not-the-password")
        again = browser.post("/auth/authorize", data=fields)
        assert again.status_code == 401
        assert "Wrong user name or password" in again.text
        assert "location" not in again.headers
        forged = {
            **_fields(page.text),
            "csrf": "forged",
            "username": realm.user,
            "password": PASSWORD,
        }
        assert browser.post("/auth/authorize", data=forged).status_code == 403


def test_an_approval_ticket_is_bound_to_its_request(realm: Realm) -> None:
    params = authorize_params(realm, new_verifier())
    with httpx.Client(base_url=realm.base, timeout=30) as browser:
        page = browser.get("/auth/authorize", params=params)
        fields = _fields(page.text)
        fields.update(username=realm.user, password=PASSWORD)
        approval = browser.post("/auth/authorize", data=fields)
        decide = _fields(approval.text)
        decide.update(decision="approve", code_challenge=challenge_of(new_verifier()))
        answer = browser.post("/auth/authorize", data=decide)
        assert answer.status_code == 403
        assert "location" not in answer.headers


# --- refresh tokens ----------------------------------------------------------------


def test_refresh_rotates_and_a_replayed_one_revokes_the_family(realm: Realm) -> None:
    verifier = new_verifier()
    code, _ = get_code(realm, verifier)
    first = exchange(realm, code, verifier).json()

    def refresh(token: str, **extra: str) -> httpx.Response:
        form = {"grant_type": "refresh_token", "refresh_token": token, "client_id": realm.app}
        return httpx.post(realm.token_url, data={**form, **extra})

    second = refresh(first["refresh_token"], scope="patient/*.rs offline_access")
    assert second.status_code == 200, second.text
    rotated = second.json()
    assert rotated["refresh_token"] != first["refresh_token"]
    assert rotated["scope"] == "patient/*.rs offline_access"
    assert rotated["patient"] == realm.patient
    assert introspect(realm, rotated["access_token"])["active"] is True
    wider = refresh(rotated["refresh_token"], scope="user/*.cruds")
    assert wider.status_code == 400
    assert refresh(first["refresh_token"]).status_code == 400  # replay of the rotated one
    assert introspect(realm, rotated["access_token"]) == {"active": False}
    assert introspect(realm, first["access_token"]) == {"active": False}


# --- introspection and revocation --------------------------------------------------


def test_introspection_needs_a_confidential_client_and_says_only_inactive(realm: Realm) -> None:
    token = medbridge(realm.server, "token", "--scope", "system/*.rs").stdout.splitlines()[-1]
    anonymous = httpx.post(f"{realm.base}/auth/introspect", data={"token": token})
    assert anonymous.status_code == 401
    public = httpx.post(
        f"{realm.base}/auth/introspect", data={"token": token, "client_id": realm.app}
    )
    assert public.status_code == 401
    wrong_secret = httpx.post(
        f"{realm.base}/auth/introspect", data={"token": token}, auth=(realm.rs, RS_SECRET + "x")
    )
    assert wrong_secret.status_code == 401
    header, payload, signature = token.split(".")
    for bad in ("garbage", f"{header}.{payload}.{signature[:-4]}AAAA", token + "x"):
        assert introspect(realm, bad) == {"active": False}


def test_revocation_takes_effect_on_the_next_request(realm: Realm) -> None:
    verifier = new_verifier()
    code, _ = get_code(realm, verifier)
    issued = exchange(realm, code, verifier).json()
    other = httpx.post(
        f"{realm.base}/auth/revoke",
        auth=(realm.rs, RS_SECRET),
        data={"token": issued["access_token"]},
    )
    assert other.status_code == 200  # another client's token: answered, not revoked
    assert introspect(realm, issued["access_token"])["active"] is True
    revoked = httpx.post(
        f"{realm.base}/auth/revoke", data={"token": issued["access_token"], "client_id": realm.app}
    )
    assert revoked.status_code == 200
    assert revoked.headers["cache-control"] == "no-store"
    assert introspect(realm, issued["access_token"]) == {"active": False}
    httpx.post(
        f"{realm.base}/auth/revoke", data={"token": issued["refresh_token"], "client_id": realm.app}
    )
    refresh = httpx.post(
        realm.token_url,
        data={
            "grant_type": "refresh_token",
            "refresh_token": issued["refresh_token"],
            "client_id": realm.app,
        },
    )
    assert refresh.status_code == 400
    unknown = httpx.post(
        f"{realm.base}/auth/revoke", data={"token": "never-issued", "client_id": realm.app}
    )
    assert unknown.status_code == 200


# --- backend services: client_credentials with private_key_jwt ---------------------


def assertion(
    realm: Realm, key: Any = None, header: dict[str, Any] | None = None, **claims: Any
) -> str:
    now = int(time.time())
    body = {
        "iss": realm.backend,
        "sub": realm.backend,
        "aud": realm.token_url,
        "exp": now + 240,
        "iat": now,
        "jti": secrets.token_hex(16),
        **claims,
    }
    signer = key or realm.backend_key
    algorithm = "RS384" if isinstance(signer, RSAKey) else "ES384"
    head = {"alg": algorithm, "kid": signer.kid, "typ": "JWT", **(header or {})}
    return jwt.encode(head, body, signer, algorithms=[algorithm])


def backend_token(realm: Realm, signed: str, scope: str = "system/*.rs") -> httpx.Response:
    return httpx.post(
        realm.token_url,
        data={
            "grant_type": "client_credentials",
            "scope": scope,
            "client_assertion_type": "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
            "client_assertion": signed,
        },
        timeout=30,
    )


def test_backend_services_token(realm: Realm) -> None:
    asked = "system/*.rs system/Observation.rs system/Observation.cud user/*.rs"
    answer = backend_token(realm, assertion(realm), asked)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["expires_in"] <= 300
    assert "refresh_token" not in body
    # what the client may have, of what it asked: a narrower scope its registration
    # covers is granted; writes and another context are not
    assert body["scope"] == "system/*.rs system/Observation.rs"
    assert answer.headers["cache-control"] == "no-store"
    claims = introspect(realm, body["access_token"])
    assert claims["sub"] == realm.backend
    assert claims["exp"] - claims["iat"] <= 300


def _unsigned(realm: Realm) -> str:
    head = _b64(json.dumps({"alg": "none", "typ": "JWT"}).encode())
    now = int(time.time())
    body = _b64(
        json.dumps(
            {
                "iss": realm.backend,
                "sub": realm.backend,
                "aud": realm.token_url,
                "exp": now + 60,
                "jti": secrets.token_hex(8),
            }
        ).encode()
    )
    return f"{head}.{body}."


def _hmac_with_public_key(realm: Realm) -> str:
    head = _b64(json.dumps({"alg": "HS256", "kid": realm.backend_key.kid}).encode())
    now = int(time.time())
    body = _b64(
        json.dumps(
            {
                "iss": realm.backend,
                "sub": realm.backend,
                "aud": realm.token_url,
                "exp": now + 60,
                "jti": secrets.token_hex(8),
            }
        ).encode()
    )
    public = realm.backend_key.as_pem(private=False)
    mac = hmac.new(public, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(mac)}"


def _stranger(kid: str) -> ECKey:
    return ECKey.generate_key("P-384", {"kid": kid}, private=True)


ATTACKS: dict[str, Any] = {
    "alg none": _unsigned,
    "HS256 keyed with the public key": _hmac_with_public_key,
    "embedded jwk": lambda realm: assertion(
        realm, _stranger("x"), {"jwk": _stranger("x").as_dict(private=False)}
    ),
    "jku not registered": lambda realm: assertion(
        realm, header={"jku": "https://evil.example/jwks.json"}
    ),
    "unknown kid": lambda realm: assertion(realm, _stranger("not-registered")),
    "registered kid, another key": lambda realm: assertion(realm, _stranger(realm.backend_key.kid)),
    "expired": lambda realm: assertion(realm, exp=int(time.time()) - 600),
    "exp too far ahead": lambda realm: assertion(realm, exp=int(time.time()) + 3600),
    "wrong aud": lambda realm: assertion(realm, aud=f"{realm.base}/fhir"),
    "iss is not sub": lambda realm: assertion(realm, iss="someone-else"),
    "no jti": lambda realm: assertion(realm, jti=None),
    "header over 64 KB": lambda realm: assertion(realm, header={"kid": "k" * 70_000}),
}


# what each refusal says, so a case cannot pass by failing for another reason
REASONS = {
    "alg none": "RS384/ES384",
    "HS256 keyed with the public key": "RS384/ES384",
    "embedded jwk": "not trusted",
    "jku not registered": "jku",
    "unknown kid": "signature",
    "registered kid, another key": "signature",
    "expired": "expired",
    "exp too far ahead": "too far ahead",
    "wrong aud": "aud",
    "iss is not sub": "Issuer and Subject",
    "no jti": "jti",
    "header over 64 KB": "too large",
}


@pytest.mark.parametrize("attack", sorted(ATTACKS))
def test_private_key_jwt_attacks_are_refused(realm: Realm, attack: str) -> None:
    answer = backend_token(realm, ATTACKS[attack](realm))
    assert answer.status_code in (400, 401), answer.text
    assert answer.json()["error"] == "invalid_client"
    assert REASONS[attack] in answer.json()["error_description"]
    assert "access_token" not in answer.json()


def test_a_replayed_assertion_is_refused(realm: Realm) -> None:
    signed = assertion(realm)
    assert backend_token(realm, signed).status_code == 200
    replay = backend_token(realm, signed)
    assert replay.status_code in (400, 401)
    assert replay.json()["error"] == "invalid_client"
    assert "used before" in replay.json()["error_description"]


def test_a_public_client_cannot_use_client_credentials(realm: Realm) -> None:
    answer = httpx.post(
        realm.token_url,
        data={"grant_type": "client_credentials", "client_id": realm.app, "scope": "system/*.rs"},
    )
    assert answer.status_code in (400, 401)
    assert "access_token" not in answer.json()


def test_authorize_by_post(realm: Realm) -> None:
    """SMART `authorize-post`: the app posts its request instead of a query string."""
    params = authorize_params(realm, new_verifier())
    page = httpx.post(f"{realm.base}/auth/authorize", data=params)
    assert page.status_code == 200
    assert _fields(page.text)["state"] == params["state"]
    assert 'name="csrf"' in page.text


def test_malformed_forms_are_answered_not_crashed(realm: Realm) -> None:
    as_json = httpx.post(realm.token_url, json={"grant_type": "client_credentials"})
    assert as_json.status_code == 400
    assert as_json.json()["error"] == "invalid_request"
    huge = httpx.post(realm.token_url, data={"grant_type": "x", "pad": "a" * 300_000})
    assert huge.status_code == 400
    assert huge.json()["error"] == "invalid_request"
    unknown = httpx.post(realm.token_url, data={"grant_type": "password", "username": "x"})
    assert unknown.status_code == 400
    assert unknown.json()["error"] == "unsupported_grant_type"
    page = httpx.get(f"{realm.base}/auth/authorize", params={"client_id": "no-such-client"})
    assert page.status_code == 400
    assert "location" not in page.headers


class _JwksHandler(http.server.BaseHTTPRequestHandler):
    body = b"{}"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def test_backend_keys_fetched_from_the_registered_url(realm: Realm) -> None:
    """A client registered with --jwks-url: its keys are read from there (RS384 here)."""
    key = RSAKey.generate_key(2048, {"kid": f"url-{realm.suffix}", "alg": "RS384"}, private=True)
    handler = type("Handler", (_JwksHandler,), {
        "body": json.dumps({"keys": [key.as_dict(private=False)]}).encode()
    })  # fmt: skip
    keys_server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=keys_server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{keys_server.server_address[1]}/jwks.json"
        client = f"remote-{realm.suffix}"
        done = medbridge(realm.server, "clients", "add", client, "--jwks-url", url,
                         "--scope", "system/*.rs")  # fmt: skip
        assert done.returncode == 0, done.stderr
        remote = replace(realm, backend=client)
        answer = backend_token(remote, assertion(remote, key))
        assert answer.status_code == 200, answer.text
        assert introspect(realm, answer.json()["access_token"])["client_id"] == client
        stranger = RSAKey.generate_key(2048, {"kid": key.kid}, private=True)
        refused = backend_token(remote, assertion(remote, stranger))
        assert refused.json()["error"] == "invalid_client"
    finally:
        keys_server.shutdown()
        keys_server.server_close()


def test_token_command_for_a_registered_client(realm: Realm) -> None:
    done = medbridge(realm.server, "token", "--scope", "system/*.rs", "--client", realm.backend)
    assert done.returncode == 0, done.stderr
    claims = introspect(realm, done.stdout.strip().splitlines()[-1])
    assert claims["client_id"] == realm.backend
    unknown = medbridge(realm.server, "token", "--scope", "system/*.rs", "--client", "nobody")
    assert unknown.returncode == 1
    assert "no client" in unknown.stderr


def test_a_practitioner_picks_the_patient_in_a_standalone_launch(
    realm: Realm, tmp_path: Path
) -> None:
    (tmp_path / "password").write_text(PASSWORD + "\n")
    doctor = f"doc-{realm.suffix}"
    practitioner = f"Practitioner/d-{realm.suffix}"
    password_file = str(tmp_path / "password")
    done = medbridge(
        realm.server, "users", "add", doctor, "--password-file", password_file,
        "--fhir-user", practitioner,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    # the Patient to pick, written with an operator's token (enforcement may be on)
    token = medbridge(realm.server, "token", "--scope", "user/*.cruds").stdout.splitlines()[-1]
    patient = f"picked-{realm.suffix}"
    written = httpx.put(
        f"{realm.base}/fhir/Patient/{patient}",
        json={"resourceType": "Patient", "id": patient},
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
    )
    assert written.status_code in (200, 201), written.text

    def launch(choice: str) -> httpx.Response:
        verifier = new_verifier()
        params = authorize_params(realm, verifier)
        with httpx.Client(base_url=realm.base, timeout=30) as browser:
            page = browser.get("/auth/authorize", params=params)
            fields = {**_fields(page.text), "username": doctor, "password": PASSWORD}
            approval = browser.post("/auth/authorize", data=fields)
            assert 'name="patient"' in approval.text
            decide = {**_fields(approval.text), "decision": "approve", "patient": choice}
            answer = browser.post("/auth/authorize", data=decide)
        if answer.status_code != 302:
            return answer
        code = parse_qs(urlsplit(answer.headers["location"]).query)["code"][0]
        return exchange(realm, code, verifier)

    assert launch("no-such-patient").status_code == 400
    assert launch("../Observation/x").status_code == 400
    granted = launch(patient)
    assert granted.status_code == 200, granted.text
    assert granted.json()["patient"] == patient
    assert introspect(realm, granted.json()["access_token"])["fhirUser"] == practitioner


def test_repeated_wrong_passwords_lock_the_account(realm: Realm, tmp_path: Path) -> None:
    (tmp_path / "password").write_text(PASSWORD + "\n")
    user = f"locked-{realm.suffix}"
    done = medbridge(realm.server, "users", "add", user, "--password-file",
                     str(tmp_path / "password"), "--fhir-user", "Patient/locked")  # fmt: skip
    assert done.returncode == 0, done.stderr
    params = authorize_params(realm, new_verifier())
    with httpx.Client(base_url=realm.base, timeout=30) as browser:
        fields = _fields(browser.get("/auth/authorize", params=params).text)
        guess = {**fields, "username": user, "password": "wrong-password"}
        for _ in range(5):  # MEDBRIDGE_SMART_LOCKOUT_FAILURES
            wrong = browser.post("/auth/authorize", data=guess)
            assert "Wrong user name or password" in wrong.text
        right = browser.post("/auth/authorize", data={**guess, "password": PASSWORD})
        assert right.status_code == 401
        assert "locked" in right.text
        assert 'name="ticket"' not in right.text
