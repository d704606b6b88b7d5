"""The image viewer (issue 16): OHIF at /viewer/ on MedBridge's own DICOMweb, signed in
through MedBridge's authorization server, in a real browser (Debian's chromium driven by
Playwright through `executable_path`, never `playwright install`).

A clinician signs in through OHIF's OpenID Connect redirect, sees the study in the study
list, opens it, and the image is drawn (the viewport canvas has pixels that are not the
background); a screenshot is saved to docs/screenshots/viewer.png. A patient signs in to
the same viewer and sees their own study, never another patient's: DICOMweb decides,
the viewer does not filter. Every request the page makes goes to this server's origin.

One server for the module, one browser per test: CPU is scarce on the test machines."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydicom.uid import generate_uid

from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_dicomweb import multipart
from tests.integration.test_smart_browser import CHROMIUM, CHROMIUM_ARGS
from tests.support.dicom import renamed
from tests.support.servers import IsolatedStore, RunningServer, start_server
from tests.support.smart_apps import PASSWORD, admin_token, checked

pytestmark = pytest.mark.integration

SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "viewer.png"
DIST = Path(__file__).resolve().parents[2] / ".viewer/node_modules/@ohif/app/dist"
# OHIF draws the viewport on a black background
BACKGROUND = (0, 0, 0)


@dataclass
class Viewing:
    server: RunningServer
    clinician: str
    patient_user: str
    own_study: str  # the patient user's study
    other_study: str  # another patient's
    own_name: str  # a word of each study's PatientName, as the study list shows it
    other_name: str
    link: str  # the own study's viewer URL, made from its ImagingStudy


@dataclass
class Browsed:
    """What the page asked for while a test drove it."""

    requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)


def _stow_study(server: RunningServer, token: str, patient_id: str, family: str) -> str:
    study = generate_uid()
    data = renamed("CT_small.dcm", study=study, patient_id=patient_id,
                   PatientName=f"{family}^Viewer")  # fmt: skip
    body, content_type = multipart([data])
    answer = httpx.post(
        f"{server.base_url}/dicomweb/studies",
        content=body,
        headers={"Content-Type": content_type, "Authorization": f"Bearer {token}"},
        timeout=60,
    )
    assert answer.status_code == 200, answer.text
    return study


def _imaging_study(server: RunningServer, token: str, study: str) -> dict[str, Any]:
    """The ImagingStudy the imaging linker wrote for the study, once it is there."""
    deadline = time.monotonic() + 60
    while True:
        answer = httpx.get(f"{server.fhir_base}/ImagingStudy/{study}",
                           headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
        if answer.status_code == 200:
            found: dict[str, Any] = answer.json()
            return found
        assert time.monotonic() < deadline, f"no ImagingStudy for {study}: {answer.text[:300]}"
        time.sleep(0.3)


def viewer_link(server: RunningServer, token: str, imaging_study: dict[str, Any]) -> str:
    """The viewer URL of an ImagingStudy as a portal makes it (docs/viewer.md): its
    Endpoint is this server's DICOMweb, its identifier the StudyInstanceUID."""
    (endpoint,) = imaging_study["endpoint"]
    answer = httpx.get(f"{server.fhir_base}/{endpoint['reference']}",
                       headers={"Authorization": f"Bearer {token}"}, timeout=30)  # fmt: skip
    assert answer.status_code == 200, answer.text[:300]
    assert answer.json()["connectionType"]["code"] == "dicom-wado-rs"
    assert answer.json()["address"] == f"{server.base_url}/dicomweb"
    (uid,) = [i["value"] for i in imaging_study["identifier"] if i["system"] == "urn:dicom:uid"]
    return f"{server.base_url}/viewer/viewer?StudyInstanceUIDs={uid.removeprefix('urn:oid:')}"


