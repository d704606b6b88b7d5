"""What the SMART client tests share: a server with auth on, accounts and clients
registered through the real `medbridge users/clients` commands, two Patients written
through the FHIR door, and the app's redirect target (a loopback HTTP server that
records the callbacks it receives, as a real app's page would)."""

from __future__ import annotations

import base64
import hashlib
import http.server
import secrets
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx

from tests.support.servers import RunningServer

PASSWORD = "patient-portal-password-1"
APP_SCOPES = "openid fhirUser launch/patient offline_access patient/*.rs"


def medbridge(server: RunningServer, *args: str) -> subprocess.CompletedProcess[str]:
    """A `medbridge` admin command against the running server (by its data directory)."""
    return subprocess.run(
        [sys.executable, "-m", "medbridge", *args, "--data-dir", str(server.data_dir)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def checked(server: RunningServer, *args: str) -> str:
    done = medbridge(server, *args)
    assert done.returncode == 0, done.stderr
    return done.stdout


def admin_token(server: RunningServer, scope: str) -> str:
    return checked(server, "token", "--scope", scope).strip().splitlines()[-1]


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@dataclass
class Callbacks:
    """The query strings of the requests the app's redirect target received."""

    received: list[dict[str, str]] = field(default_factory=list)
    url: str = ""


def _handler(callbacks: Callbacks) -> type[http.server.BaseHTTPRequestHandler]:
    class Callback(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path, query_string = urlsplit(self.path).path, urlsplit(self.path).query
            if path != "/callback":  # the browser's own fetches (favicon.ico)
                self.send_error(404)
                return
            query = parse_qs(query_string)
            callbacks.received.append({name: values[0] for name, values in query.items()})
            body = b"<!doctype html><title>app</title><p id='done'>callback received</p>"
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # the query carries the code: not for the test log

    return Callback


@contextmanager
def redirect_target() -> Iterator[Callbacks]:
    """A tiny app on a free loopback port; its `/callback` is the registered redirect_uri."""
    callbacks = Callbacks()
    listener = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(callbacks))
    callbacks.url = f"http://127.0.0.1:{listener.server_address[1]}/callback"
    thread = threading.Thread(target=listener.serve_forever, daemon=True)
    thread.start()
    try:
        yield callbacks
    finally:
        listener.shutdown()
        listener.server_close()


@dataclass
class Portal:
    """A patient user, the public app they use, their Patient and another patient's."""

    server: RunningServer
    callbacks: Callbacks
    user: str
    app: str
    patient: str
    other_patient: str

    @property
    def base(self) -> str:
        return self.server.base_url

    @property
    def redirect_uri(self) -> str:
        return self.callbacks.url


def write_patient(server: RunningServer, token: str, patient: str, family: str) -> None:
    answer = httpx.put(
        f"{server.fhir_base}/Patient/{patient}",
        json={"resourceType": "Patient", "id": patient, "name": [{"family": family}]},
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/fhir+json"},
        timeout=30,
    )
    assert answer.status_code in (200, 201), answer.text


def open_portal(server: RunningServer, callbacks: Callbacks, files: Path) -> Portal:
    """Register a patient user and a public app whose redirect URI is `callbacks.url`, and
    write the user's Patient and another patient's, through the commands and the door."""
    suffix = uuid.uuid4().hex[:8]
    portal = Portal(
        server, callbacks, f"pat-{suffix}", f"portal-{suffix}", f"me-{suffix}", f"other-{suffix}"
    )
    (files / "password").write_text(PASSWORD + "\n")
    checked(server, "users", "add", portal.user, "--password-file", str(files / "password"),
            "--fhir-user", f"Patient/{portal.patient}")  # fmt: skip
    checked(server, "clients", "add", portal.app, "--public",
            "--redirect-uri", callbacks.url, "--scope", APP_SCOPES)  # fmt: skip
    token = admin_token(server, "system/*.cruds")
    write_patient(server, token, portal.patient, "Own")
    write_patient(server, token, portal.other_patient, "Other")
    return portal


def new_verifier() -> str:
    return secrets.token_urlsafe(48)
