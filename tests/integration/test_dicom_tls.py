"""DICOM TLS on the DIMSE port with dcmtk as the peer (`storescu`/`echoscu +tls`):
TLS associations work, plaintext on the TLS port fails, and a client certificate is
bound to the calling AE titles of its peers-table row (`certificate_cn`)."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support import audit_log
from tests.support.dcmtk import run, storescu, successes
from tests.support.dicom import renamed
from tests.support.pki import Pki, make_pki
from tests.support.servers import RunningServer, start_server


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_server(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo, pki: Pki
) -> Iterator[RunningServer]:
    folder = tmp_path_factory.mktemp("dicom-tls")
    peers = folder / "peers.json"
    rows = [
        {"ae_title": "MODALITY_A", "certificate_cn": "modality-a"},
        {"ae_title": "MODALITY_B", "certificate_cn": ["modality-b"]},
        {"ae_title": "NO_CERT"},
    ]
    peers.write_text(json.dumps({"peers": rows}))
    env = {
        "MEDBRIDGE_DICOM_TLS_CERT": str(pki.server_cert),
        "MEDBRIDGE_DICOM_TLS_KEY": str(pki.server_key),
        "MEDBRIDGE_DICOM_TLS_CLIENT_CA": str(pki.ca),
        "MEDBRIDGE_DICOM_PEERS_FILE": str(peers),
        "MEDBRIDGE_DICOM_OPEN": "false",
        "MEDBRIDGE_EXTRA_HOOKS": "tests.support.audit_log:hooks",
        audit_log.FILE: str(folder / "audit.jsonl"),
    }
    running = start_server(folder / "server", store.uri, env=env)
    yield running
    running.stop()


def _tls(pki: Pki, common_name: str) -> list[str]:
    """dcmtk's TLS options: our key and certificate, the CA that signed the server's."""
    certificate, key = pki.client(common_name)
    return ["+tls", str(key), str(certificate), "+cf", str(pki.ca)]


def _echo(server: RunningServer, calling: str, *extra: str) -> str:
    return run(
        "echoscu", "-aet", calling, "-aec", "MEDBRIDGE", *extra,
        "127.0.0.1", str(server.dicom_port), timeout=60,
    )  # fmt: skip


def test_storescu_over_tls_with_its_certificate(
    tls_server: RunningServer, pki: Pki, tmp_path: Path
) -> None:
    path = tmp_path / "ct.dcm"
    path.write_bytes(renamed("CT_small.dcm", patient_id="DICOM-TLS"))
    output = storescu(tls_server.dicom_port, [path], "MODALITY_A", *_tls(pki, "modality-a"))
    assert successes(output) == 1, output
    audited = [
        (line["action"], line["actor_kind"], line["actor"], line["actor_display"])
        for line in audit_log.read(tls_server.data_dir.parent / "audit.jsonl")
        if line["door"] == "dimse"
    ]
    # the certificate that authenticated the AE title is on the access's actor
    assert ("c-store", "dicom-ae", "MODALITY_A", "cn:modality-a") in audited


def test_echoscu_over_tls_with_a_list_bound_certificate(
    tls_server: RunningServer, pki: Pki
) -> None:
    output = _echo(tls_server, "MODALITY_B", *_tls(pki, "modality-b"))
    assert "Received Echo Response (Success)" in output, output


def test_a_certificate_of_another_ae_title_is_rejected(tls_server: RunningServer, pki: Pki) -> None:
    output = _echo(tls_server, "MODALITY_B", *_tls(pki, "modality-a"))
    assert "Association Rejected" in output, output
    assert "Calling AE Title Not Recognized" in output, output
    assert "Received Echo Response" not in output


def test_a_row_without_a_certificate_name_is_rejected_over_tls(
    tls_server: RunningServer, pki: Pki
) -> None:
    output = _echo(tls_server, "NO_CERT", *_tls(pki, "no-cert"))
    assert "Association Rejected" in output, output


def test_a_client_without_a_certificate_fails_the_handshake(
    tls_server: RunningServer, pki: Pki
) -> None:
    output = _echo(tls_server, "MODALITY_A", "+tla", "+cf", str(pki.ca))
    assert "Received Echo Response" not in output, output
    # the listener is still there for the next peer
    assert "Echo Response (Success)" in _echo(tls_server, "MODALITY_A", *_tls(pki, "modality-a"))


def test_plaintext_association_on_the_tls_port_fails(tls_server: RunningServer, pki: Pki) -> None:
    output = _echo(tls_server, "MODALITY_A")
    assert "Received Echo Response" not in output, output
    assert "Association Request Failed" in output or "Association Aborted" in output, output


def test_a_silent_connection_does_not_block_the_others(tls_server: RunningServer, pki: Pki) -> None:
    """The handshake runs in the connection's thread: one that never sends its
    ClientHello does not stop the accept loop."""
    with socket.create_connection(("127.0.0.1", tls_server.dicom_port), timeout=30) as silent:
        time.sleep(0.2)  # let the server accept it first
        output = _echo(tls_server, "MODALITY_A", *_tls(pki, "modality-a"))
        assert "Received Echo Response (Success)" in output, output
        silent.settimeout(30)
        assert silent.recv(1) == b""  # closed after the request timeout, never answered
