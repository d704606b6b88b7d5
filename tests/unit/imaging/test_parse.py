"""imaging.parse: real sample files accepted, crafted hostile files refused quickly."""

from __future__ import annotations

import io
import warnings

import orjson
import pydicom
import pytest
from pydicom.datadict import tag_for_keyword

from access.errors import AccessError
from imaging.parse import (
    Limits,
    ParsedInstance,
    _parse_reference,
    _parse_scanned,
    fold,
    metadata_of,
    parse,
)
from imaging.scan import SLOW, plain_value, read_undefined_sequence, scan
from tests.support.dicom import (
    SAMPLES,
    deflate_bomb,
    huge_length,
    nested_sequences,
    renamed,
    sample_bytes,
    with_uids,
)


@pytest.mark.parametrize("name", SAMPLES)
def test_vendor_samples_parse_with_their_uids_and_syntax(name: str) -> None:
    data = sample_bytes(name)
    parsed = parse(data, Limits(), with_metadata=True)
    import pydicom

    ds = pydicom.dcmread(__import__("io").BytesIO(data), stop_before_pixels=True)
    assert parsed.study == ds.StudyInstanceUID
    assert parsed.sop == ds.SOPInstanceUID
    assert parsed.transfer_syntax == ds.file_meta.TransferSyntaxUID
    metadata = orjson.loads(parsed.metadata)
    assert metadata["0020000D"]["Value"] == [parsed.study]


def test_pixel_data_is_a_bulk_data_uri_not_inline() -> None:
    parsed = parse(renamed("CT_small.dcm"), Limits())
    assert parsed.metadata == b""  # made on request, not on every ingest
    metadata = orjson.loads(metadata_of(renamed("CT_small.dcm")))
    parsed = parse(renamed("CT_small.dcm"), Limits(), with_metadata=True)
    metadata = orjson.loads(parsed.metadata)
    pixel = metadata["7FE00010"]
    assert "InlineBinary" not in pixel
    assert pixel["BulkDataURI"].endswith(f"/instances/{parsed.sop}/bulkdata/7FE00010")
    assert pixel["vr"] == "OW"


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"not a dicom file at all" * 20, "MB-3001"),
        (sample_bytes("CT_small.dcm")[:120], "MB-3001"),  # truncated preamble
        (sample_bytes("CT_small.dcm")[:3000], "MB-3001"),  # cut inside the header
        (sample_bytes("CT_small.dcm")[:20000], "MB-3004"),  # cut inside the pixel data
        (nested_sequences(300), "MB-3004"),
        (huge_length(), "MB-3004"),
        (with_uids("1.2.3", "../../etc", "1.2.4"), "MB-3002"),
        (with_uids("1.2.3", "1.2.5", "/abs/path"), "MB-3002"),
        (with_uids("1.2.3", "1.2.5", "1.2.4\0x"), "MB-3002"),
        (with_uids("1." + "1" * 70, "1.2.5", "1.2.4"), "MB-3002"),
    ],
    ids=[
        "non-dicom", "truncated-preamble", "cut-header", "cut-pixels", "nesting-300",
        "length-0xFFFFFFF0", "traversal-series", "absolute-sop", "nul-sop", "uid-over-64",
    ],
)  # fmt: skip
def test_hostile_input_is_refused_with_its_code(data: bytes, code: str) -> None:
    with pytest.raises(AccessError) as caught:
        parse(data, Limits())
    assert caught.value.code == code


def test_deflate_bomb_is_refused_by_the_ratio_cap() -> None:
    with pytest.raises(AccessError) as caught:
        parse(deflate_bomb(32 << 20), Limits(max_inflate_ratio=100))
    assert caught.value.code == "MB-3003"


def test_deflate_bomb_is_refused_by_the_absolute_cap() -> None:
    with pytest.raises(AccessError) as caught:
        parse(deflate_bomb(8 << 20), Limits(max_inflated_bytes=4 << 20, max_inflate_ratio=10**6))
    assert caught.value.code == "MB-3003"


