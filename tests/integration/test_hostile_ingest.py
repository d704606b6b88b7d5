"""Hostile DICOM headers and sizes (issue 17, L6 and L7), over C-STORE and STOW-RS.

Each refused instance gets the house status (0xA900 for a header that contradicts its
pixel data or its File Meta Information, 0xA700 over a size limit), is quarantined with
its reason, and leaves nothing in the archive.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, _config

from imaging.same_instance import data_set_offset
from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_dicomweb_fhir_link import stow
from tests.support import dcmtk
from tests.support.dicom import base_dataset, deflate_bomb, part10, renamed
from tests.support.servers import RunningServer, start_server

MAX_INSTANCE = 4 * 1024 * 1024
PREFIX = 64 * 1024
LIMITS_ENV = {
    "MEDBRIDGE_DICOM_MAX_INSTANCE_BYTES": str(MAX_INSTANCE),
    "MEDBRIDGE_DICOM_QUARANTINE_PREFIX_BYTES": str(PREFIX),
}


@pytest.fixture(scope="module")
def archive(
    tmp_path_factory: pytest.TempPathFactory, store: EmbeddedMongo
) -> Iterator[RunningServer]:
    """A server with a small instance cap, so over-size cases stay small in the test."""
    running = start_server(tmp_path_factory.mktemp("hostile"), store.uri, env=LIMITS_ENV)
    yield running
    running.stop()


def image(rows: int, columns: int, pixels: bytes, **attributes: object) -> bytes:
    """A Secondary Capture whose header claims rows x columns over the given pixel bytes."""
    ds = base_dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = rows, columns
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    ds.PixelData = pixels
    return part10(ds)


def raw_c_store(server: RunningServer, path: Path, syntax: str) -> int:
    """C-STORE the file's data set bytes exactly as they are: pynetdicom's chunked sending
    (dcmtk, and pynetdicom by default, read and so inflate a deflated file first)."""
    ae = AE("HOSTILE")
    stream = io.BytesIO(path.read_bytes()[:4096])  # the File Meta Information only
    pydicom.filereader.read_preamble(stream, False)
    meta = pydicom.filereader._read_file_meta_info(stream)
    ae.add_requested_context(meta.MediaStorageSOPClassUID, [syntax])
    ae.dimse_timeout = ae.network_timeout = 120
    chunked = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    assoc = ae.associate("127.0.0.1", server.dicom_port, ae_title="MEDBRIDGE")
    try:
        assert assoc.is_established
        status = assoc.send_c_store(path)
        return int(status.Status)
    finally:
        assoc.release()
        _config.STORE_SEND_CHUNKED_DATASET = chunked


def quarantined(server: RunningServer, code: str) -> list[dict[str, Any]]:
    notes = [json.loads(p.read_text()) | {"object": p.with_suffix(".bin")}
             for p in (server.data_dir / "objects").rglob("*.json")]  # fmt: skip
    return [note for note in notes if note["code"] == code]


def failure_reason(response: httpx.Response) -> int:
    assert response.status_code == 409, response.text
    return int(response.json()["00081198"]["Value"][0]["00081197"]["Value"][0])


def not_stored(server: RunningServer, data: bytes) -> bool:
    header = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True, force=True)
    url = f"{server.base_url}/dicomweb/studies/{header.StudyInstanceUID}/instances"
    response = httpx.get(url, timeout=30.0)
    return response.status_code in (204, 404) or response.json() == []


# L6: header sanity -------------------------------------------------------------------


def test_rows_columns_over_tiny_pixel_data_refused_over_c_store(
    archive: RunningServer, tmp_path: Path
) -> None:
    data = image(65535, 65535, b"\x01" * 128)
    path = tmp_path / "huge-header.dcm"
    path.write_bytes(data)
    output = dcmtk.storescu(archive.dicom_port, [path])
    assert dcmtk.successes(output) == 0
    assert "DataSetDoesNotMatchSOPClass" in output, output  # 0xA900
    assert not_stored(archive, data)
    notes = [n for n in quarantined(archive, "MB-3020") if n["source"] == "dimse:STORESCU"]
    assert len(notes) == 1
    assert notes[0]["reason"] == (
        "pixel data holds 128 bytes; Rows x Columns x SamplesPerPixel x BitsAllocated x "
        "NumberOfFrames needs 4294836225"
    )


def test_rows_columns_over_tiny_pixel_data_refused_over_stow(archive: RunningServer) -> None:
    data = image(65535, 65535, b"\x01" * 128)
    assert failure_reason(stow(archive, [data])) == 0xA900
    assert not_stored(archive, data)


def test_pixel_data_of_exactly_the_header_size_and_odd_padding_are_stored(
    archive: RunningServer,
) -> None:
    exact = image(4, 4, b"\x01" * 16)
    odd = image(3, 3, b"\x01" * 9)  # 9 bytes, padded to 10 by the writer (PS3.5 7.1.1)
    frames = image(4, 4, b"\x01" * 48, NumberOfFrames=3)
    response = stow(archive, [exact, odd, frames])
    assert response.status_code == 200, response.text
    assert "00081198" not in response.json()


def test_more_frames_than_fragments_refused(archive: RunningServer) -> None:
    # the C1 header: NumberOfFrames 999999999 over one JPEG fragment
    data = renamed("SC_rgb_jpeg_dcmtk.dcm", NumberOfFrames=999999999)
    assert failure_reason(stow(archive, [data])) == 0xA900
    assert not_stored(archive, data)
    notes = [n for n in quarantined(archive, "MB-3020") if "999999999" in n["reason"]]
    # the sample's Basic Offset Table has one entry: it names the one frame there is
    assert [n["reason"] for n in notes] == [
        "Basic Offset Table has 1 entries for NumberOfFrames 999999999"
    ]


def test_offset_table_disagreeing_with_frame_count_refused(archive: RunningServer) -> None:
    ds = pydicom.dcmread(io.BytesIO(renamed("SC_rgb_jpeg_dcmtk.dcm")))
    fragments = pydicom.encaps.generate_fragments(ds.PixelData)
    frame = b"".join(fragments)
    # two frames, offset table with three entries
    ds.PixelData = pydicom.encaps.encapsulate([frame, frame], has_bot=True)
    ds.NumberOfFrames = 3
    ds["PixelData"].is_undefined_length = True
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    assert failure_reason(stow(archive, [out.getvalue()])) == 0xA900


def test_file_meta_naming_another_instance_refused(archive: RunningServer) -> None:
    original = renamed("CT_small.dcm")
    sop = str(pydicom.dcmread(io.BytesIO(original), stop_before_pixels=True).SOPInstanceUID)
    start = data_set_offset(original)
    assert start is not None
    other = generate_uid()[: len(sop)].ljust(len(sop), "1")
    meta = original[:start].replace(sop.encode(), other.encode())  # the data set keeps its own
    data = meta + original[start:]
    assert meta != original[:start]
    assert failure_reason(stow(archive, [data])) == 0xA900
    assert not_stored(archive, data)
    assert any(
        n["reason"] == "MediaStorageSOPInstanceUID differs from the data set's UID"
        for n in quarantined(archive, "MB-3021")
    )


# L7: sizes ---------------------------------------------------------------------------


def test_over_size_c_store_keeps_only_a_bounded_prefix(
    archive: RunningServer, tmp_path: Path
) -> None:
    data = image(2048, 3072, b"\x02" * (2048 * 3072))  # 6 MiB, cap 4 MiB
    assert len(data) > MAX_INSTANCE
    path = tmp_path / "large.dcm"
    path.write_bytes(data)
    status = raw_c_store(archive, path, ExplicitVRLittleEndian)
    assert status == 0xA700
    assert not_stored(archive, data)
    # the server wrote its own File Meta Information: the size is the data set's plus it
    notes = [n for n in quarantined(archive, "MB-3003") if n["size"] > MAX_INSTANCE]
    assert len(notes) == 1
    assert notes[0]["source"] == "dimse:HOSTILE"
    assert notes[0]["kept_bytes"] == PREFIX
    kept = Path(notes[0]["object"]).read_bytes()
    start = data_set_offset(kept)
    assert start is not None
    assert kept[start:] == data[data_set_offset(data) : data_set_offset(data) + PREFIX - start]


def test_deflate_bomb_over_dimse_stops_at_the_cap(archive: RunningServer, tmp_path: Path) -> None:
    bomb = deflate_bomb(1500 << 20)  # 1.5 MB that inflates to 1.5 GB
    assert len(bomb) < 2 * 1024 * 1024
    path = tmp_path / "bomb.dcm"
    path.write_bytes(bomb)
    status = raw_c_store(archive, path, DeflatedExplicitVRLittleEndian)
    assert status == 0xA700
    notes = [n for n in quarantined(archive, "MB-3003") if n["size"] < 2 * 1024 * 1024]
    assert len(notes) == 1
    assert notes[0]["kept_bytes"] == notes[0]["size"]  # under the cap: kept whole
    assert "inflates past the limit" in notes[0]["reason"]
