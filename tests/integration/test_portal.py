"""The patient portal (/portal, issue 16) in a real browser: Debian's chromium driven by
Playwright through `executable_path` (never `playwright install`), against a running
server with auth, consent and audit on, its records written through the FHIR and
DICOMweb doors with a system token.

One server and one browser for the module (CPU is scarce); the tests run in file order
and build on each other: the patient signs in, sees their study and report, hides the
report, refuses research, reads who opened their records; a parent acts for a child;
forms without their CSRF token are refused; signing out ends the old token; axe-core
finds no serious or critical violation on any page."""

from __future__ import annotations

import io
import shutil
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.dicom import renamed
from tests.support.servers import IsolatedStore, RunningServer, start_server
from tests.support.smart_apps import PASSWORD, admin_token, checked

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]  # fmt: skip
AXE = Path(__file__).resolve().parents[1] / "axe" / "node_modules" / "axe-core" / "axe.min.js"
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "screenshots" / "portal.png"
LTPK = "https://www.esveikata.lt/fhir/sid/asmens-kodas"
FHIR_JSON = {"Content-Type": "application/fhir+json"}
CONSENT_SCOPE = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
ROLE_CODE = "http://terminology.hl7.org/CodeSystem/v3-RoleCode"
SERIOUS = ("serious", "critical")
PDF = "JVBERi0xLjQKJcfsj6IKMSAwIG9iago8PD4+CmVuZG9iagp0cmFpbGVyCjw8Pj4KJSVFT0YK"  # %PDF-1.4


def years_ago(years: int, days: int = 0) -> str:
    today = date.today()
    born = date(today.year - years, today.month, min(today.day, 28))
    return date.fromordinal(born.toordinal() - days).isoformat()


