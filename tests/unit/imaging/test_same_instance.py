"""Same instance = same data set: the File Meta Information is how a copy travelled."""

from __future__ import annotations

import io

import pydicom

from imaging.same_instance import data_set_offset, same_data_set
from imaging.upkeep import RetryPolicy
from tests.support.dicom import renamed


def test_offset_is_where_pydicom_starts_the_data_set() -> None:
    data = renamed("CT_small.dcm")
    stream = io.BytesIO(data)
    pydicom.filereader.read_preamble(stream, False)
    pydicom.filereader._read_file_meta_info(stream)
    assert data_set_offset(data) == stream.tell()


def test_other_meta_same_data_set() -> None:
    data = renamed("MR_small.dcm")
    start = data_set_offset(data)
    assert start is not None
    dataset = pydicom.dcmread(io.BytesIO(data))
    dataset.file_meta.ImplementationVersionName = "ANOTHER_WRITER"
    dataset.file_meta.SourceApplicationEntityTitle = "MODALITY"
    out = io.BytesIO()
    dataset.save_as(out, enforce_file_format=True)
    other = out.getvalue()
    assert other != data
    assert same_data_set(data, other)
    changed = bytearray(other)
    changed[-1] ^= 0xFF
    assert not same_data_set(data, bytes(changed))


def test_unframed_meta_is_never_the_same() -> None:
    data = renamed("CT_small.dcm")
    assert data_set_offset(b"not dicom") is None
    assert not same_data_set(data, data[:140])


def test_retry_delays_double_then_park() -> None:
    policy = RetryPolicy(first_delay=2.0, max_delay=10.0, max_attempts=5)
    assert [policy.delay(n) for n in range(1, 6)] == [2.0, 4.0, 8.0, 10.0, None]