def test_instance_over_the_size_limit_is_refused() -> None:
    with pytest.raises(AccessError) as caught:
        parse(renamed("CT_small.dcm"), Limits(max_instance_bytes=1000))
    assert caught.value.code == "MB-3003"


def test_fold_removes_case_and_accents() -> None:
    assert fold("ŠIMKUS^Jūratė") == "simkus^jurate"


def test_procedure_code_is_kept_for_the_imaging_study() -> None:
    from pydicom.dataset import Dataset

    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "CT-CHEST", "LN", "CT chest"
    data = renamed("CT_small.dcm", ProcedureCodeSequence=[code])
    parsed = parse(data, Limits())
    assert parsed.study_attrs["ProcedureCode"] == {
        "value": "CT-CHEST", "scheme": "LN", "meaning": "CT chest",
    }  # fmt: skip


@pytest.mark.parametrize(
    "name",
    ["MR_small_bigendian.dcm", "image_dfl.dcm"],
    ids=["big-endian", "deflate"],
)
def test_framing_the_walker_does_not_handle_takes_the_pydicom_path(name: str) -> None:
    data = sample_bytes(name)
    assert scan(data) is None
    assert _parse_scanned(data, Limits()) is None
    assert parse(data, Limits()) == reference(data)


def test_undefined_length_sequences_are_framed_by_the_walk_and_read_by_pydicom() -> None:
    data = sample_bytes("JPEG2000.dcm")  # (0008,2112) SourceImageSequence, undefined length
    found = scan(data)
    assert found is not None
    assert found.elements[0x00082112][:2] == ("SQ", 0xFFFFFFFF)
    assert 0x00100010 in found.elements  # the walk went on after the sequence
    assert found.sequences == {}  # read only when a value inside is needed
    sequence = read_undefined_sequence(data, 0x00082112, found)
    read = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
    assert sequence.is_undefined_length
    assert sequence.value == read.SourceImageSequence
    assert _parse_scanned(data, Limits()) == reference(data)


@pytest.mark.parametrize(("depth", "lean"), [(16, True), (17, False)])
def test_sequences_nested_past_the_depth_limit_are_left_to_the_pydicom_path(
    depth: int, lean: bool
) -> None:
    data = nested_sequences(depth)
    assert (scan(data, max_depth=16) is not None) is lean
    if lean:
        assert parse(data, Limits()) == reference(data)
    else:
        with pytest.raises(AccessError) as caught:
            parse(data, Limits())
        assert caught.value.code == "MB-3004"


def reference(data: bytes) -> ParsedInstance:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # as parse does: odd values are stored as received
        return _parse_reference(data, Limits(), False)


def test_sequence_nesting_beyond_the_walk_is_refused_by_the_pydicom_path() -> None:
    data = nested_sequences(300)
    assert _parse_scanned(data, Limits()) is None  # the walk stops at the depth limit
    with pytest.raises(AccessError) as caught:
        parse(data, Limits())
    assert caught.value.code == "MB-3004"


def test_a_dose_report_is_summarised_on_the_pydicom_path() -> None:
    data = sample_bytes("test-SR.dcm")  # a content tree: ContentSequence at the top level
    assert scan(data) is not None
    assert _parse_scanned(data, Limits()) is None


def test_plain_values_are_converted_without_pydicom_and_others_are_left_to_it() -> None:
    data = renamed("CT_small.dcm", PatientName="Doe^Jane=Dough^J", StudyDescription="a\\b")
    found = scan(data)
    assert found is not None
    assert found.codec == "latin_1"

    def plain(keyword: str) -> object:
        return plain_value(data, found.elements[tag_for_keyword(keyword)], found.codec)

    assert plain("Rows") == 128
    assert plain("InstanceNumber") == 1
    assert plain("Modality") == "CT"
    assert plain("PatientName") is SLOW  # component groups: pydicom's PersonName decides
    assert plain("StudyDescription") is SLOW  # several values
    parsed = parse(data, Limits())
    assert parsed.study_attrs["PatientName"] == "Doe^Jane=Dough^J"
    assert parsed.study_attrs["StudyDescription"] == "a"