@dataclass
class Site:
    server: RunningServer
    tokens_file: Path
    run: str
    patient: str  # the adult patient (user `pat-<run>`)
    study: str
    report: str
    report_title: str
    order: str  # category "notifiable": the law keeps it visible (rule 4)
    doctor: str  # a treating clinician, no relationship
    family_doctor: str
    child: str  # 12 years old (user `parent-<run>` represents them)
    child_report_title: str
    teen: str  # 17 years old (user `parent17-<run>` represents them)
    teen_report_title: str

    def system(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {admin_token(self.server, 'system/*.cruds')}"}

    def clinician(self, practitioner: str) -> dict[str, str]:
        who = f"Practitioner/{practitioner}"
        answer = checked(self.server, "token", "--scope", "user/*.rs", "--user", who)
        token = answer.strip().splitlines()[-1]
        return {"Authorization": f"Bearer {token}"}


def _write(server: RunningServer, headers: dict[str, str], resource: dict[str, Any]) -> str:
    kind = resource["resourceType"]
    if "id" in resource:
        answer = httpx.put(f"{server.fhir_base}/{kind}/{resource['id']}", json=resource,
                           headers={**headers, **FHIR_JSON}, timeout=60)  # fmt: skip
    else:
        answer = httpx.post(f"{server.fhir_base}/{kind}", json=resource,
                            headers={**headers, **FHIR_JSON}, timeout=60)  # fmt: skip
    assert answer.status_code in (200, 201), answer.text
    return str(answer.json()["id"])


def _report(patient: str, title: str, organization: str | None = None) -> dict[str, Any]:
    report: dict[str, Any] = {
        "resourceType": "DiagnosticReport", "status": "final", "code": {"text": title},
        "subject": {"reference": f"Patient/{patient}"}, "effectiveDateTime": "2026-03-04",
        "presentedForm": [{"contentType": "application/pdf", "data": PDF}],
    }  # fmt: skip
    if organization:
        report["performer"] = [{"reference": f"Organization/{organization}"}]
    return report


def _person(kind: str, given: str, family: str, born: str | None = None) -> dict[str, Any]:
    person: dict[str, Any] = {"resourceType": kind, "name": [{"given": [given], "family": family}]}
    if born:
        person["birthDate"] = born
    return person


def _user(server: RunningServer, files: Path, name: str, fhir_user: str) -> None:
    (files / "password").write_text(PASSWORD + "\n")
    checked(server, "users", "add", name, "--password-file", str(files / "password"),
            "--fhir-user", fhir_user)  # fmt: skip


@pytest.fixture(scope="module")
def site(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("portal")
    tokens_file = root / "portal-tokens.txt"
    server = start_server(root / "server", store.uri, auth=True, env={
        "MEDBRIDGE_EXTRA_HOOKS": "tests.support.portal_hooks:hooks",
        "MEDBRIDGE_TEST_PORTAL_TOKENS": str(tokens_file),
        "MEDBRIDGE_CONSENT_UNHIDEABLE_CATEGORIES": "notifiable",
    })  # fmt: skip
    try:
        yield _seed(server, root, tokens_file)
    finally:
        server.stop()


def _seed(server: RunningServer, root: Path, tokens_file: Path) -> Site:
    run = uuid.uuid4().hex[:8]
    system = {"Authorization": f"Bearer {admin_token(server, 'system/*.cruds')}"}
    clinic = _write(server, system, {"resourceType": "Organization", "name": "Vilnius clinic"})
    doctor = _write(server, system, _person("Practitioner", "Petras", "Gydytojas"))
    family = _write(server, system, _person("Practitioner", "Ona", "Seimos"))
    code = f"P{run}"
    patient = _write(server, system, {
        "resourceType": "Patient", "identifier": [{"system": LTPK, "value": code}],
        "name": [{"given": ["Jonas"], "family": "Jonaitis"}], "birthDate": "1980-02-03",
        "generalPractitioner": [{"reference": f"Practitioner/{family}"}],
    })  # fmt: skip
    title = f"CT head report {run}"
    report = _write(server, system, _report(patient, title, clinic))
    order = _write(server, system, {
        "resourceType": "ServiceRequest", "status": "active", "intent": "order",
        "code": {"text": "CT head"}, "subject": {"reference": f"Patient/{patient}"},
        "authoredOn": "2026-03-01", "category": [{"coding": [{"code": "notifiable"}]}],
    })  # fmt: skip
    _write(server, system, {
        "resourceType": "Encounter", "status": "finished",
        "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
        "type": [{"text": "Outpatient visit"}], "subject": {"reference": f"Patient/{patient}"},
        "period": {"start": "2026-02-20"},
    })  # fmt: skip
    study = _stow_study(server, system, code)
    child = _write(server, system, _person("Patient", "Ugne", "Jonaite", years_ago(12)))
    teen = _write(server, system, _person("Patient", "Tomas", "Jonaitis", years_ago(17)))
    child_title, teen_title = f"Child X-ray {run}", f"Teen clinic note {run}"
    _write(server, system, _report(child, child_title))
    teen_report = _write(server, system, _report(teen, teen_title))
    # the 17-year-old hid their report (recorded for them by the clinic)
    _write(server, system, {
        "resourceType": "Consent", "status": "active",
        "scope": {"coding": [{"system": CONSENT_SCOPE, "code": "patient-privacy"}]},
        "category": [{"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}],
        "patient": {"reference": f"Patient/{teen}"},
        "policyRule": {"coding": [{"system": ACT_CODE, "code": "OPTOUT"}]},
        "provision": {"type": "deny", "data": [
            {"meaning": "instance", "reference": {"reference": f"DiagnosticReport/{teen_report}"}},
        ]},
    })  # fmt: skip
    relations = []
    for minor in (child, teen):
        relations.append(_write(server, system, {
            "resourceType": "RelatedPerson", "patient": {"reference": f"Patient/{minor}"},
            "relationship": [{"coding": [{"system": ROLE_CODE, "code": "MTH"}]}],
            "name": [{"family": "Jonaitiene"}],
        }))  # fmt: skip
    _user(server, root, f"pat-{run}", f"Patient/{patient}")
    _user(server, root, f"parent-{run}", f"RelatedPerson/{relations[0]}")
    _user(server, root, f"parent17-{run}", f"RelatedPerson/{relations[1]}")
    return Site(server, tokens_file, run, patient, study, report, title, order, doctor, family,
                child, child_title, teen, teen_title)  # fmt: skip


def _stow_study(server: RunningServer, headers: dict[str, str], code: str) -> str:
    """A CT study of the patient through STOW-RS; its ImagingStudy is made just after."""
    data = renamed("CT_small.dcm", patient_id=code, IssuerOfPatientID="LTPK",
                   StudyDescription="CT head")  # fmt: skip
    study = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).StudyInstanceUID)
    boundary = "portal-boundary"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data
            + f"\r\n--{boundary}--\r\n".encode())  # fmt: skip
    answer = httpx.post(
        f"{server.base_url}/dicomweb/studies", content=body, timeout=60,
        headers={**headers, "Content-Type":
                 f'multipart/related; type="application/dicom"; boundary={boundary}'},
    )  # fmt: skip
    assert answer.status_code == 200, answer.text
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        found = httpx.get(f"{server.fhir_base}/ImagingStudy",
                          params={"patient": "Patient/" + _patient_of(server, headers, code)},
                          headers=headers, timeout=30).json()  # fmt: skip
        if found.get("entry"):
            return study
        time.sleep(0.2)
    pytest.fail("no ImagingStudy was made for the stored study")


def _patient_of(server: RunningServer, headers: dict[str, str], code: str) -> str:
    found = httpx.get(f"{server.fhir_base}/Patient", params={"identifier": f"{LTPK}|{code}"},
                      headers=headers, timeout=30).json()  # fmt: skip
    return str(found["entry"][0]["resource"]["id"])


# the browser ---------------------------------------------------------------------------


@dataclass
class Browser:
    playwright: Any
    chromium: Any


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    import playwright.sync_api as playwright_api  # locked in requirements.lock

    if shutil.which(CHROMIUM) is None:
        # ./run test installs Debian's chromium: missing is a broken set-up, not a skip
        pytest.fail(f"{CHROMIUM} is not installed (./run test installs Debian's chromium)")
    with playwright_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            yield Browser(playwright, chromium)
        finally:
            chromium.close()


def sign_in(context: Any, site: Site, user: str) -> Any:
    """Open the portal, sign in on MedBridge's page and allow: the record page."""
    page = context.new_page()
    page.goto(f"{site.server.base_url}/")
    assert page.url == f"{site.server.base_url}/portal/"
    page.click("#signin")
    page.fill("#username", user)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.click("button[value=approve]")
    page.wait_for_url(f"{site.server.base_url}/portal/")
    page.wait_for_selector("#patient-banner")
    return page


@pytest.fixture(scope="module")
def patient_page(browser: Browser, site: Site) -> Iterator[Any]:
    context = browser.chromium.new_context(locale="en-GB")
    try:
        yield sign_in(context, site, f"pat-{site.run}")
    finally:
        context.close()


def test_the_patient_sees_their_study_with_its_thumbnail_and_their_report(
    patient_page: Any, site: Site
) -> None:
    page = patient_page
    assert "Jonas Jonaitis" in page.inner_text("#patient-banner")
    study = page.locator(f"li[data-reference='ImagingStudy/{site.study}']")
    if study.count() == 0:  # an ImagingStudy id need not be its UID: find it by the link
        study = page.locator("li[data-reference^='ImagingStudy/']")
    assert study.count() == 1
    viewer = study.locator("a.viewer").get_attribute("href")
    assert viewer == f"/viewer/viewer?StudyInstanceUIDs={site.study}"
    image = study.locator("img.thumb")
    image.scroll_into_view_if_needed()
    page.wait_for_function("i => i.complete", arg=image.element_handle())
    assert image.evaluate("i => i.naturalWidth") > 0
    thumbnail = page.request.get(site.server.base_url + image.get_attribute("src"))
    assert thumbnail.status == 200
    assert thumbnail.headers["content-type"] == "image/jpeg"
    assert thumbnail.body()[:3] == b"\xff\xd8\xff"
    report = page.locator(f"li[data-reference='DiagnosticReport/{site.report}']")
    assert site.report_title in report.inner_text()
    pdf = page.request.get(site.server.base_url + report.locator("a.pdf").get_attribute("href"))
    assert pdf.status == 200
    assert pdf.headers["content-type"] == "application/pdf"
    assert pdf.body().startswith(b"%PDF")
    assert "Order" in page.inner_text("main")
    assert "Outpatient visit" in page.inner_text("main")
    SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SCREENSHOT), full_page=True)