@pytest.fixture(scope="module")
def viewing(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[Viewing]:
    if not (DIST / "index.html").is_file():
        # ./run test installs the viewer (npm @ohif/app): missing is a broken set-up
        pytest.fail(f"the viewer is not installed at {DIST} (./run test installs it)")
    root = tmp_path_factory.mktemp("viewer")
    server = start_server(root / "server", store.uri, auth=True)
    try:
        token = admin_token(server, "system/*.cruds")
        run = uuid.uuid4().hex[:6]
        own_name, other_name = f"Ownview{run}", f"Otherview{run}"
        own = _stow_study(server, token, f"V{run}A", own_name)
        other = _stow_study(server, token, f"V{run}B", other_name)
        own_study = _imaging_study(server, token, own)
        own_patient = str(own_study["subject"]["reference"]).removeprefix("Patient/")
        _imaging_study(server, token, other)
        link = viewer_link(server, token, own_study)
        (root / "password").write_text(PASSWORD + "\n")
        clinician, patient_user = f"dr-{run}", f"pat-{run}"
        checked(server, "users", "add", clinician, "--password-file", str(root / "password"),
                "--fhir-user", f"Practitioner/dr-{run}")  # fmt: skip
        checked(server, "users", "add", patient_user, "--password-file",
                str(root / "password"), "--fhir-user", f"Patient/{own_patient}")  # fmt: skip
        yield Viewing(server, clinician, patient_user, own, other, own_name, other_name, link)
    finally:
        server.stop()


@contextmanager
def browser_page(browsed: Browsed) -> Iterator[Any]:
    import playwright.sync_api as playwright_api  # locked in requirements.lock

    if shutil.which(CHROMIUM) is None:
        pytest.fail(f"{CHROMIUM} is not installed (./run test installs Debian's chromium)")
    with (
        playwright_api.sync_playwright() as playwright,
        tempfile.TemporaryDirectory(prefix="medbridge-chromium-") as profile,
    ):
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 800},
        )  # fmt: skip
        try:
            page = browser.new_page()
            page.on("request", lambda request: browsed.requests.append(request.url))
            page.on(
                "console",
                lambda message: (
                    message.type == "error" and browsed.console_errors.append(message.text)
                ),
            )
            yield page
        finally:
            browser.close()


def sign_in(page: Any, user: str) -> None:
    """MedBridge's own sign-in and approval pages, reached by OHIF's OIDC redirect."""
    page.wait_for_selector("#username", timeout=60_000)
    assert page.title() == "Sign in - MedBridge"
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_selector("button[value=approve]")
    page.click("button[value=approve]")


def study_list_shows(page: Any, name: str) -> None:
    page.get_by_text(name, exact=False).first.wait_for(timeout=90_000)


CANVAS_PIXELS = """() => {
  const canvases = [...document.querySelectorAll('canvas.cornerstone-canvas')];
  let lit = 0;
  for (const canvas of canvases) {
    if (!canvas.width || !canvas.height) continue;
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 0; i < data.length; i += 4) {
      if (data[i] > 8 || data[i + 1] > 8 || data[i + 2] > 8) lit++;
    }
  }
  return {canvases: canvases.length, lit};
}"""


def drawn_pixels(page: Any, timeout: float = 120.0) -> dict[str, Any]:
    """The viewport canvases' pixels brighter than the background, once there are any."""
    import playwright.sync_api as playwright_api

    deadline = time.monotonic() + timeout
    found: dict[str, Any] = {"canvases": 0, "lit": 0}
    while time.monotonic() < deadline:
        try:
            found = page.evaluate(CANVAS_PIXELS)
        except playwright_api.Error:  # the page is still navigating (the app's routing)
            found = {"canvases": 0, "lit": 0}
        if found["lit"] > 0:
            return found
        time.sleep(1.0)
    page.screenshot(path="/tmp/viewer-debug.png")
    found["url"] = page.url
    return found


def assert_same_origin(browsed: Browsed, base: str) -> None:
    elsewhere = [
        url for url in browsed.requests
        if not url.startswith(base + "/") and not url.startswith(("data:", "blob:"))
    ]  # fmt: skip
    assert not elsewhere, elsewhere
    assert browsed.requests, "the page made no request"


