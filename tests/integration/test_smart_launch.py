"""The EHR launch and a RelatedPerson's patient context over real HTTP, auth on.

An EHR (the operator's `medbridge launch` command, through the running server) makes a
launch context and hands its value to the app; the app's `/auth/authorize` with
`launch` and scope `launch` gets a token carrying the launch's patient and encounter,
with no patient picker. Unknown, reused, other-client and other-user launches are
refused. A parent signed in as `RelatedPerson/ID` gets the child's compartment.
"""

from __future__ import annotations

import json
import re
import secrets
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fhirclient import client as fhir_client
from fhirclient.models.patient import Patient
from fhirclient.server import FHIRNotFoundException

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import IsolatedStore, RunningServer, start_server
from tests.support.smart_apps import admin_token, checked, medbridge, s256, write_patient

pytestmark = pytest.mark.integration

REDIRECT = "https://app.example/cb"
PASSWORD = "ehr-launch-password-1"
EHR_SCOPES = "launch openid fhirUser patient/*.rs"


@dataclass
class Ehr:
    server: RunningServer
    doctor: str
    nurse: str
    app: str
    other_app: str
    patient: str
    other_patient: str
    files: Path

    @property
    def base(self) -> str:
        return self.server.base_url


@pytest.fixture(scope="module")
def ehr(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[Ehr]:
    server = start_server(tmp_path_factory.mktemp("launch-server"), store.uri, auth=True)
    try:
        files = tmp_path_factory.mktemp("launch")
        suffix = uuid.uuid4().hex[:8]
        ehr = Ehr(server, f"doc-{suffix}", f"nurse-{suffix}", f"ehr-app-{suffix}",
                  f"other-app-{suffix}", f"pt-{suffix}", f"other-{suffix}", files)  # fmt: skip
        (files / "password").write_text(PASSWORD + "\n")
        for user, practitioner in ((ehr.doctor, "d1"), (ehr.nurse, "n1")):
            checked(server, "users", "add", user, "--password-file", str(files / "password"),
                    "--fhir-user", f"Practitioner/{practitioner}-{suffix}")  # fmt: skip
        for app in (ehr.app, ehr.other_app):
            checked(server, "clients", "add", app, "--public", "--redirect-uri", REDIRECT,
                    "--scope", f"{EHR_SCOPES} launch/patient")  # fmt: skip
        token = admin_token(server, "system/*.cruds")
        write_patient(server, token, ehr.patient, "InContext")
        write_patient(server, token, ehr.other_patient, "Other")
        yield ehr
    finally:
        server.stop()


def make_launch(ehr: Ehr, *options: str) -> tuple[dict[str, object], str]:
    """`medbridge launch`: its JSON line and the launch value (the last line)."""
    lines = checked(ehr.server, "launch", *options).strip().splitlines()
    return json.loads(lines[-2]), lines[-1]


def _fields(html: str) -> dict[str, str]:
    return dict(re.findall(r'<input type="hidden" name="([^"]+)" value="([^"]*)">', html))


def params_for(ehr: Ehr, verifier: str, **changes: str | None) -> dict[str, str]:
    params: dict[str, str | None] = {
        "response_type": "code", "client_id": ehr.app, "redirect_uri": REDIRECT,
        "scope": EHR_SCOPES, "state": "st-" + secrets.token_hex(4),
        "aud": f"{ehr.base}/fhir", "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }  # fmt: skip
    params.update(changes)
    return {name: value for name, value in params.items() if value is not None}


def query_of(answer: httpx.Response) -> dict[str, str]:
    assert answer.status_code == 302, answer.text
    location = urlsplit(answer.headers["location"])
    assert f"{location.scheme}://{location.netloc}{location.path}" == REDIRECT
    return {name: values[0] for name, values in parse_qs(location.query).items()}


def authorize(
    ehr: Ehr, params: dict[str, str], user: str, seen: list[str] | None = None
) -> httpx.Response:
    """The pages as a browser drives them: the answer to the sign-in's first page if it
    is not the sign-in page, else the answer to Allow (or the page refusing it)."""
    with httpx.Client(base_url=ehr.base, timeout=30) as browser:
        page = browser.get("/auth/authorize", params=params)
        if page.status_code != 200:
            return page
        fields = {**_fields(page.text), "username": user, "password": PASSWORD}
        approval = browser.post("/auth/authorize", data=fields)
        if approval.status_code != 200:
            return approval
        if seen is not None:
            seen.append(approval.text)
        return browser.post("/auth/authorize", data={**_fields(approval.text),
                                                      "decision": "approve"})  # fmt: skip


def token_for(ehr: Ehr, params: dict[str, str], verifier: str, user: str) -> dict[str, object]:
    code = query_of(authorize(ehr, params, user))["code"]
    answer = httpx.post(f"{ehr.base}/auth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": params["client_id"], "code_verifier": verifier,
    }, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text
    body: dict[str, object] = answer.json()
    return body


def read(ehr: Ehr, token: object, path: str) -> int:
    headers = {"Authorization": f"Bearer {token}"}
    return httpx.get(f"{ehr.server.fhir_base}/{path}", headers=headers, timeout=30).status_code


# --- the EHR launch -------------------------------------------------------------------


def test_an_ehr_launch_gives_its_patient_and_encounter_without_a_picker(ehr: Ehr) -> None:
    details, launch = make_launch(ehr, "--patient", ehr.patient, "--encounter", "enc-1",
                                  "--user", ehr.doctor, "--client", ehr.app)  # fmt: skip
    assert details == {"expires_in": 300, "patient": ehr.patient, "encounter": "enc-1"}
    verifier, pages = secrets.token_urlsafe(48), []
    params = params_for(ehr, verifier, launch=launch)
    code = query_of(authorize(ehr, params, ehr.doctor, pages))["code"]
    assert 'name="patient"' not in pages[0]  # no picker: the EHR chose
    assert ehr.patient in pages[0]
    assert "encounter <strong>enc-1</strong>" in pages[0]
    answer = httpx.post(f"{ehr.base}/auth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": ehr.app, "code_verifier": verifier,
    }, timeout=30)  # fmt: skip
    body = answer.json()
    assert answer.status_code == 200, body
    assert (body["patient"], body["encounter"]) == (ehr.patient, "enc-1")
    assert "launch" in body["scope"].split()
    assert read(ehr, body["access_token"], f"Patient/{ehr.patient}") == 200
    assert read(ehr, body["access_token"], f"Patient/{ehr.other_patient}") == 404


def test_fhirclient_in_an_ehr_launch(ehr: Ehr) -> None:
    """SMART's Python client, unmodified, given the EHR's value as `launch_token`: it
    adds the scope `launch` and the `launch` parameter itself; the context it receives
    is the launch's."""
    _, launch = make_launch(ehr, "--patient", ehr.patient, "--encounter", "enc-2")
    smart = fhir_client.FHIRClient(settings={
        "app_id": ehr.app, "api_base": ehr.server.fhir_base, "redirect_uri": REDIRECT,
        "scope": "openid fhirUser patient/*.rs", "launch_token": launch,
    })  # fmt: skip
    authorize_url = smart.authorize_url
    assert f"launch={launch}" in authorize_url
    with httpx.Client(timeout=30) as browser:
        sign_in = browser.get(authorize_url)
        assert sign_in.status_code == 200, sign_in.text
        fields = {**_fields(sign_in.text), "username": ehr.doctor, "password": PASSWORD}
        approval = browser.post(f"{ehr.base}/auth/authorize", data=fields)
        decision = {**_fields(approval.text), "decision": "approve"}
        redirect = browser.post(f"{ehr.base}/auth/authorize", data=decision)
    assert redirect.status_code == 302, redirect.text
    smart.handle_callback(redirect.headers["location"])
    assert smart.ready
    assert smart.patient_id == ehr.patient
    assert smart.launch_context["encounter"] == "enc-2"
    assert "launch" in smart.launch_context["scope"].split()
    assert smart.patient.name[0].family == "InContext"
    with pytest.raises(FHIRNotFoundException):
        Patient.read(ehr.other_patient, smart.server)


def test_a_launch_is_used_once(ehr: Ehr) -> None:
    _, launch = make_launch(ehr, "--patient", ehr.patient)
    verifier = secrets.token_urlsafe(48)
    assert (
        token_for(ehr, params_for(ehr, verifier, launch=launch), verifier, ehr.doctor)["patient"]
        == ehr.patient
    )
    again = params_for(ehr, secrets.token_urlsafe(48), launch=launch)
    refused = query_of(authorize(ehr, again, ehr.doctor))
    assert refused["error"] == "invalid_request"
    assert "used already" in refused["error_description"]
    assert refused["state"] == again["state"]


@pytest.mark.parametrize(
    ("launch", "scope", "said"),
    [
        ("not-a-launch-we-made", EHR_SCOPES, "unknown launch"),
        (None, EHR_SCOPES, "needs the EHR's 'launch' parameter"),
        ("made", "openid patient/*.rs", "needs the scope 'launch'"),
    ],
)
def test_a_launch_request_that_does_not_fit_goes_back_to_the_app_as_an_error(
    ehr: Ehr, launch: str | None, scope: str, said: str
) -> None:
    if launch == "made":
        launch = make_launch(ehr, "--patient", ehr.patient)[1]
    params = params_for(ehr, secrets.token_urlsafe(48), launch=launch, scope=scope)
    answer = httpx.get(f"{ehr.base}/auth/authorize", params=params, timeout=30)
    query = query_of(answer)
    assert query["error"] == "invalid_request"
    assert said in query["error_description"]
    assert query["state"] == params["state"]


def test_another_clients_launch_is_unknown_to_it_and_stays_usable(ehr: Ehr) -> None:
    _, launch = make_launch(ehr, "--patient", ehr.patient, "--client", ehr.app)
    stolen = params_for(ehr, secrets.token_urlsafe(48), launch=launch, client_id=ehr.other_app)
    query = query_of(httpx.get(f"{ehr.base}/auth/authorize", params=stolen, timeout=30))
    assert (query["error"], query["error_description"]) == ("invalid_request",
                                                            "launch: unknown launch")  # fmt: skip
    verifier = secrets.token_urlsafe(48)
    granted = token_for(ehr, params_for(ehr, verifier, launch=launch), verifier, ehr.doctor)
    assert granted["patient"] == ehr.patient


def test_a_launch_for_one_user_is_refused_to_another(ehr: Ehr) -> None:
    _, launch = make_launch(ehr, "--patient", ehr.patient, "--user", ehr.doctor)
    answer = authorize(ehr, params_for(ehr, secrets.token_urlsafe(48), launch=launch), ehr.nurse)
    assert answer.status_code == 403
    assert "another user" in answer.text
    verifier = secrets.token_urlsafe(48)  # not spent by the refusal
    granted = token_for(ehr, params_for(ehr, verifier, launch=launch), verifier, ehr.doctor)
    assert granted["patient"] == ehr.patient


@pytest.mark.parametrize(
    ("options", "said"),
    [
        (["--patient", "no-such-patient"], "no Patient/no-such-patient"),
        (["--patient", "PATIENT", "--user", "nobody"], "no user 'nobody'"),
        (["--patient", "PATIENT", "--client", "nobody"], "no client 'nobody'"),
        (["--patient", "PATIENT", "--encounter", "a/b"], "encounter: a FHIR id"),
    ],
)
def test_the_launch_command_refuses_clearly(ehr: Ehr, options: list[str], said: str) -> None:
    done = medbridge(ehr.server, "launch", *[ehr.patient if o == "PATIENT" else o for o in options])
    assert done.returncode == 1
    assert said in done.stderr


def test_discovery_announces_the_ehr_launch(ehr: Ehr) -> None:
    smart = httpx.get(f"{ehr.base}/fhir/.well-known/smart-configuration", timeout=30).json()
    assert {"launch-ehr", "context-ehr-patient", "context-ehr-encounter"} <= set(
        smart["capabilities"]
    )


# --- RelatedPerson users --------------------------------------------------------------


def test_a_related_person_is_confined_to_the_patient_they_are_related_to(ehr: Ehr) -> None:
    token = admin_token(ehr.server, "system/*.cruds")
    related = f"rp-{uuid.uuid4().hex[:8]}"
    written = httpx.put(
        f"{ehr.server.fhir_base}/RelatedPerson/{related}",
        json={"resourceType": "RelatedPerson", "id": related,
              "patient": {"reference": f"Patient/{ehr.patient}"},
              "relationship": [{"coding": [{"code": "MTH"}]}]},
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
        timeout=30,
    )  # fmt: skip
    assert written.status_code in (200, 201), written.text
    parent = f"mum-{related}"
    checked(ehr.server, "users", "add", parent, "--password-file", str(ehr.files / "password"),
            "--fhir-user", f"RelatedPerson/{related}")  # fmt: skip
    verifier, pages = secrets.token_urlsafe(48), []
    params = params_for(ehr, verifier, scope="launch/patient openid fhirUser patient/*.rs")
    code = query_of(authorize(ehr, params, parent, pages))["code"]
    assert 'name="patient"' not in pages[0]
    assert ehr.patient in pages[0]
    body = httpx.post(f"{ehr.base}/auth/token", data={
        "grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
        "client_id": ehr.app, "code_verifier": verifier,
    }, timeout=30).json()  # fmt: skip
    assert body["patient"] == ehr.patient
    assert read(ehr, body["access_token"], f"Patient/{ehr.patient}") == 200
    assert read(ehr, body["access_token"], f"Patient/{ehr.other_patient}") == 404
    # the operator's token command gives the parent's token the same context
    minted = checked(ehr.server, "token", "--scope", "patient/*.rs", "--user", parent)
    assert json.loads(minted.splitlines()[-2])["patient"] == ehr.patient
    # the EHR cannot launch the parent into another child's record either
    _, launch = make_launch(ehr, "--patient", ehr.other_patient)
    refused = authorize(ehr, params_for(ehr, secrets.token_urlsafe(48), launch=launch), parent)
    assert refused.status_code == 403
    assert "cannot open" in refused.text


def test_a_related_person_without_a_record_gets_no_patient_context(ehr: Ehr) -> None:
    orphan = f"orphan-{uuid.uuid4().hex[:8]}"
    checked(ehr.server, "users", "add", orphan, "--password-file", str(ehr.files / "password"),
            "--fhir-user", f"RelatedPerson/{orphan}")  # fmt: skip
    params = params_for(ehr, secrets.token_urlsafe(48), scope="launch/patient patient/*.rs")
    answer = authorize(ehr, params, orphan)
    assert answer.status_code == 403
    assert f"no RelatedPerson/{orphan}" in answer.text
