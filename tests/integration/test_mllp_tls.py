"""MLLP over TLS: 1.2/1.3 only, client certificates required, plaintext refused."""

from __future__ import annotations

import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from access.tls import TlsFiles, server_context
from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_mllp import adt
from tests.support.pki import Pki, make_pki
from tests.support.servers import RunningServer, start_server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo, pki: Pki
) -> Iterator[RunningServer]:
    env = {
        "MEDBRIDGE_MLLP_TLS_CERT": str(pki.server_cert),
        "MEDBRIDGE_MLLP_TLS_KEY": str(pki.server_key),
        "MEDBRIDGE_MLLP_TLS_CLIENT_CA": str(pki.ca),
    }
    running = start_server(tmp_path_factory.mktemp("tls"), store.uri, env=env)
    yield running
    running.stop()


def _context(pki: Pki, with_cert: bool = True) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if with_cert:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def _exchange(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(b"\x0b" + payload + b"\x1c\x0d")
    data = b""
    while b"\x1c\x0d" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed without an ACK")
        data += chunk
    return data


def test_client_with_certificate_gets_aa(tls_server: RunningServer, pki: Pki, unique: str) -> None:
    raw = socket.create_connection(("127.0.0.1", tls_server.mllp_port), timeout=30)
    with _context(pki).wrap_socket(raw, server_hostname="localhost") as sock:
        assert sock.version() in ("TLSv1.2", "TLSv1.3")
        ack = _exchange(sock, adt("A08", unique, f"T{unique}").encode())
    assert f"MSA|AA|A08-{unique}".encode() in ack


def test_client_without_certificate_is_refused(
    tls_server: RunningServer, pki: Pki, unique: str
) -> None:
    raw = socket.create_connection(("127.0.0.1", tls_server.mllp_port), timeout=30)
    context = _context(pki, with_cert=False)
    with (
        pytest.raises((ssl.SSLError, ConnectionError, OSError)),
        context.wrap_socket(raw, server_hostname="localhost") as sock,
    ):
        # TLS 1.3 reports the missing client certificate on the first read
        _exchange(sock, adt("A08", unique, f"T{unique}").encode())
    raw.close()


def test_tls_1_1_is_refused(tls_server: RunningServer, pki: Pki) -> None:
    context = _context(pki)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = ssl.TLSVersion.TLSv1_1
        context.maximum_version = ssl.TLSVersion.TLSv1_1
    context.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1 at all
    raw = socket.create_connection(("127.0.0.1", tls_server.mllp_port), timeout=30)
    with pytest.raises(ssl.SSLError):  # the server ends the handshake
        context.wrap_socket(raw, server_hostname="localhost")
    raw.close()


def test_server_context_allows_only_tls_1_2_and_1_3(pki: Pki) -> None:
    context = server_context(TlsFiles(pki.server_cert, pki.server_key, pki.ca))
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2
    assert context.verify_mode == ssl.CERT_REQUIRED


def test_plaintext_on_tls_port_gets_no_answer(tls_server: RunningServer, unique: str) -> None:
    with (
        socket.create_connection(("127.0.0.1", tls_server.mllp_port), timeout=30) as sock,
        pytest.raises((ConnectionError, OSError)),
    ):
        _exchange(sock, adt("A08", f"p{unique}", f"T{unique}").encode())


def test_hl7_send_command_over_tls(
    tls_server: RunningServer, pki: Pki, unique: str, tmp_path: Path
) -> None:
    file = tmp_path / "m.hl7"
    file.write_bytes(adt("A08", f"c{unique}", f"T{unique}").encode())
    completed = subprocess.run(
        [sys.executable, "-m", "medbridge", "hl7", "send", str(file), "--host", "localhost",
         "--port", str(tls_server.mllp_port), "--tls-ca", str(pki.ca),
         "--tls-cert", str(pki.client_cert), "--tls-key", str(pki.client_key)],
        capture_output=True, timeout=60, check=True,
    )  # fmt: skip
    assert f"MSA|AA|A08-c{unique}" in completed.stdout.decode()


@pytest.fixture(scope="module")
def named_peers_server(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo, pki: Pki
) -> Iterator[RunningServer]:
    """TLS with client certificates, and only the certificate named `ris` may send."""
    env = {
        "MEDBRIDGE_MLLP_TLS_CERT": str(pki.server_cert),
        "MEDBRIDGE_MLLP_TLS_KEY": str(pki.server_key),
        "MEDBRIDGE_MLLP_TLS_CLIENT_CA": str(pki.ca),
        "MEDBRIDGE_MLLP_ALLOWED_PEERS": "192.0.2.0/24,cn:ris",
    }
    running = start_server(tmp_path_factory.mktemp("named"), store.uri, env=env)
    yield running
    running.stop()


def test_allowed_certificate_name_sends(
    named_peers_server: RunningServer, pki: Pki, unique: str
) -> None:
    raw = socket.create_connection(("127.0.0.1", named_peers_server.mllp_port), timeout=30)
    with _context(pki).wrap_socket(raw, server_hostname="localhost") as sock:
        ack = _exchange(sock, adt("A08", f"n{unique}", f"T{unique}").encode())
    assert f"MSA|AA|A08-n{unique}".encode() in ack


def test_other_certificate_name_is_closed_before_any_message(
    named_peers_server: RunningServer, pki: Pki, unique: str
) -> None:
    certificate, key = pki.client("lis")  # same CA, another name
    context = ssl.create_default_context(cafile=str(pki.ca))
    context.load_cert_chain(str(certificate), str(key))
    raw = socket.create_connection(("127.0.0.1", named_peers_server.mllp_port), timeout=30)
    with (
        context.wrap_socket(raw, server_hostname="localhost") as sock,
        pytest.raises((ConnectionError, OSError)),
    ):
        _exchange(sock, adt("A08", f"m{unique}", f"T{unique}").encode())
    assert "MLLP connection refused: peer 127.0.0.1" in named_peers_server.log()