def viewer_token(page: Any, viewing: Viewing) -> dict[str, Any]:
    """The token response OHIF keeps (oidc-client-ts, in the tab's sessionStorage)."""
    authority = viewing.server.base_url + "/auth"
    key = f"oidc.user:{authority}:medbridge-viewer"
    stored = page.evaluate("key => sessionStorage.getItem(key)", key)
    assert stored, f"no {key} in sessionStorage"
    loaded: dict[str, Any] = json.loads(stored)
    return loaded


def qido_studies(viewing: Viewing, token: str, study: str) -> list[Any]:
    answer = httpx.get(
        f"{viewing.server.base_url}/dicomweb/studies",
        params={"StudyInstanceUID": study},
        headers={"Authorization": f"Bearer {token}", "Accept": "application/dicom+json"},
        timeout=30,
    )
    assert answer.status_code in (200, 204), answer.text[:300]
    return [] if answer.status_code == 204 else list(answer.json())


def test_a_deep_link_signs_in_and_draws_the_study(viewing: Viewing) -> None:
    """The portal's link (/viewer/viewer?StudyInstanceUIDs=...): OHIF keeps it across the
    sign-in redirect, reads the study through DICOMweb with the token, draws the image."""
    base, browsed = viewing.server.base_url, Browsed()
    with browser_page(browsed) as page:
        assert viewing.link == f"{base}/viewer/viewer?StudyInstanceUIDs={viewing.own_study}"
        page.goto(viewing.link)
        sign_in(page, viewing.clinician)
        page.wait_for_url(lambda url: "/viewer/viewer" in url and "code=" not in url)
        assert viewing.own_study in page.url
        found = drawn_pixels(page)
        assert found["canvases"] >= 1, found
        assert found["lit"] > 1000, (found, browsed.console_errors[-10:])
        tour = page.get_by_text("Skip all")  # OHIF's first-visit tour, over the image
        if tour.count():
            tour.first.click()
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(SCREENSHOT))

        # the study list (a full load signs in again: OHIF keeps no session across loads)
        page.goto(f"{base}/viewer/")
        sign_in(page, viewing.clinician)
        study_list_shows(page, viewing.own_name)
        study_list_shows(page, viewing.other_name)  # a clinician's user scope: both
    assert SCREENSHOT.stat().st_size > 10_000
    dicomweb = [url for url in browsed.requests if "/dicomweb/" in url]
    assert any(f"/studies/{viewing.own_study}/" in url for url in dicomweb), dicomweb
    assert any("/frames/" in url for url in dicomweb), dicomweb
    assert_same_origin(browsed, base)
    # the policy lets OHIF do all it did: nothing was refused by it
    refused = [e for e in browsed.console_errors if "Content Security Policy" in e]
    assert not refused, refused


def test_a_patient_sees_only_their_own_study(viewing: Viewing) -> None:
    """The same viewer for a Patient account: its token is confined to the patient (the
    viewer's `user/` scope is granted in its `patient/` form), so DICOMweb answers only
    their study; the study list shows theirs and not the other patient's, and the
    portal's link to their study draws its image."""
    base, browsed = viewing.server.base_url, Browsed()
    with browser_page(browsed) as page:
        page.goto(f"{base}/viewer/")
        sign_in(page, viewing.patient_user)
        study_list_shows(page, viewing.own_name)
        assert page.get_by_text(viewing.other_name).count() == 0
        token = viewer_token(page, viewing)
        # the portal's link to their study: opened, signed in again, the image is drawn
        page.goto(viewing.link)
        sign_in(page, viewing.patient_user)
        page.wait_for_url(lambda url: "/viewer/viewer" in url and "code=" not in url)
        found = drawn_pixels(page)
        assert found["lit"] > 1000, (found, browsed.console_errors[-10:])
    assert "patient/ImagingStudy.rs" in token["scope"].split(), token["scope"]
    assert "user/ImagingStudy.rs" not in token["scope"].split(), token["scope"]
    assert qido_studies(viewing, token["access_token"], viewing.own_study)
    assert qido_studies(viewing, token["access_token"], viewing.other_study) == []
    assert_same_origin(browsed, base)


