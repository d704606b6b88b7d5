"""A real browser completes the SMART standalone patient launch (issue 14): Debian's
chromium, driven by Playwright through `executable_path` (never `playwright install`),
signs in on MedBridge's sign-in page, approves on the approval page, and is redirected
to the app's loopback redirect URI with `code` and `state`; the app exchanges the code
(PKCE S256) and reads its patient's record, and only that patient's.

One browser session for the module: CPU is scarce on the test machines."""

from __future__ import annotations

import secrets
import shutil
import tempfile
from collections.abc import Iterator
from urllib.parse import urlencode

import httpx
import pytest

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import IsolatedStore, RunningServer, start_server
from tests.support.smart_apps import (
    PASSWORD,
    Callbacks,
    Portal,
    new_verifier,
    open_portal,
    redirect_target,
    s256,
)

pytestmark = pytest.mark.integration

CHROMIUM = "/usr/bin/chromium"
# a quiet browser: no updater, sync or background fetches competing for the 2 cores
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture(scope="module")
def auth_server(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo | IsolatedStore
) -> Iterator[RunningServer]:
    running = start_server(tmp_path_factory.mktemp("browser-server"), store.uri, auth=True)
    yield running
    running.stop()


@pytest.fixture(scope="module")
def portal(
    auth_server: RunningServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Portal]:
    with redirect_target() as callbacks:
        yield open_portal(auth_server, callbacks, tmp_path_factory.mktemp("portal"))


def authorize_url(portal: Portal, verifier: str, state: str) -> str:
    params = {
        "response_type": "code",
        "client_id": portal.app,
        "redirect_uri": portal.redirect_uri,
        "scope": "launch/patient patient/*.rs openid fhirUser",
        "state": state,
        "aud": portal.server.fhir_base,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    return f"{portal.base}/auth/authorize?{urlencode(params)}"


def launch_in_browser(portal: Portal, url: str) -> tuple[list[str], str]:
    """Sign in and approve as a person would; the approval page's scope lines and the URL
    the browser ended on."""
    playwright_api = pytest.importorskip("playwright.sync_api")
    if shutil.which(CHROMIUM) is None:
        pytest.skip(f"{CHROMIUM} is not installed (./run test installs Debian's chromium)")
    with (
        playwright_api.sync_playwright() as playwright,
        tempfile.TemporaryDirectory(prefix="medbridge-chromium-") as profile,
    ):
        browser = playwright.chromium.launch_persistent_context(
            profile, executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.goto(url)
            assert page.title() == "Sign in - MedBridge"
            page.fill("#username", portal.user)
            page.fill("#password", PASSWORD)
            page.click("button[type=submit]")
            page.wait_for_selector("button[value=approve]")
            assert page.title() == "Allow access? - MedBridge"
            scope_lines = page.locator("li").all_inner_texts()
            page.click("button[value=approve]")
            page.wait_for_url(lambda now: now.startswith(portal.redirect_uri))
            page.wait_for_selector("#done")
            return scope_lines, page.url
        finally:
            browser.close()


def test_a_browser_completes_the_standalone_patient_launch(portal: Portal) -> None:
    verifier = new_verifier()
    state = "st-" + secrets.token_hex(8)
    scope_lines, landed = launch_in_browser(portal, authorize_url(portal, verifier, state))

    # the approval page said what the app asks for in words, not scope strings
    assert "read, search all records of this patient" in scope_lines
    assert "know which patient you have chosen" in scope_lines
    assert "know who you are (your user name)" in scope_lines
    assert not any("/" in line and "*" in line for line in scope_lines), scope_lines

    # the app's page received the redirect, with the state it sent
    callback = _the_one_callback(portal.callbacks, landed)
    assert callback["state"] == state
    assert "error" not in callback

    tokens = httpx.post(
        f"{portal.base}/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": callback["code"],
            "redirect_uri": portal.redirect_uri,
            "client_id": portal.app,
            "code_verifier": verifier,
        },
        timeout=30,
    )
    assert tokens.status_code == 200, tokens.text
    body = tokens.json()
    assert body["patient"] == portal.patient
    assert body["need_patient_banner"] is True
    assert "patient/*.rs" in body["scope"].split()

    bearer = {"Authorization": f"Bearer {body['access_token']}"}
    own = httpx.get(f"{portal.server.fhir_base}/Patient/{portal.patient}", headers=bearer)
    assert own.status_code == 200, own.text
    assert own.json()["name"][0]["family"] == "Own"
    other = httpx.get(f"{portal.server.fhir_base}/Patient/{portal.other_patient}", headers=bearer)
    assert other.status_code == 404, other.text
    assert "Other" not in other.text
    without = httpx.get(f"{portal.server.fhir_base}/Patient/{portal.patient}")
    assert without.status_code == 401

    # the code was spent by the exchange: the browser's URL cannot be replayed
    again = httpx.post(
        f"{portal.base}/auth/token",
        data={
            "grant_type": "authorization_code",
            "code": callback["code"],
            "redirect_uri": portal.redirect_uri,
            "client_id": portal.app,
            "code_verifier": verifier,
        },
        timeout=30,
    )
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def _the_one_callback(callbacks: Callbacks, landed: str) -> dict[str, str]:
    assert landed.startswith(callbacks.url + "?")
    assert len(callbacks.received) == 1, callbacks.received
    return callbacks.received[0]
