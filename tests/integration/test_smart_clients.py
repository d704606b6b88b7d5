"""Unmodified SMART clients against the authorization server with auth on (issue 14).

- `fhirclient` (SMART's Python client, 4.4) in a standalone patient launch: it discovers
  the endpoints from the CapabilityStatement's `oauth-uris` (it does not read
  `.well-known/smart-configuration`), builds the authorize URL with PKCE S256 itself,
  and exchanges the code in `handle_callback`; the pages between are driven with httpx
  as a browser would (tests/integration/test_smart_browser.py drives a real one).
- a backend service that generates its own key with `cryptography`, registers its public
  JWK Set with `medbridge clients add --jwks-file`, signs its own client assertion with
  joserfc and gets its token through `fhirclient` (`jwt_token`, client_credentials).
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from fhirclient import client as fhir_client
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException
from joserfc import jwt
from joserfc.jwk import ECKey

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import IsolatedStore, RunningServer, start_server
from tests.support.smart_apps import PASSWORD, Portal, checked, open_portal, redirect_target

pytestmark = pytest.mark.integration

OAUTH_URIS = "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"


@pytest.fixture(scope="module")
def auth_server(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("clients-server"), store.uri, auth=True)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def portal(
    auth_server: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Portal]:
    with redirect_target() as callbacks:
        yield open_portal(auth_server, callbacks, tmp_path_factory.mktemp("portal"))


def _hidden_fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))


def sign_in_and_approve(portal: Portal, authorize_url: str) -> str:
    """The pages a person sees, followed like a browser; the redirect the app receives."""
    with httpx.Client(timeout=30) as browser:
        sign_in = browser.get(authorize_url)
        assert sign_in.status_code == 200, sign_in.text
        credentials = {"username": portal.user, "password": PASSWORD}
        approval = browser.post(
            f"{portal.base}/auth/authorize", data={**_hidden_fields(sign_in.text), **credentials}
        )
        assert approval.status_code == 200, approval.text
        decision = {**_hidden_fields(approval.text), "decision": "approve"}
        redirect = browser.post(f"{portal.base}/auth/authorize", data=decision)
    assert redirect.status_code == 302, redirect.text
    location: str = redirect.headers["location"]
    assert location.startswith(portal.redirect_uri + "?")
    return location


def fhirclient_for(portal: Portal, scope: str) -> Any:
    return fhir_client.FHIRClient(
        settings={
            "app_id": portal.app,
            "api_base": portal.server.fhir_base,
            "redirect_uri": portal.redirect_uri,
            "scope": scope,
        }
    )


def test_fhirclient_discovers_the_endpoints_the_well_known_document_names(
    portal: Portal,
) -> None:
    smart = fhirclient_for(portal, "openid fhirUser patient/*.rs")
    assert smart.prepare() is False  # discovered, no token yet
    auth = smart.server.auth
    well_known = httpx.get(f"{portal.server.fhir_base}/.well-known/smart-configuration").json()
    assert auth._authorize_uri == well_known["authorization_endpoint"]
    assert auth._token_uri == well_known["token_endpoint"]
    assert auth._authorize_uri == f"{portal.base}/auth/authorize"
    security = smart.server.capabilityStatement.rest[0].security
    assert OAUTH_URIS in [extension.url for extension in security.extension]


def test_fhirclient_standalone_patient_launch(portal: Portal) -> None:
    smart = fhirclient_for(portal, "openid fhirUser offline_access patient/*.rs")
    authorize_url = smart.authorize_url
    # fhirclient adds launch/patient (no patient known yet) and PKCE S256 on its own
    assert "code_challenge_method=S256" in authorize_url
    assert "launch%2Fpatient" in authorize_url

    smart.handle_callback(sign_in_and_approve(portal, authorize_url))

    assert smart.ready
    assert smart.patient_id == portal.patient
    assert smart.launch_context["need_patient_banner"] is True
    assert smart.patient is not None
    assert smart.patient.name[0].family == "Own"
    with pytest.raises(FHIRNotFoundException):
        Patient.read(portal.other_patient, smart.server)

    # offline_access gave a refresh token: fhirclient's reauthorize rotates it
    first_token, first_refresh = smart.server.auth.access_token, smart.server.auth.refresh_token
    assert first_refresh
    assert smart.reauthorize() is True
    assert smart.server.auth.access_token != first_token
    assert smart.server.auth.refresh_token != first_refresh
    assert Patient.read(portal.patient, smart.server).id == portal.patient


def test_fhirclient_with_a_trailing_slash_base_is_refused_by_audience(portal: Portal) -> None:
    """fhirclient sends `api_base` as given as `aud`; `.../fhir/` is another audience than
    `.../fhir`, so the app gets its error back (never a code), and says so."""
    smart = fhir_client.FHIRClient(
        settings={
            "app_id": portal.app,
            "api_base": portal.server.fhir_base + "/",
            "redirect_uri": portal.redirect_uri,
            "scope": "openid fhirUser patient/*.rs",
        }
    )
    refused = httpx.get(smart.authorize_url, timeout=30)
    assert refused.status_code == 302
    location = refused.headers["location"]
    assert location.startswith(portal.redirect_uri + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["error"] == ["invalid_request"]
    assert "code" not in query
    with pytest.raises(Exception, match="must be this FHIR base"):  # the error_description
        smart.handle_callback(location)
    assert not smart.ready


# --- backend services ---------------------------------------------------------------


def generated_backend_key(kid: str) -> ECKey:
    """A P-384 key the client makes itself (cryptography), as joserfc's JWK for ES384."""
    private = ec.generate_private_key(ec.SECP384R1())
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return ECKey.import_key(pem, {"kid": kid, "alg": "ES384", "use": "sig"})