def test_every_answer_carries_a_strict_policy_and_the_cookie_is_guarded(
    patient_page: Any, site: Site
) -> None:
    answer = page_get(patient_page, site, "/portal/")
    policy = answer.headers["content-security-policy"]
    assert "default-src 'none'" in policy
    assert "script-src 'self'" in policy
    assert "unsafe-inline" not in policy
    (cookie,) = [c for c in patient_page.context.cookies() if c["name"] == "medbridge_portal"]
    assert cookie["httpOnly"] is True
    assert cookie["sameSite"] == "Lax"
    assert cookie["path"] == "/portal"
    assert "<script" not in answer.text()
    assert "style=" not in answer.text()


def page_get(page: Any, site: Site, path: str) -> Any:
    return page.request.get(site.server.base_url + path)


def test_a_hidden_report_is_gone_for_a_clinician_but_not_for_the_family_doctor(
    patient_page: Any, site: Site
) -> None:
    page = patient_page
    url = f"{site.server.fhir_base}/DiagnosticReport/{site.report}"
    assert httpx.get(url, headers=site.clinician(site.doctor), timeout=30).status_code == 200
    page.goto(f"{site.server.base_url}/portal/")
    report = page.locator(f"li[data-reference='DiagnosticReport/{site.report}']")
    report.locator("button.hide").click()
    page.wait_for_url("**/portal/privacy?saved=1**")
    assert f"DiagnosticReport/{site.report}" in page.inner_text("#hidden")
    assert "notifiable" in page.inner_text("#unhideable")  # what the law keeps visible
    # the clinician no longer finds it, by id or by search; the family doctor does
    doctor = site.clinician(site.doctor)
    assert httpx.get(url, headers=doctor, timeout=30).status_code == 404
    searched = httpx.get(f"{site.server.fhir_base}/DiagnosticReport",
                         params={"patient": f"Patient/{site.patient}"}, headers=doctor,
                         timeout=30).json()  # fmt: skip
    assert site.report not in str(searched)
    family = site.clinician(site.family_doctor)
    assert httpx.get(url, headers=family, timeout=30).status_code == 200
    # the patient still sees their own report
    page.goto(f"{site.server.base_url}/portal/")
    assert site.report_title in page.inner_text("main")


