"""HTTPS on the HTTP listener (`--tls-cert`/`--tls-key`): TLS 1.2+ only, plaintext
refused, absolute URLs and admin commands on https."""

from __future__ import annotations

import socket
import ssl
import warnings
from collections.abc import Iterator

import httpx
import pytest

from medbridge.embedded_mongo import EmbeddedMongo
from medbridge.running import call_admin, find_running
from tests.support.pki import Pki, make_pki
from tests.support.servers import RunningServer, start_server

FHIR_JSON = {"Content-Type": "application/fhir+json"}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def https_server(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo, pki: Pki
) -> Iterator[RunningServer]:
    env = {"MEDBRIDGE_TLS_CERT": str(pki.server_cert), "MEDBRIDGE_TLS_KEY": str(pki.server_key)}
    running = start_server(tmp_path_factory.mktemp("https"), store.uri, env=env, https_ca=pki.ca)
    yield running
    running.stop()


def test_httpx_verifying_the_ca_reads_metadata(https_server: RunningServer) -> None:
    response = httpx.get(f"{https_server.fhir_base}/metadata", verify=https_server.verify)
    assert response.status_code == 200
    assert response.json()["resourceType"] == "CapabilityStatement"


def test_a_client_not_trusting_the_ca_is_refused(https_server: RunningServer) -> None:
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
        httpx.get(f"{https_server.fhir_base}/metadata")


def test_absolute_urls_are_https(https_server: RunningServer) -> None:
    assert f"ready: FHIR base https://127.0.0.1:{https_server.http_port}/fhir" in (
        https_server.log()
    )
    created = httpx.post(
        f"{https_server.fhir_base}/Organization",
        json={"resourceType": "Organization", "name": "Kauno klinika"},
        headers=FHIR_JSON,
        verify=https_server.verify,
    )
    assert created.status_code == 201
    assert created.headers["Location"].startswith(f"{https_server.fhir_base}/Organization/")


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_tls_1_0_and_1_1_are_refused(
    https_server: RunningServer, pki: Pki, version: ssl.TLSVersion
) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer the old protocol
    raw = socket.create_connection(("127.0.0.1", https_server.http_port), timeout=30)
    # the server ends the handshake (asyncio closes the socket without an alert);
    # that this client can speak the old protocol is tests/unit/access/test_tls.py's control
    with pytest.raises(ssl.SSLError, match=r"PROTOCOL_VERSION|UNEXPECTED_EOF"):
        context.wrap_socket(raw, server_hostname="localhost")
    raw.close()


def test_tls_1_2_is_accepted(https_server: RunningServer, pki: Pki) -> None:
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.maximum_version = ssl.TLSVersion.TLSv1_2
    response = httpx.get(f"{https_server.fhir_base}/metadata", verify=context)
    assert response.status_code == 200


def test_plain_http_on_the_tls_port_gets_no_answer(https_server: RunningServer) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(f"http://127.0.0.1:{https_server.http_port}/fhir/metadata", timeout=10)
    # the listener is still up for the next TLS client
    again = httpx.get(f"{https_server.fhir_base}/metadata", verify=https_server.verify)
    assert again.status_code == 200


def test_admin_command_reaches_the_https_server(https_server: RunningServer) -> None:
    running = find_running(https_server.data_dir)
    assert running is not None
    assert running.http_base.startswith("https://")
    status = call_admin(running, "status", {})
    assert status["pid"] == https_server.process.pid
