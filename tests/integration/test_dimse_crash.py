"""`kill -9` during C-STORE: every instance that got a success status is there after restart."""

from __future__ import annotations

import hashlib
import re
import subprocess
import time
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.dcmtk import findscu
from tests.support.dicom import renamed
from tests.support.servers import start_server

COUNT = 150


def acknowledged(output: str) -> list[str]:
    """The files storescu sent that got a Success response, in order."""
    done, current = [], None
    for line in output.splitlines():
        sending = re.match(r"I: Sending file: (.+)$", line)
        if sending:
            current = sending.group(1)
        elif "Received Store Response (Success)" in line and current is not None:
            done.append(current)
            current = None
    return done


def children(pid: int) -> set[int]:
    """The processes whose parent is `pid` (the server's DICOM parse workers)."""
    found = set()
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.add(int(stat.parent.name))
    return found


def running(pid: int) -> bool:
    """Alive and not a zombie waiting for a parent that does not reap."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_kill_during_c_store_keeps_every_acknowledged_instance(
    tmp_path: Path, store: EmbeddedMongo
) -> None:
    server = start_server(tmp_path / "server", store.uri)
    study = generate_uid()
    paths = []
    for n in range(COUNT):
        path = tmp_path / f"{n:03}.dcm"
        path.write_bytes(renamed("CT_small.dcm", study=study, patient_id="CRASH"))
        paths.append(path)
    log = tmp_path / "storescu.log"
    with log.open("w") as sink:
        sender = subprocess.Popen(
            ["/usr/bin/storescu", "-v", "-R", "-xe", "-aec", "MEDBRIDGE", "127.0.0.1",
             str(server.dicom_port), *map(str, paths)],
            stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip
        try:
            deadline = time.monotonic() + 60
            while len(acknowledged(log.read_text())) < 20 and time.monotonic() < deadline:
                time.sleep(0.01)
            workers = children(server.process.pid)
            server.kill()
        finally:
            sender.wait(60)
    sent = acknowledged(log.read_text())
    assert 20 <= len(sent) < COUNT  # killed mid-stream
    restarted = start_server(tmp_path / "server", store.uri, database=server.database)
    try:
        wanted = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in sent}
        _, found = findscu(
            restarted.dicom_port, "-S",
            ["QueryRetrieveLevel=IMAGE", f"StudyInstanceUID={study}", "SOPInstanceUID"],
            tmp_path / "find",
        )  # fmt: skip
        assert wanted <= {str(d.SOPInstanceUID) for d in found}
        # nothing half-written is visible: each object is whole (its name is its digest)
        objects = sorted((restarted.data_dir / "objects" / "dicom" / study).rglob("*"))
        files = [path for path in objects if path.is_file()]
        assert len(files) >= len(wanted)
        for path in files:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
            assert path.name == f"{digest[:20]}.dcm"
        # the killed server's parse workers did not outlive it
        assert workers
        deadline = time.monotonic() + 30
        while any(running(pid) for pid in workers) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not any(running(pid) for pid in workers)
    finally:
        restarted.stop()