def client_assertion(key: ECKey, client_id: str, token_url: str) -> str:
    now = int(time.time())
    claims = {
        "iss": client_id,
        "sub": client_id,
        "aud": token_url,
        "iat": now,
        "exp": now + 120,
        "jti": secrets.token_hex(16),
    }
    header = {"alg": "ES384", "kid": key.kid, "typ": "JWT"}
    return jwt.encode(header, claims, key, algorithms=["ES384"])


def test_backend_service_with_its_own_key_reads_fhir(portal: Portal, tmp_path: Path) -> None:
    server = portal.server
    client_id = f"backend-{secrets.token_hex(4)}"
    key = generated_backend_key(f"{client_id}-1")
    jwks = tmp_path / "jwks.json"
    jwks.write_text(f'{{"keys": [{_public_json(key)}]}}')
    checked(server, "clients", "add", client_id, "--jwks-file", str(jwks),
            "--scope", "system/*.rs")  # fmt: skip

    token_url = f"{server.base_url}/auth/token"
    service = fhir_client.FHIRClient(
        settings={
            "app_id": client_id,
            "api_base": server.fhir_base,
            "scope": "system/*.rs",
            "jwt_token": client_assertion(key, client_id, token_url),
        }
    )
    service.wants_patient = False  # a backend service has no launch context
    service.prepare()
    assert service.server.auth._token_uri == token_url
    service.authorize()

    context = service.launch_context
    assert context["scope"] == "system/*.rs"
    # fhirclient turns expires_in into expires_at: a backend token lives at most 5 minutes
    assert service.server.auth.expires_at <= datetime.now() + timedelta(seconds=300)
    assert "refresh_token" not in context
    assert Patient.read(portal.patient, service.server).name[0].family == "Own"
    assert Patient.read(portal.other_patient, service.server).name[0].family == "Other"

    bearer = {"Authorization": f"Bearer {service.server.auth.access_token}"}
    write = httpx.post(
        f"{server.fhir_base}/Patient",
        json={"resourceType": "Patient"},
        headers={**bearer, "Content-Type": "application/fhir+json"},
    )
    assert write.status_code == 403  # system/*.rs reads and searches, never writes

    # the same signed assertion is accepted once: a replay is refused
    replay = httpx.post(
        token_url,
        data={
            "grant_type": "client_credentials",
            "scope": "system/*.rs",
            "client_assertion_type": ASSERTION_TYPE,
            "client_assertion": service.jwt_token,
        },
    )
    assert replay.status_code in (400, 401)
    assert replay.json()["error"] == "invalid_client"


def _public_json(key: ECKey) -> str:
    public = key.as_dict(private=False)
    assert "d" not in public
    return json.dumps(public)
