"""DICOM test material: pydicom's bundled sample files and crafted hostile instances.

The samples come with pydicom (pydicom/data/test_files, MIT licence; see pydicom's
data/test_files/README.txt for each file's origin: GE, Siemens, Philips, Toshiba CT/MR
and secondary captures in several transfer syntaxes).
"""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRLittleEndian,
    generate_uid,
)

# (file, transfer syntax it is stored in): several vendors and encodings
SAMPLES = [
    "CT_small.dcm",  # explicit VR little endian, GE CT
    "MR_small.dcm",  # explicit VR little endian, Toshiba MR
    "MR_small_implicit.dcm",  # implicit VR little endian
    "MR_small_bigendian.dcm",  # explicit VR big endian
    "MR_small_RLE.dcm",  # RLE lossless
    "JPEG2000.dcm",  # JPEG 2000
    "SC_rgb_jpeg_dcmtk.dcm",  # JPEG baseline, RGB secondary capture
    "image_dfl.dcm",  # deflated explicit VR little endian
]


def sample_path(name: str) -> Path:
    path = get_testdata_file(name)
    assert path is not None, name
    return Path(str(path))


def sample_bytes(name: str) -> bytes:
    return sample_path(name).read_bytes()


def renamed(
    name: str,
    study: str | None = None,
    series: str | None = None,
    patient_id: str | None = None,
    **attributes: object,
) -> bytes:
    """A sample with fresh UIDs (or the given ones) so tests never collide."""
    ds = pydicom.dcmread(sample_path(name))
    ds.StudyInstanceUID = study or generate_uid()
    ds.SeriesInstanceUID = series or generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if patient_id is not None:
        ds.PatientID = patient_id
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def base_dataset(**overrides: str) -> Dataset:
    """A minimal Basic Text SR header with valid UIDs (no pixel data)."""
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR: no pixels needed
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "HOSTILE"
    ds.PatientName = "Test^Hostile"
    ds.Modality = "SR"
    for keyword, value in overrides.items():
        setattr(ds, keyword, value)
    return ds


def part10(ds: Dataset, transfer_syntax: str = ExplicitVRLittleEndian) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = str(ds.SOPInstanceUID)
    meta.TransferSyntaxUID = transfer_syntax
    ds.file_meta = meta
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def _element(group: int, element: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HH", group, element) + vr + b"\0\0" + struct.pack("<I", size) + value


def nested_sequences(depth: int) -> bytes:
    """Sequences nested `depth` deep (undefined lengths), after a valid header."""
    head = part10(base_dataset())
    undefined = 0xFFFFFFFF
    opening = _element(0x0040, 0xA730, b"SQ", b"", undefined) + struct.pack(
        "<HHI", 0xFFFE, 0xE000, undefined
    )
    closing = struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return head + opening * depth + closing * depth


def huge_length() -> bytes:
    """An element declaring 0xFFFFFFF0 bytes, followed by a few."""
    return part10(base_dataset()) + _element(0x0040, 0xA160, b"UT", b"tiny", 0xFFFFFFF0)


def deflate_bomb(inflated: int) -> bytes:
    """Deflated transfer syntax whose data set inflates to `inflated` bytes of zeros."""
    head = part10(base_dataset(), DeflatedExplicitVRLittleEndian)
    # keep the meta group, replace the (deflated) data set with the bomb
    meta_end = _meta_end(head)
    compressor = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    chunk = b"\0" * (1 << 20)
    body = b"".join(compressor.compress(chunk) for _ in range(inflated >> 20))
    return head[:meta_end] + body + compressor.flush()


def _meta_end(data: bytes) -> int:
    stream = io.BytesIO(data)
    pydicom.filereader.read_preamble(stream, False)
    pydicom.filereader._read_file_meta_info(stream)
    return stream.tell()


def with_uids(study: str, series: str, sop: str) -> bytes:
    """Raw UIDs written as given (hostile strings included): explicit VR, no checks."""
    ds = base_dataset()
    raw = part10(ds)
    for good, bad in (
        (ds.StudyInstanceUID, study),
        (ds.SeriesInstanceUID, series),
        (ds.SOPInstanceUID, sop),
    ):
        raw = _replace_value(raw, str(good), bad)
    return raw


def _replace_value(raw: bytes, old: str, new: str) -> bytes:
    """Swap one UI value in place, fixing its 2-byte explicit VR length."""
    old_b = old.encode() + (b"\0" if len(old) % 2 else b"")
    new_b = new.encode("latin-1") + (b"\0" if len(new) % 2 else b"")
    at = raw.rindex(old_b)
    assert raw[at - 4 : at - 2] == b"UI"
    return raw[: at - 2] + struct.pack("<H", len(new_b)) + new_b + raw[at + len(old_b) :]


def _code(value: str, meaning: str, scheme: str = "DCM") -> Dataset:
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = value, scheme, meaning
    return code


def _num(value: str, meaning: str, number: float, unit: str) -> Dataset:
    item = Dataset()
    item.RelationshipType, item.ValueType = "CONTAINS", "NUM"
    item.ConceptNameCodeSequence = [_code(value, meaning)]
    measured = Dataset()
    measured.NumericValue = str(number)
    measured.MeasurementUnitsCodeSequence = [_code(unit, unit, "UCUM")]
    item.MeasuredValueSequence = [measured]
    return item


def dose_report(study: str, patient_id: str, dlp_total: float, ctdivols: list[float]) -> bytes:
    """A minimal X-Ray Radiation Dose SR (TID 10011 shape): total DLP and per-event CTDIvol."""
    ds = base_dataset(SOPClassUID="1.2.840.10008.5.1.4.1.1.88.67", StudyInstanceUID=study)
    ds.PatientID, ds.ValueType = patient_id, "CONTAINER"
    ds.ConceptNameCodeSequence = [_code("113701", "X-Ray Radiation Dose Report")]
    accumulated = Dataset()
    accumulated.RelationshipType, accumulated.ValueType = "CONTAINS", "CONTAINER"
    accumulated.ConceptNameCodeSequence = [_code("113811", "CT Accumulated Dose Data")]
    accumulated.ContentSequence = [
        _num("113813", "CT Dose Length Product Total", dlp_total, "mGy.cm")
    ]
    events = []
    for ctdivol in ctdivols:
        event = Dataset()
        event.RelationshipType, event.ValueType = "CONTAINS", "CONTAINER"
        event.ConceptNameCodeSequence = [_code("113819", "CT Acquisition")]
        event.ContentSequence = [_num("113830", "Mean CTDIvol", ctdivol, "mGy")]
        events.append(event)
    ds.ContentSequence = [accumulated, *events]
    return part10(ds)
