"""imaging.sources: DICOMDIR references and zip members never escape or explode."""

from __future__ import annotations

import io
import warnings
import zipfile
from pathlib import Path

import pydicom
from pydicom.fileset import FileSet

from imaging.sources import sources
from tests.support.dicom import renamed


def make_media(root: Path, count: int) -> Path:
    fileset = FileSet()
    for _ in range(count):
        fileset.add(pydicom.dcmread(io.BytesIO(renamed("CT_small.dcm"))))
    fileset.write(root)
    fileset._stage["t"].cleanup()  # pydicom leaves its staging folder to the finalizer
    return root / "DICOMDIR"


def test_dicomdir_references_are_read(tmp_path: Path) -> None:
    found = list(sources([make_media(tmp_path / "media", 2)], 1 << 20))
    assert len(found) == 2
    assert all(s.data is not None and s.data[128:132] == b"DICM" for s in found)


def test_dicomdir_reference_outside_the_folder_is_refused(tmp_path: Path) -> None:
    dicomdir = make_media(tmp_path / "media", 1)
    secret = tmp_path / "secret.dcm"
    secret.write_bytes(renamed("CT_small.dcm"))
    directory = pydicom.dcmread(dicomdir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ".." is not a valid CS value: that is the point
        for record in directory.DirectoryRecordSequence:
            if "ReferencedFileID" in record:
                record.ReferencedFileID = ["..", "secret.dcm"]
        directory.save_as(dicomdir)
    found = list(sources([dicomdir], 1 << 20))
    assert [s.problem for s in found] == ["ReferencedFileID leaves the folder"]
    assert all(s.data is None for s in found)


def test_zip_bomb_members_and_oversized_members_are_refused(tmp_path: Path) -> None:
    archive = tmp_path / "in.zip"
    good = renamed("CT_small.dcm")
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zipped:
        zipped.writestr("../../evil/one.dcm", good)  # a name is a label, never a path
        zipped.writestr("bomb.bin", b"\0" * (900 << 10))  # under the size cap, ratio ~1000
        zipped.writestr("big.dcm", bytes(range(256)) * 8192)  # 2 MB, over the 1 MB cap
    found = {s.name.split(":", 1)[1]: s for s in sources([archive], 1 << 20)}
    assert found["../../evil/one.dcm"].data == good
    assert "ratio" in (found["bomb.bin"].problem or "")
    assert "larger than" in (found["big.dcm"].problem or "")
    assert not (tmp_path.parent / "evil").exists()
