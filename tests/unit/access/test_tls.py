"""access/tls.py: the one server context (TLS 1.2+, client certificates with a CA)."""

from __future__ import annotations

import socket
import ssl
import threading
import warnings
from pathlib import Path

import pytest

from access.tls import TlsFiles, common_name, server_context, tls_files
from tests.support.pki import Pki, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


def _handshake(server: ssl.SSLContext, client: ssl.SSLContext) -> str:
    """Both ends of one handshake over a socket pair: the version, or the client's error."""
    left, right = socket.socketpair()
    outcome: list[str] = []

    def serve() -> None:
        try:
            with server.wrap_socket(right, server_side=True) as wrapped:
                outcome.append(str(wrapped.version()))
        except (ssl.SSLError, OSError) as error:
            outcome.append(f"server: {type(error).__name__}")

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        with client.wrap_socket(left, server_hostname="localhost") as wrapped:
            version = str(wrapped.version())
    except (ssl.SSLError, OSError):
        version = "refused"
    thread.join(timeout=10)
    right.close()
    return version


def _old_client(pki: Pki, version: ssl.TLSVersion) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        context.minimum_version = version
        context.maximum_version = version
    context.set_ciphers("DEFAULT:@SECLEVEL=0")
    return context


@pytest.mark.parametrize("version", [ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1])
def test_old_protocols_are_refused_though_the_client_speaks_them(
    pki: Pki, version: ssl.TLSVersion
) -> None:
    permissive = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    permissive.load_cert_chain(str(pki.server_cert), str(pki.server_key))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        permissive.minimum_version = version
    permissive.set_ciphers("DEFAULT:@SECLEVEL=0")
    assert _handshake(permissive, _old_client(pki, version)).startswith("TLSv1")  # control
    ours = server_context(TlsFiles(pki.server_cert, pki.server_key))
    assert _handshake(ours, _old_client(pki, version)) == "refused"


def test_tls_1_2_and_1_3_are_accepted(pki: Pki) -> None:
    ours = server_context(TlsFiles(pki.server_cert, pki.server_key))
    client = ssl.create_default_context(cafile=str(pki.ca))
    assert _handshake(ours, client) == "TLSv1.3"
    client.maximum_version = ssl.TLSVersion.TLSv1_2
    assert _handshake(ours, client) == "TLSv1.2"


def test_a_client_ca_requires_a_client_certificate(pki: Pki) -> None:
    ours = server_context(TlsFiles(pki.server_cert, pki.server_key, pki.ca))
    assert ours.verify_mode == ssl.CERT_REQUIRED
    without = ssl.create_default_context(cafile=str(pki.ca))
    without.maximum_version = ssl.TLSVersion.TLSv1_2  # 1.3 reports it only on a read
    assert _handshake(ours, without) == "refused"
    with_certificate = ssl.create_default_context(cafile=str(pki.ca))
    with_certificate.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    assert _handshake(ours, with_certificate) == "TLSv1.3"


def test_common_name_of_a_peer_certificate() -> None:
    certificate = {"subject": ((("countryName", "LT"),), (("commonName", "ris.example"),))}
    assert common_name(certificate) == "ris.example"
    assert common_name({"subject": ((("organizationName", "x"),),)}) is None
    assert common_name(None) is None
    assert common_name({}) is None


def test_tls_files_need_both_halves(tmp_path: Path) -> None:
    assert tls_files(None, None, None) is None
    with pytest.raises(ValueError, match="private key"):
        tls_files(tmp_path / "c.pem", None, None)
    with pytest.raises(ValueError, match="private key"):
        tls_files(None, tmp_path / "k.pem", None)
    both = tls_files(tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem")
    assert both == TlsFiles(tmp_path / "c.pem", tmp_path / "k.pem", tmp_path / "ca.pem")
