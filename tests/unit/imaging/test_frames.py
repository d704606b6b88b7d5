"""Frame counts from the pixel data itself, and the frame-list cap (issue 17 C1, H2)."""

from __future__ import annotations

import io

import pydicom
import pytest
from pydicom.encaps import encapsulate
from pydicom.uid import CTImageStorage, RLELossless

from access.errors import AccessError
from imaging.dicomweb import render, wado
from tests.support.dicom import base_dataset, part10


def ct(frames_claimed: str, pixels: bytes, syntax: str | None = None) -> bytes:
    ds = base_dataset(Modality="CT", NumberOfFrames=frames_claimed)
    ds.SOPClassUID = CTImageStorage
    ds.Rows, ds.Columns, ds.SamplesPerPixel = 8, 8, 1
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = pixels
    if syntax is None:
        return part10(ds)
    return part10(ds, syntax)


def read(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


def test_native_frames_are_what_the_bytes_hold() -> None:
    assert render.frame_count(read(ct("999999999", bytes(128)))) == 1
    assert render.frame_count(read(ct("3", bytes(128 * 5)))) == 3  # header below data
    assert render.frame_count(read(ct("4", bytes(100)))) == 0  # not one whole frame


def test_encapsulated_frames_are_bounded_by_the_fragments() -> None:
    pixels = encapsulate([b"\x00" * 64, b"\x01" * 64])
    assert render.frame_count(read(ct("999999999", pixels, RLELossless))) == 2


def test_frames_outside_the_real_count_are_404_and_empty_pixels_422() -> None:
    data = ct("999999999", bytes(range(128)))
    assert render.frames(data, [1]) == [bytes(range(128))]
    with pytest.raises(AccessError) as beyond:
        render.frames(data, [2])
    assert (beyond.value.code, beyond.value.entry.http) == ("MB-3010", 404)
    with pytest.raises(AccessError) as empty:
        render.frames(ct("2", bytes(10)), [1])
    assert empty.value.code == "MB-3014"


def test_a_frame_list_over_the_cap_is_refused_before_parsing() -> None:
    assert wado.parse_frames("1,2,3", 3) == [1, 2, 3]
    with pytest.raises(AccessError) as refused:
        wado.parse_frames(",".join(["x"] * 4000), 1000)  # not even integers: not parsed
    assert (refused.value.code, refused.value.entry.http) == ("MB-3040", 413)
    assert "MEDBRIDGE_LIMIT_FRAMES_PER_REQUEST" in refused.value.diagnostics
