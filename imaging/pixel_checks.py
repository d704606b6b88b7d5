"""Pixel data that agrees with its header, checked before an instance is acknowledged.

A header can name more frames, rows or columns than the bytes hold (issue 17, L6: Rows =
Columns = 65535 over 128 bytes; NumberOfFrames = 999999999 over one fragment), and every
reader of the instance (frames, rendering, bulk data) would then size its work from the
header. So, per PS3.5:

- native pixel data (8.1.1) holds at least Rows x Columns x SamplesPerPixel x
  BitsAllocated x NumberOfFrames bits, rounded up to whole bytes; one byte more is the
  padding to an even length (7.1.1); more than that is tolerated, as pydicom does (the
  frames are read from the start), see docs/dicom.md "Header checks";
- encapsulated pixel data (A.4) has a Basic Offset Table that is empty or has one entry
  per frame, and at least one fragment per frame (a fragment never holds two frames).

Float and double float pixel data, and deflated data sets (whose pixel data exists only
once inflated), are not checked here.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

from access.errors import AccessError

ITEM, SEQUENCE_END = b"\xfe\xff\x00\xe0", b"\xfe\xff\xdd\xe0"
NATIVE = frozenset(("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"))
PIXEL_DATA_TAG = 0x7FE00010
# photometric interpretations whose native samples are shared by two pixels (PS3.3 C.7.6.3.1.2)
SUBSAMPLED = {"YBR_FULL_422": 2, "YBR_PARTIAL_422": 2}


@dataclass(frozen=True, slots=True)
class PixelHeader:
    """The Image Pixel attributes that size the pixel data (None when absent)."""

    rows: object = None
    columns: object = None
    samples_per_pixel: object = None
    bits_allocated: object = None
    number_of_frames: object = None
    photometric_interpretation: object = None


def check_pixel_data(data: bytes, offset: int, syntax: str, header: PixelHeader) -> None:
    """Raise AccessError(MB-3020) when the pixel data element at `offset` (Pixel Data only)
    cannot hold what the header says; the element is known to be complete."""
    if data[offset : offset + 4] != _tag_bytes(syntax):
        return  # Float / Double Float Pixel Data: not sized here
    frames = _count(header.number_of_frames, default=1)
    if frames is None:
        raise AccessError("MB-3020", "NumberOfFrames is not a positive number")
    implicit = syntax == "1.2.840.10008.1.2"
    order = ">" if syntax == "1.2.840.10008.1.2.2" else "<"
    if implicit:
        length, start = struct.unpack_from(order + "I", data, offset + 4)[0], offset + 8
    else:
        length, start = struct.unpack_from(order + "I", data, offset + 8)[0], offset + 12
    if syntax in NATIVE:
        _check_native(length, frames, header)
    elif length == 0xFFFFFFFF:
        _check_encapsulated(data, start, frames)


def _check_native(length: int, frames: int, header: PixelHeader) -> None:
    sizes = [
        _count(value)
        for value in (header.rows, header.columns, header.samples_per_pixel, header.bits_allocated)
    ]
    rows, columns, samples, bits = sizes
    if rows is None or columns is None or bits is None:
        return  # no geometry to hold the bytes against (the image checks refuse elsewhere)
    samples = samples or 1
    shared = SUBSAMPLED.get(str(header.photometric_interpretation or "").strip())
    per_pixel_bits = bits * (2 if shared and samples == 3 else samples)
    expected = (rows * columns * per_pixel_bits * frames + 7) // 8
    if length < expected:
        raise AccessError(
            "MB-3020",
            f"pixel data holds {length} bytes; Rows x Columns x SamplesPerPixel x "
            f"BitsAllocated x NumberOfFrames needs {expected}",
            expression="PixelData",
        )


def _check_encapsulated(data: bytes, start: int, frames: int) -> None:
    """Fragments and Basic Offset Table against NumberOfFrames, walking item headers only."""
    position, size = start, len(data)
    offsets: int | None = None  # entries of the Basic Offset Table (the first item)
    fragments = 0
    while position + 8 <= size and fragments < frames:
        tag, length = data[position : position + 4], struct.unpack_from("<I", data, position + 4)[0]
        if tag == SEQUENCE_END:
            break
        if tag != ITEM or length == 0xFFFFFFFF:
            raise AccessError("MB-3020", "encapsulated pixel data item malformed",
                            expression="PixelData")  # fmt: skip
        if offsets is None:
            offsets = length // 4
            if offsets and offsets != frames:
                raise AccessError(
                    "MB-3020",
                    f"Basic Offset Table has {offsets} entries for NumberOfFrames {frames}",
                    expression="NumberOfFrames",
                )
        else:
            fragments += 1  # enough once there is one per frame: the rest is not walked
        position += 8 + length
    if fragments < frames:
        raise AccessError(
            "MB-3020",
            f"{fragments} pixel data fragments for NumberOfFrames {frames}",
            expression="NumberOfFrames",
        )


def _count(value: object, default: int | None = None) -> int | None:
    """A positive count from a header value (first of several); default when absent."""
    if value is None or value == "":
        return default
    if isinstance(value, Sequence) and not isinstance(value, str):
        if not value:
            return default
        value = value[0]
    try:
        number = int(str(value).strip())
    except ValueError:
        return None
    return number if number > 0 else None


def _tag_bytes(syntax: str) -> bytes:
    order = ">" if syntax == "1.2.840.10008.1.2.2" else "<"
    return struct.pack(order + "HH", PIXEL_DATA_TAG >> 16, PIXEL_DATA_TAG & 0xFFFF)