def qido_studies(site: Site, headers: dict[str, str]) -> list[str]:
    """The StudyInstanceUIDs a QIDO-RS study search lists for the patient's study
    (OHIF's study list asks the same, with the user's token)."""
    answer = httpx.get(f"{site.server.base_url}/dicomweb/studies",
                       params={"StudyInstanceUID": site.study},
                       headers={**headers, "Accept": "application/dicom+json"},
                       timeout=30)  # fmt: skip
    assert answer.status_code in (200, 204), answer.text[:300]
    rows = [] if answer.status_code == 204 else answer.json()
    return [str(row["0020000D"]["Value"][0]) for row in rows]


def test_a_hidden_study_leaves_a_clinicians_study_list_but_not_the_family_doctors(
    patient_page: Any, site: Site
) -> None:
    """The patient hides their imaging study (its ImagingStudy, the portal's hide button):
    the treating clinician's QIDO-RS, what a viewer's study list calls, no longer lists
    it, nor does FHIR read it; the family doctor's still does (rule 3)."""
    doctor, family = site.clinician(site.doctor), site.clinician(site.family_doctor)
    assert qido_studies(site, doctor) == [site.study]
    page = patient_page
    page.goto(f"{site.server.base_url}/portal/")
    study = page.locator(f"li[data-reference='ImagingStudy/{site.study}']")
    assert study.count() == 1  # the linker names an ImagingStudy by its UID
    study.locator("button.hide").click()
    page.wait_for_url("**/portal/privacy?saved=1**")
    assert f"ImagingStudy/{site.study}" in page.inner_text("#hidden")
    assert qido_studies(site, doctor) == []
    imaging = f"{site.server.fhir_base}/ImagingStudy/{site.study}"
    assert httpx.get(imaging, headers=doctor, timeout=30).status_code == 404
    metadata = f"{site.server.base_url}/dicomweb/studies/{site.study}/metadata"
    assert httpx.get(metadata, headers=doctor, timeout=30).status_code in (204, 404)
    assert qido_studies(site, family) == [site.study]
    assert httpx.get(imaging, headers=family, timeout=30).status_code == 200
    # the patient still sees their own study, in the portal and through DICOMweb
    page.goto(f"{site.server.base_url}/portal/")
    assert page.locator(f"li[data-reference='ImagingStudy/{site.study}']").count() == 1
    own = {"Authorization": f"Bearer {site.tokens_file.read_text().split()[-1]}"}
    assert qido_studies(site, own) == [site.study]