def _fhir(viewing: Viewing, method: str, path: str, body: Any = None) -> httpx.Response:
    token = admin_token(viewing.server, "system/*.cruds")
    answer = httpx.request(method, f"{viewing.server.fhir_base}/{path}", json=body,
                           headers={"Authorization": f"Bearer {token}",
                                    "Content-Type": "application/fhir+json"},
                           timeout=30)  # fmt: skip
    assert answer.status_code in (200, 201, 204), answer.text[:300]
    return answer


@contextmanager
def hidden_study(viewing: Viewing, family_doctor: str) -> Iterator[None]:
    """The own study's patient names a family doctor and hides the study (a Consent on its
    ImagingStudy, as the portal's hide button writes it); both undone afterwards, so the
    other tests see the study whichever worker runs them."""
    study = _fhir(viewing, "GET", f"ImagingStudy/{viewing.own_study}").json()
    patient_reference = str(study["subject"]["reference"])
    patient = _fhir(viewing, "GET", patient_reference).json()
    _fhir(viewing, "PUT", patient_reference,
          {**patient, "generalPractitioner": [{"reference": family_doctor}]})  # fmt: skip
    consent = _fhir(viewing, "POST", "Consent", {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/consentscope",
                              "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": patient_reference},
        "policyRule": {"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode",
                                   "code": "OPTOUT"}]},
        "provision": {"type": "deny", "data": [{"meaning": "instance", "reference": {
            "reference": f"ImagingStudy/{viewing.own_study}"}}]},
    }).json()  # fmt: skip
    try:
        yield
    finally:
        _fhir(viewing, "DELETE", f"Consent/{consent['id']}")
        current = _fhir(viewing, "GET", patient_reference).json()
        current.pop("generalPractitioner", None)
        _fhir(viewing, "PUT", patient_reference, current)


def test_a_hidden_study_leaves_the_clinicians_study_list_not_the_family_doctors(
    viewing: Viewing, tmp_path: Path
) -> None:
    """Issue 16: after the patient hides a study, a treating clinician no longer finds it
    in the viewer's study list; the family doctor still does (consent rule 3). OHIF lists
    what QIDO-RS answers with the user's token: DICOMweb decides, the viewer does not."""
    base = viewing.server.base_url
    family_doctor = f"fd-{viewing.clinician}"
    password = tmp_path / "password"
    password.write_text(PASSWORD + "\n")
    # the clinician's account is Practitioner/<its name> (the fixture)
    answer = checked(viewing.server, "token", "--scope", "user/*.rs",
                     "--user", f"Practitioner/{viewing.clinician}")  # fmt: skip
    before = answer.strip().splitlines()[-1]
    assert qido_studies(viewing, before, viewing.own_study)  # listed until it is hidden
    checked(viewing.server, "users", "add", family_doctor, "--password-file", str(password),
            "--fhir-user", f"Practitioner/{family_doctor}")  # fmt: skip
    with hidden_study(viewing, f"Practitioner/{family_doctor}"):
        browsed = Browsed()
        with browser_page(browsed) as page:
            page.goto(f"{base}/viewer/")
            sign_in(page, viewing.clinician)
            study_list_shows(page, viewing.other_name)  # the list has loaded ...
            assert page.get_by_text(viewing.own_name).count() == 0  # ... without it
            token = viewer_token(page, viewing)["access_token"]
        assert qido_studies(viewing, token, viewing.own_study) == []
        assert qido_studies(viewing, token, viewing.other_study)
        assert qido_studies(viewing, before, viewing.own_study) == []
        with browser_page(browsed) as page:
            page.goto(f"{base}/viewer/")
            sign_in(page, family_doctor)
            study_list_shows(page, viewing.own_name)
            token = viewer_token(page, viewing)["access_token"]
        assert qido_studies(viewing, token, viewing.own_study)
        assert_same_origin(browsed, base)
