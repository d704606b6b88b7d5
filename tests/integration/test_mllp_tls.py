"""MLLP over TLS: 1.2/1.3 only, client certificates required, plaintext refused."""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import subprocess
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from hl7_bridge.listener import TlsFiles, tls_context
from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_mllp import adt
from tests.support.servers import RunningServer, start_server


@dataclass
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> Path:
    path.with_suffix(".key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def _issue(
    subject: str,
    issuer: x509.Name,
    signer: ec.EllipticCurvePrivateKey,
    key: ec.EllipticCurvePrivateKey,
    ca: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_cert = _issue("MedBridge test CA", _name("MedBridge test CA"), ca_key, ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    client_key = ec.generate_private_key(ec.SECP256R1())
    ca = _write(folder / "ca.pem", ca_key, ca_cert)
    server = _write(
        folder / "server.pem", server_key, _issue("localhost", ca_cert.subject, ca_key, server_key)
    )
    client = _write(
        folder / "client.pem", client_key, _issue("ris", ca_cert.subject, ca_key, client_key)
    )
    return Pki(ca, server, server.with_suffix(".key"), client, client.with_suffix(".key"))


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
    context = tls_context(TlsFiles(pki.server_cert, pki.server_key, pki.ca))
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
