"""Hostile names never choose a path; kill -9 during STOW loses nothing acknowledged."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.uid import generate_uid

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.dicom import renamed, with_uids
from tests.support.servers import RunningServer, start_server

BOUNDARY = "robust-boundary"


def stow(base_url: str, parts: list[bytes], timeout: float = 60.0) -> httpx.Response:
    body = (
        b"".join(
            f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + p + b"\r\n"
            for p in parts
        )
        + f"--{BOUNDARY}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
    return httpx.post(
        f"{base_url}/dicomweb/studies", content=body,
        headers={"Content-Type": content_type}, timeout=timeout,
    )  # fmt: skip


def snapshot(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


@pytest.fixture
def own_server(tmp_path: Path, store: EmbeddedMongo) -> Iterator[RunningServer]:
    running = start_server(tmp_path / "server", store.uri)
    yield running
    running.stop()


HOSTILE_UIDS = [
    ("../../../../tmp/evil", "1.2.3", "1.2.4"),
    ("1.2.3", "/etc/cron.d/evil", "1.2.4"),
    ("1.2.3", "1.2.4", "..\\..\\evil"),
    ("1.2.3", "1.2.4", "1.2.5\0/../../evil"),
    ("1.2.3", "1.2.4", "1." + "9" * 80),
    ("1.2.3", "1.2.4", "."),
]


def test_hostile_uids_and_patient_ids_never_choose_a_path(
    own_server: RunningServer, tmp_path: Path
) -> None:
    objects = own_server.data_dir / "objects"
    outside_before = snapshot(tmp_path) - {f for f in snapshot(tmp_path) if "/objects/" in f}
    hostile = [with_uids(*uids) for uids in HOSTILE_UIDS]
    answer = stow(own_server.base_url, hostile)
    assert answer.status_code == 409
    assert len(answer.json()["00081198"]["Value"]) == len(HOSTILE_UIDS)
    # a PatientID is not a UID: it is stored, but never used in a path
    tricky = renamed("CT_small.dcm", patient_id="../../../../tmp/evil-patient")
    assert stow(own_server.base_url, [tricky]).status_code == 200
    after = snapshot(tmp_path)
    outside_after = {f for f in after if "/objects/" not in f}
    # outside the object store only the server's own store and log files may change
    new_outside = {f for f in outside_after - outside_before if "/mongo/" not in f}
    assert {f for f in new_outside if not f.endswith(".log")} == set()
    inside = snapshot(objects)
    for name in inside:
        top = name.split("/")[0]
        assert top in ("dicom", "quarantine", ".tmp"), name
        assert "evil" not in name
    assert len([n for n in inside if n.startswith("quarantine/") and n.endswith(".bin")]) == 6
    assert not Path("/tmp/evil").exists()
    assert not Path("/tmp/evil-patient").exists()


def test_kill_9_during_stow_keeps_every_acknowledged_instance(
    tmp_path: Path, store: EmbeddedMongo
) -> None:
    database = f"k{os.urandom(6).hex()}"
    first = start_server(tmp_path / "server", store.uri, database=database)
    acknowledged: dict[str, str] = {}  # SOP Instance UID -> SHA-256 of the bytes sent
    study = generate_uid()
    stop = threading.Event()
    enough = threading.Event()

    def sender() -> None:
        while not stop.is_set():
            data = renamed("CT_small.dcm", study=study, patient_id="KILL9")
            sop = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID
            try:
                answer = stow(first.base_url, [data], timeout=10.0)
            except httpx.HTTPError:
                return
            if answer.status_code == 200:
                acknowledged[sop] = hashlib.sha256(data).hexdigest()
            if len(acknowledged) >= 12:
                enough.set()

    threads = [threading.Thread(target=sender) for _ in range(3)]
    for thread in threads:
        thread.start()
    assert enough.wait(120)
    first.kill()  # mid-flight: the senders are still posting
    stop.set()
    for thread in threads:
        thread.join(30)
    second = start_server(tmp_path / "server", store.uri, database=database)
    try:
        assert list((second.data_dir / "objects" / ".tmp").glob("*.part")) == []
        with httpx.Client(base_url=f"{second.base_url}/dicomweb", timeout=60.0) as client:
            for sop, digest in acknowledged.items():
                found = client.get(f"/studies/{study}/instances", params={"SOPInstanceUID": sop})
                assert found.status_code == 200
                series = found.json()[0]["0020000E"]["Value"][0]
                one = client.get(
                    "/wado", params={"requestType": "WADO", "studyUID": study,
                                      "seriesUID": series, "objectUID": sop,
                                      "contentType": "application/dicom"},
                )  # fmt: skip
                assert hashlib.sha256(one.content).hexdigest() == digest
            # whatever is visible is whole: every indexed instance reads back and parses
            for item in client.get(f"/studies/{study}/instances", params={"limit": "1000"}).json():
                series = item["0020000E"]["Value"][0]
                sop = item["00080018"]["Value"][0]
                one = client.get(
                    "/wado", params={"requestType": "WADO", "studyUID": study,
                                     "seriesUID": series, "objectUID": sop,
                                     "contentType": "application/dicom"},
                )  # fmt: skip
                assert one.status_code == 200
                assert pydicom.dcmread(io.BytesIO(one.content)).SOPInstanceUID == sop
    finally:
        second.stop()


def peak_memory_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_hostile_files_stay_under_a_memory_bound(own_server: RunningServer) -> None:
    """Bombs and crafted structures are refused without the process ballooning."""
    import gzip

    from tests.support.dicom import deflate_bomb, huge_length, nested_sequences, sample_bytes

    before = peak_memory_mb(own_server.process.pid)
    hostile = [
        nested_sequences(300),
        huge_length(),
        deflate_bomb(256 << 20),  # 256 MB of zeros behind a deflated transfer syntax
        sample_bytes("CT_small.dcm")[:100],
        b"\0" * 4096,
    ]
    answer = stow(own_server.base_url, hostile)
    assert answer.status_code == 409
    reasons = [item["00081197"]["Value"][0] for item in answer.json()["00081198"]["Value"]]
    assert len(reasons) == len(hostile)
    body = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + b"\0" * (256 << 20)
    gzipped = httpx.post(
        f"{own_server.base_url}/dicomweb/studies", content=gzip.compress(body, 1),
        headers={"Content-Type": f'multipart/related; type="application/dicom"; '
                                 f"boundary={BOUNDARY}", "Content-Encoding": "gzip"},
        timeout=60,
    )  # fmt: skip
    assert gzipped.status_code == 413
    grown = peak_memory_mb(own_server.process.pid) - before
    assert grown < 200, f"peak memory grew by {grown:.0f} MB"
    assert httpx.get(f"{own_server.base_url}/health").status_code == 200
