"""`medbridge dicom import`: folders, zip, DICOMDIR, in-process and over STOW-RS."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import httpx
import pydicom
from pydicom.fileset import FileSet
from pydicom.uid import generate_uid

from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.dicom import renamed
from tests.support.servers import RunningServer


def medbridge(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medbridge", "dicom", "import", "--quiet", *args],
        capture_output=True, text=True, timeout=180, check=False,
    )  # fmt: skip


def write_folder(root: Path, study: str, count: int) -> list[bytes]:
    (root / "a" / "b").mkdir(parents=True)
    blobs = [renamed("CT_small.dcm", study=study, patient_id="IMPORT") for _ in range(count)]
    for number, blob in enumerate(blobs):
        (root / ("a" if number % 2 else "a/b") / f"IM{number}").write_bytes(blob)
    (root / "a" / "notes.txt").write_text("not dicom")
    return blobs


def test_import_folder_and_zip_over_stow(server: RunningServer, tmp_path: Path) -> None:
    study = generate_uid()
    blobs = write_folder(tmp_path / "folder", study, 4)
    archive = tmp_path / "more.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("x/one.dcm", renamed("MR_small.dcm", study=study, patient_id="IMPORT"))
        zipped.writestr("x/again.dcm", blobs[0])  # a duplicate of a folder file
        zipped.writestr("bomb.bin", b"\0" * (20 << 20))  # ratio far over the cap
    result = medbridge(
        "--url", f"{server.base_url}/dicomweb", str(tmp_path / "folder"), str(archive)
    )
    assert result.returncode == 1, result.stderr  # the text file and the bomb failed
    assert "6 stored, 0 duplicate, 2 failed" in result.stdout
    assert "compression ratio" in result.stdout
    found = httpx.get(f"{server.base_url}/dicomweb/studies/{study}/instances").json()
    assert len(found) == 5


def test_import_dicomdir_in_process(store: EmbeddedMongo, tmp_path: Path) -> None:
    study = generate_uid()
    fileset = FileSet()
    for _ in range(3):
        fileset.add(pydicom.dcmread(io.BytesIO(renamed("CT_small.dcm", study=study))))
    media = tmp_path / "media"
    fileset.write(media)
    fileset._stage["t"].cleanup()  # pydicom leaves its staging folder to the finalizer
    database = f"i{generate_uid()[-10:].replace('.', '')}"
    args = [
        "--mongodb-uri",
        store.uri,
        "--database",
        database,
        "--data-dir",
        str(tmp_path / "data"),
    ]
    result = medbridge(*args, str(media / "DICOMDIR"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "3 stored, 0 duplicate, 0 failed" in result.stdout
    again = medbridge(*args, str(media))
    assert "0 stored, 3 duplicate, 0 failed" in again.stdout
    stored = list((tmp_path / "data" / "objects" / "dicom" / study).rglob("*.dcm"))
    assert len(stored) == 3