def test_hiding_a_category_the_law_keeps_visible_says_so(patient_page: Any, site: Site) -> None:
    page = patient_page
    page.goto(f"{site.server.base_url}/portal/privacy")
    page.select_option("#category", "notifiable")
    page.locator("form:has(#category) button").click()
    page.wait_for_url("**/portal/privacy?saved=1&unhideable=notifiable")
    assert "the law does not let these be hidden" in page.inner_text("main")
    assert "Records of category notifiable" in page.inner_text("#hidden")
    order = f"{site.server.fhir_base}/ServiceRequest/{site.order}"
    assert httpx.get(order, headers=site.clinician(site.doctor), timeout=30).status_code == 200


def test_research_use_is_refused_and_allowed_again(patient_page: Any, site: Site) -> None:
    page = patient_page
    page.goto(f"{site.server.base_url}/portal/research")
    assert page.inner_text("#research-state") == "Research use is allowed."
    page.click("#research-toggle")
    page.wait_for_url("**/portal/research?saved=1")
    assert page.inner_text("#research-state") == "Research use is refused."
    consents = httpx.get(f"{site.server.fhir_base}/Consent",
                         params={"patient": f"Patient/{site.patient}"},
                         headers=site.system(), timeout=30).json()  # fmt: skip
    research = [e["resource"] for e in consents["entry"]
                if e["resource"]["scope"]["coding"][0]["code"] == "research"]  # fmt: skip
    assert [r["provision"]["type"] for r in research] == ["deny"]
    assert [r["status"] for r in research] == ["active"]
    page.click("#research-toggle")
    page.wait_for_url("**/portal/research?saved=1")
    assert page.inner_text("#research-state") == "Research use is allowed."
    page.click("#research-toggle")  # and off again: the state the site is left in
    page.wait_for_url("**/portal/research?saved=1")
    assert page.inner_text("#research-state") == "Research use is refused."


