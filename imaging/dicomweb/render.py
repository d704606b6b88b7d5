"""Pixels out of a stored instance: raw frames, and consumer images (JPEG/PNG).

Decoding uses pydicom's pixel handlers (Pillow / pylibjpeg plugins for compressed
transfer syntaxes); rendering applies the Modality LUT, the header's VOI window
(WindowCenter / WindowWidth) and MONOCHROME1 inversion, then scales to 8 bits.
"""

from __future__ import annotations

import io
import warnings
from collections.abc import Sequence

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.encaps import parse_fragments
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian

from access.errors import AccessError

THUMBNAIL = 128


def _read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def _declared_frames(ds: Dataset) -> int:
    try:
        return max(1, int(ds.get("NumberOfFrames", 1) or 1))
    except (TypeError, ValueError):
        return 1


def frame_bytes(ds: Dataset) -> int:
    """The size of one native frame: Rows x Columns x SamplesPerPixel x BitsAllocated/8."""
    try:
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
        return size * int(ds.BitsAllocated) // 8
    except (AttributeError, TypeError, ValueError):
        return 0


def frame_count(ds: Dataset) -> int:
    """The frames the pixel data actually holds: the header's NumberOfFrames, never more
    than the native bytes or the encapsulated fragments can carry (a 1 KB instance may
    claim 999,999,999 frames; issue 17 C1)."""
    declared = _declared_frames(ds)
    if "PixelData" not in ds:
        return declared
    raw = ds.PixelData
    if ds.file_meta.TransferSyntaxUID.is_encapsulated:
        return min(declared, _fragments(raw))
    size = frame_bytes(ds)
    return min(declared, len(raw) // size) if size > 0 else 0


def _fragments(raw: bytes) -> int:
    """Fragments after the Basic Offset Table (each frame has one or more)."""
    try:
        table = int.from_bytes(raw[4:8], "little")
        number, _ = parse_fragments(raw[8 + table :])
    except (ValueError, TypeError, IndexError):
        return 0
    return int(number)


def checked_frames(data: bytes, numbers: Sequence[int]) -> Dataset:
    """The instance read, once its real frame count covers every number asked."""
    ds = _read(data)
    if "PixelData" not in ds:
        raise AccessError("MB-3014", "instance has no pixel data")
    count = frame_count(ds)
    if count == 0:
        raise AccessError("MB-3014", "pixel data holds no whole frame")
    if any(n < 1 or n > count for n in numbers):
        raise AccessError("MB-3010", f"frame numbers must be within 1..{count}")
    return ds


def frame(ds: Dataset, data: bytes, number: int) -> bytes:
    """One frame (1-based) of a checked instance as uncompressed native pixel bytes."""
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        size = frame_bytes(ds)
        return bytes(ds.PixelData[(number - 1) * size : number * size])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = pixel_array(io.BytesIO(data), index=number - 1, raw=True)
    except Exception as error:
        raise AccessError("MB-3014", f"cannot decode frame {number}: {str(error)[:120]}") from error
    return bytes(array.tobytes())


def frames(data: bytes, numbers: list[int]) -> list[bytes]:
    """Frames (1-based) as uncompressed native pixel bytes."""
    ds = checked_frames(data, numbers)
    return [frame(ds, data, n) for n in numbers]


def rendered(data: bytes, media: str, frame: int = 1, thumbnail: bool = False) -> bytes:
    """One frame as image/jpeg or image/png for people to look at."""
    ds = _read(data)
    if "PixelData" not in ds:
        raise AccessError("MB-3014", "instance has no pixel data to render")
    if frame < 1 or frame > frame_count(ds):
        raise AccessError("MB-3010", f"frame number out of range 1..{frame_count(ds)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = pixel_array(_source(ds, data), index=frame - 1)
            image = _to_image(ds, array)
    except AccessError:
        raise
    except Exception as error:
        raise AccessError("MB-3014", f"cannot decode pixel data: {str(error)[:120]}") from error
    if thumbnail:
        image.thumbnail((THUMBNAIL, THUMBNAIL))
    out = io.BytesIO()
    image.save(out, format="PNG" if media == "image/png" else "JPEG", quality=90)
    return out.getvalue()


def _source(ds: Dataset, data: bytes) -> Dataset | io.BytesIO:
    """What pydicom decodes from: the file itself (it reads only the frame asked for),
    or, for a deflated data set whose pixels exist only once inflated, the dataset read."""
    if ds.file_meta.get("TransferSyntaxUID") == DeflatedExplicitVRLittleEndian:
        return ds
    return io.BytesIO(data)


def _to_image(ds: Dataset, array: NDArray[np.generic]) -> Image.Image:
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2"))
    samples = int(ds.get("SamplesPerPixel", 1))
    if samples == 1:
        values = apply_modality_lut(array, ds)
        if "WindowCenter" in ds or "VOILUTSequence" in ds:
            values = apply_voi_lut(values, ds)
        values = values.astype(np.float64)
        low, high = float(values.min()), float(values.max())
        scaled = (values - low) / (high - low or 1.0) * 255.0
        if photometric == "MONOCHROME1":
            scaled = 255.0 - scaled
        return Image.fromarray(scaled.clip(0, 255).astype(np.uint8), mode="L")
    if array.dtype != np.uint8:
        array = (array.astype(np.float64) / float(array.max() or 1) * 255.0).astype(np.uint8)
    return Image.fromarray(array[..., :3], mode="RGB")


def element_bytes(data: bytes, tag: str) -> bytes:
    """The value of one top-level element (a BulkDataURI target) as bytes."""
    ds = _read(data)
    try:
        element = ds[int(tag, 16)]
    except (KeyError, ValueError) as error:
        raise AccessError("MB-3010", "no such bulk data element") from error
    value = element.value
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise AccessError("MB-3010", "element is not bulk data")
