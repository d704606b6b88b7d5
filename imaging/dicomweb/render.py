"""Pixels out of a stored instance: raw frames, and consumer images (JPEG/PNG).

Decoding uses pydicom's pixel handlers (Pillow / pylibjpeg plugins for compressed
transfer syntaxes); rendering applies the Modality LUT, the header's VOI window
(WindowCenter / WindowWidth) and MONOCHROME1 inversion, then scales to 8 bits.
"""

from __future__ import annotations

import io
import warnings

import numpy as np
import pydicom
from numpy.typing import NDArray
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut
from pydicom.pixels.utils import pixel_array
from pydicom.uid import DeflatedExplicitVRLittleEndian

from fhir_server.errors import FhirError

THUMBNAIL = 128


def _read(data: bytes) -> Dataset:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(io.BytesIO(data))


def frame_count(ds: Dataset) -> int:
    return int(ds.get("NumberOfFrames", 1) or 1)


def frames(data: bytes, numbers: list[int]) -> list[bytes]:
    """Frames (1-based) as uncompressed native pixel bytes."""
    ds = _read(data)
    if "PixelData" not in ds:
        raise FhirError("MB-3014", "instance has no pixel data")
    count = frame_count(ds)
    if any(n < 1 or n > count for n in numbers):
        raise FhirError("MB-3010", f"frame numbers must be within 1..{count}")
    if not ds.file_meta.TransferSyntaxUID.is_compressed:
        size = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1))
        size = size * int(ds.BitsAllocated) // 8
        raw = ds.PixelData
        return [bytes(raw[(n - 1) * size : n * size]) for n in numbers]
    out = []
    for n in numbers:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                array = pixel_array(io.BytesIO(data), index=n - 1, raw=True)
        except Exception as error:
            raise FhirError("MB-3014", f"cannot decode frame {n}: {str(error)[:120]}") from error
        out.append(array.tobytes())
    return out


def rendered(data: bytes, media: str, frame: int = 1, thumbnail: bool = False) -> bytes:
    """One frame as image/jpeg or image/png for people to look at."""
    ds = _read(data)
    if "PixelData" not in ds:
        raise FhirError("MB-3014", "instance has no pixel data to render")
    if frame < 1 or frame > frame_count(ds):
        raise FhirError("MB-3010", "frame number out of range")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            array = pixel_array(_source(ds, data), index=frame - 1)
            image = _to_image(ds, array)
    except FhirError:
        raise
    except Exception as error:
        raise FhirError("MB-3014", f"cannot decode pixel data: {str(error)[:120]}") from error
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
        raise FhirError("MB-3010", "no such bulk data element") from error
    value = element.value
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode("utf-8")
    raise FhirError("MB-3010", "element is not bulk data")