def test_a_break_the_glass_read_heads_the_access_log_marked(patient_page: Any, site: Site) -> None:
    doctor = site.clinician(site.doctor)
    glass = {**doctor, "X-Purpose-Of-Use": "BTG"}
    url = f"{site.server.fhir_base}/DiagnosticReport/{site.report}"
    # the report is hidden from this clinician (the test before hid it) ...
    assert httpx.get(url, headers=doctor, timeout=30).status_code == 404
    # ... and a break-the-glass read of it by id lifts the hide (rule 3); the read names
    # no patient, the report's subject does: audit.shown-patients puts the patient among
    # the event's entities, so AuditEvent?patient= (the access log) finds it
    read = httpx.get(url, headers=glass, timeout=30)
    assert read.status_code == 200, read.text[:300]
    assert read.json()["id"] == site.report
    page = patient_page
    page.goto(f"{site.server.base_url}/portal/access-log")
    first = page.locator("#access-log tbody tr").first
    assert first.get_attribute("class") == "override"
    text = first.inner_text()
    assert "Emergency access" in text
    assert f"Practitioner/{site.doctor}" in text
    assert f"Patient/{site.patient}" in text
    assert f"DiagnosticReport/{site.report}" in text  # the read, not a search
    assert "break the glass" in text
    # the patient's own openings through the portal are there too, unmarked
    assert page.locator("#access-log tbody tr.override").count() == 1


def test_the_browser_language_chooses_and_the_switch_overrides(
    browser: Browser, site: Site
) -> None:
    context = browser.chromium.new_context(locale="lt-LT")
    try:
        page = context.new_page()
        page.goto(f"{site.server.base_url}/portal/")
        assert page.get_attribute("html", "lang") == "lt"
        assert page.inner_text("#signin") == "Prisijungti"
        page.click("#language")
        assert page.get_attribute("html", "lang") == "en"
        assert page.inner_text("#signin") == "Sign in"
    finally:
        context.close()


def test_a_parent_acts_for_their_12_year_old_not_for_their_17_year_old(
    browser: Browser, site: Site
) -> None:
    context = browser.chromium.new_context(locale="en-GB")
    try:
        page = sign_in(context, site, f"parent-{site.run}")
        main = page.inner_text("main")
        assert "You are acting for Ugne Jonaite." in main
        assert "Ugne Jonaite turns 16 on" in main
        assert site.child_report_title in main
        assert "Jonas" not in page.inner_text("#patient-banner")
        # the representative of a minor chooses for them (rule 6)
        page.locator("li[data-reference^='DiagnosticReport/'] button.hide").click()
        page.wait_for_url("**/portal/privacy?saved=1")
        assert "DiagnosticReport/" in page.inner_text("#hidden")
    finally:
        context.close()
    context = browser.chromium.new_context(locale="en-GB")
    try:
        page = sign_in(context, site, f"parent17-{site.run}")
        main = page.inner_text("main")
        assert "16 or older" in main
        assert site.teen_report_title not in main
        assert "Teen" not in main
        # and may no longer choose for them: the server's refusal, shown as a page
        csrf = page.get_attribute("input[name=csrf]", "value")
        refused = page.request.post(f"{site.server.base_url}/portal/privacy/hide", form={
            "csrf": csrf, "kind": "type", "resource_type": "Encounter",
        })  # fmt: skip
        assert refused.status == 403
        assert "MB-1030" in refused.text()
    finally:
        context.close()


def test_a_form_without_its_csrf_token_is_refused(patient_page: Any, site: Site) -> None:
    page = patient_page
    # the research state and the hidden list before: another test may have changed them
    page.goto(f"{site.server.base_url}/portal/research")
    research_before = page.inner_text("#research-state")
    allow = "no" if research_before == "Research use is allowed." else "yes"
    page.goto(f"{site.server.base_url}/portal/privacy")
    hidden_before = page.inner_text("#hidden")
    for path, form in (
        ("/portal/research", {"allow": allow}),
        ("/portal/privacy/hide", {"kind": "type", "resource_type": "Encounter"}),
        ("/portal/logout", {}),
    ):
        answer = page.request.post(site.server.base_url + path, form=form)
        assert answer.status == 403, path
        assert "did not come from this portal" in answer.text()
        wrong = page.request.post(site.server.base_url + path, form={**form, "csrf": "x" * 43})
        assert wrong.status == 403, path
    # nothing was written: research use and the hidden records are as they were
    page.goto(f"{site.server.base_url}/portal/research")
    assert page.inner_text("#research-state") == research_before
    page.goto(f"{site.server.base_url}/portal/privacy")
    assert page.inner_text("#hidden") == hidden_before
    assert "Encounter" not in hidden_before


