"""`medbridge serve` bound beyond loopback: open DIMSE or MLLP only on purpose (exit 2
with the reason otherwise); MLLP allowed peers refuse the rest before any message and
record the admitting entry on the access's actor."""

from __future__ import annotations

import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from medbridge.embedded_mongo import EmbeddedMongo, free_port
from tests.integration.test_mllp import adt
from tests.support import audit_log
from tests.support.dcmtk import run
from tests.support.servers import RunningServer, start_server


def _serve(tmp_path: Path, store: EmbeddedMongo, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medbridge", "serve", "--data-dir", str(tmp_path),
         "--mongodb-uri", store.uri, "--http-port", str(free_port()),
         "--mllp-port", str(free_port()), "--dicom-port", str(free_port()), *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_network_defaults_refuse_to_start_with_dicom_open(
    tmp_path: Path, store: EmbeddedMongo
) -> None:
    done = _serve(tmp_path, store, "--host", "0.0.0.0")
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert "DICOM port would accept any calling AE title" in lines[0]
    assert "--dicom-open" in lines[0]
    assert not (tmp_path / "server.json").exists()


def test_network_refuses_open_mllp_after_dicom_is_decided(
    tmp_path: Path, store: EmbeddedMongo
) -> None:
    done = _serve(tmp_path, store, "--host", "0.0.0.0", "--dicom-open")
    assert done.returncode == 2
    assert "MLLP port would accept any peer" in done.stderr
    assert "--mllp-open" in done.stderr


def test_network_refuses_auth_off_even_with_the_doors_open(
    tmp_path: Path, store: EmbeddedMongo
) -> None:
    done = _serve(tmp_path, store, "--host", "0.0.0.0", "--no-auth", "--dicom-open", "--mllp-open")
    assert done.returncode == 2
    assert "authentication is off" in done.stderr


def test_a_certificate_without_its_key_refuses_to_start(
    tmp_path: Path, store: EmbeddedMongo
) -> None:
    done = _serve(tmp_path, store, "--tls-cert", str(tmp_path / "server.pem"))
    assert done.returncode == 2
    assert "private key" in done.stderr


def test_an_unreadable_certificate_refuses_to_start(tmp_path: Path, store: EmbeddedMongo) -> None:
    (tmp_path / "server.pem").write_text("not a certificate")
    (tmp_path / "server.key").write_text("not a key")
    done = _serve(
        tmp_path, store,
        "--tls-cert", str(tmp_path / "server.pem"), "--tls-key", str(tmp_path / "server.key"),
    )  # fmt: skip
    assert done.returncode == 2
    assert "refusing to start: HTTPS files unusable" in done.stderr
    assert "Traceback" not in done.stderr


def test_network_with_explicit_open_flags_starts(tmp_path: Path, store: EmbeddedMongo) -> None:
    server = start_server(
        tmp_path, store.uri, auth=True,
        extra_args=["--host", "0.0.0.0", "--dicom-open", "--mllp-open"],
    )  # fmt: skip
    try:
        output = run("echoscu", "-aet", "ANYONE", "-aec", "MEDBRIDGE", "127.0.0.1",
                     str(server.dicom_port))  # fmt: skip
        assert "Received Echo Response (Success)" in output, output
    finally:
        server.stop()
    assert server.process.returncode == 0


def _exchange(port: int, payload: bytes) -> bytes:
    """One MLLP frame on a new connection; what came back before the server closed."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        try:
            sock.sendall(b"\x0b" + payload + b"\x1c\x0d")
        except OSError:
            return b""  # closed before we could even send
        data = b""
        while b"\x1c\x0d" not in data:
            try:
                chunk = sock.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            data += chunk
        return data


@pytest.fixture(scope="module")
def listed(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo
) -> Iterator[tuple[RunningServer, Path]]:
    """Bound beyond loopback with lists: MLLP from 127.0.0.0/8 only, DIMSE closed."""
    folder = tmp_path_factory.mktemp("listed")
    audit = folder / "audit.jsonl"
    env = {
        "MEDBRIDGE_MLLP_ALLOWED_PEERS": "127.0.0.0/8, cn:ris.example",
        "MEDBRIDGE_DICOM_OPEN": "false",
        "MEDBRIDGE_EXTRA_HOOKS": "tests.support.audit_log:hooks",
        audit_log.FILE: str(audit),
    }
    server = start_server(
        folder / "server", store.uri, auth=True, extra_args=["--host", "0.0.0.0"], env=env
    )
    yield server, audit
    server.stop()


def test_listed_mllp_peer_is_acknowledged_and_recorded(
    listed: tuple[RunningServer, Path], unique: str
) -> None:
    server, audit = listed
    ack = _exchange(server.mllp_port, adt("A08", unique, f"X{unique}").encode())
    assert f"MSA|AA|A08-{unique}".encode() in ack
    actors = [
        (line["actor_kind"], line["actor_display"])
        for line in audit_log.read(audit)
        if line["door"] == "hl7v2" and line["parent"] is None
    ]
    assert ("hl7-peer", "127.0.0.0/8") in actors


def test_unlisted_dicom_ae_title_is_rejected(listed: tuple[RunningServer, Path]) -> None:
    server, _ = listed
    output = run("echoscu", "-aet", "STRANGER", "-aec", "MEDBRIDGE", "127.0.0.1",
                 str(server.dicom_port))  # fmt: skip
    assert "Association Rejected" in output, output


@pytest.fixture(scope="module")
def elsewhere(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo
) -> Iterator[RunningServer]:
    """Loopback server whose MLLP list names another network only."""
    env = {"MEDBRIDGE_MLLP_ALLOWED_PEERS": "192.0.2.0/24"}
    server = start_server(tmp_path_factory.mktemp("elsewhere"), store.uri, env=env)
    yield server
    server.stop()


def test_unlisted_mllp_peer_is_closed_before_any_message(
    elsewhere: RunningServer, unique: str
) -> None:
    assert _exchange(elsewhere.mllp_port, adt("A08", unique, f"Y{unique}").encode()) == b""
    assert "MLLP connection refused: peer 127.0.0.1 is not an allowed peer" in elsewhere.log()
