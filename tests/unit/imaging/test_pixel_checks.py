"""Pixel data against its header (issue 17, L6): sizes, padding, fragments, offset table."""

from __future__ import annotations

import io
import struct

import pydicom
import pytest
from pydicom.encaps import encapsulate

from access.errors import AccessError
from imaging.parse import Limits, parse
from imaging.pixel_checks import PixelHeader, check_pixel_data
from tests.support.dicom import base_dataset, part10

EXPLICIT = "1.2.840.10008.1.2.1"
JPEG = "1.2.840.10008.1.2.4.50"


def native_element(length: int) -> bytes:
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OW", 0, length) + b"\0" * length


def encapsulated_element(offsets: int, fragments: int) -> bytes:
    items = struct.pack("<HHI", 0xFFFE, 0xE000, 4 * offsets) + b"\0" * (4 * offsets)
    items += (struct.pack("<HHI", 0xFFFE, 0xE000, 2) + b"\xff\xd9") * fragments
    items += struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF) + items


def header(rows: int, columns: int, frames: object = None, **extra: object) -> PixelHeader:
    return PixelHeader(rows, columns, extra.get("samples", 1), extra.get("bits", 8), frames,
                       extra.get("photometric", "MONOCHROME2"))  # fmt: skip


@pytest.mark.parametrize(
    ("length", "pixels", "ok"),
    [
        (16, header(4, 4), True),
        (10, header(3, 3), True),  # 9 bytes padded to an even length
        (15, header(4, 4), False),
        (128, header(65535, 65535), False),
        (48, header(4, 4, "3"), True),
        (47, header(4, 4, 3), False),
        (2, header(4, 4, bits=1), True),  # 16 bits packed
        (32, header(4, 4, samples=3, photometric="YBR_FULL_422"), True),
        (96, header(4, 4, samples=3, bits=16, photometric="RGB"), True),
        (95, header(4, 4, samples=3, bits=16, photometric="RGB"), False),
        (16, header(4, 4, "1A"), False),
        (16, PixelHeader(None, None, None, None, None, None), True),  # nothing to check by
    ],
)
def test_native_length(length: int, pixels: PixelHeader, ok: bool) -> None:
    data = native_element(length)
    if ok:
        check_pixel_data(data, 0, EXPLICIT, pixels)
    else:
        with pytest.raises(AccessError) as refused:
            check_pixel_data(data, 0, EXPLICIT, pixels)
        assert refused.value.code == "MB-3020"
        assert refused.value.entry.dimse == 0xA900


@pytest.mark.parametrize(
    ("offsets", "fragments", "frames", "ok"),
    [
        (0, 1, 1, True),
        (0, 3, 1, True),  # one frame over several fragments
        (2, 2, 2, True),
        (0, 1, 999999999, False),
        (3, 3, 2, False),  # offset table of another length
        (0, 1, 2, False),
    ],
)
def test_encapsulated_frames(offsets: int, fragments: int, frames: int, ok: bool) -> None:
    data = encapsulated_element(offsets, fragments)
    pixels = header(4, 4, frames)
    if ok:
        check_pixel_data(data, 0, JPEG, pixels)
    else:
        with pytest.raises(AccessError, match="NumberOfFrames"):
            check_pixel_data(data, 0, JPEG, pixels)


def test_both_readers_refuse_meta_naming_another_instance() -> None:
    ds = base_dataset()
    data = part10(ds)
    sop = str(ds.SOPInstanceUID).encode()
    other = data.replace(sop, sop[:-1] + (b"1" if sop[-1:] != b"1" else b"2"), 1)  # meta only
    assert pydicom.dcmread(io.BytesIO(other)).SOPInstanceUID == ds.SOPInstanceUID
    with pytest.raises(AccessError) as refused:
        parse(other, Limits())
    assert refused.value.code == "MB-3021"
    assert refused.value.expression == "MediaStorageSOPInstanceUID"


def test_encapsulate_helper_agrees() -> None:
    two = encapsulate([b"\xff\xd8\xff\xd9", b"\xff\xd8\xff\xd9"], has_bot=True)
    element = struct.pack("<HH2sHI", 0x7FE0, 0x0010, b"OB", 0, 0xFFFFFFFF) + two
    check_pixel_data(element, 0, JPEG, header(4, 4, 2))
    with pytest.raises(AccessError):
        check_pixel_data(element, 0, JPEG, header(4, 4, 3))