def test_every_page_passes_axe(browser: Browser, patient_page: Any, site: Site) -> None:
    """axe-core injected into each page (the CSP is bypassed in this context only, so the
    test's script can run): no serious or critical violation."""
    assert AXE.exists(), f"{AXE}: ./run test installs tests/axe's npm packages"
    context = browser.chromium.new_context(locale="en-GB", bypass_csp=True)
    context.add_cookies(patient_page.context.cookies())
    try:
        page = context.new_page()
        pages = ["/portal/", "/portal/privacy", "/portal/research", "/portal/access-log",
                 "/portal/reports/none/pdf/0"]  # fmt: skip
        for path in pages:
            page.goto(site.server.base_url + path)
            page.add_script_tag(path=str(AXE))
            result = page.evaluate("async () => await axe.run(document)")
            bad = [(v["id"], v["impact"], [n["target"] for n in v["nodes"]][:3])
                   for v in result["violations"] if v["impact"] in SERIOUS]  # fmt: skip
            assert not bad, (path, bad)
        # the signed-out pages and Lithuanian too
        context.clear_cookies()
        for path in ("/portal/", "/portal/language?to=lt&back=/portal/"):
            page.goto(site.server.base_url + path)
            page.add_script_tag(path=str(AXE))
            result = page.evaluate("async () => await axe.run(document)")
            bad = [v["id"] for v in result["violations"] if v["impact"] in SERIOUS]
            assert not bad, (path, bad)
    finally:
        context.close()


def test_signing_out_ends_api_access_with_the_old_token(patient_page: Any, site: Site) -> None:
    tokens = site.tokens_file.read_text().split()
    assert tokens, "the portal called the FHIR door with its token"
    old = tokens[-1]
    own = f"{site.server.fhir_base}/Patient/{site.patient}"
    bearer = {"Authorization": f"Bearer {old}"}
    assert httpx.get(own, headers=bearer, timeout=30).status_code == 200
    page = patient_page
    page.goto(f"{site.server.base_url}/portal/")
    page.click("#logout")
    page.wait_for_url("**/portal/?signed_out=1")
    assert "You have signed out" in page.inner_text("main")
    assert httpx.get(own, headers=bearer, timeout=30).status_code == 401
    # the browser's old session is gone too: the record page is the welcome page again
    page.goto(f"{site.server.base_url}/portal/privacy")
    assert page.locator("#signin").count() == 1


def test_without_a_session_no_page_reads_a_record(site: Site) -> None:
    """No cookie: the pages answer the sign-in page, forms are refused, images say so."""
    with httpx.Client(base_url=site.server.base_url, timeout=30) as browser:
        for path in ("/portal/", "/portal/privacy", "/portal/research", "/portal/access-log",
                     f"/portal/reports/{site.report}/pdf/0"):  # fmt: skip
            answer = browser.get(path)
            assert answer.status_code == 200, path
            assert 'id="signin"' in answer.text, path
            assert site.report_title not in answer.text
            assert "Jonaitis" not in answer.text
        for path in ("/portal/privacy/hide", "/portal/privacy/show", "/portal/research",
                     "/portal/logout"):  # fmt: skip
            answer = browser.post(path, data={"kind": "type", "resource_type": "Encounter"})
            assert answer.status_code == 403, path
            assert answer.headers["content-type"].startswith("text/html")
        image = browser.get(f"/portal/thumbnail/{site.study}")
        assert image.headers["content-type"] == "image/svg+xml"
        assert "session has" in image.text
        callback = browser.get("/portal/callback", params={"code": "x", "state": "y"})
        assert callback.status_code == 400
        assert "no sign-in was started" in callback.text
        unknown = browser.get("/portal/reports/..%2F..%2Fx/pdf/0")
        assert unknown.status_code in (200, 404)
        assert "Traceback" not in unknown.text
