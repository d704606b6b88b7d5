"""The lean header path (imaging.scan) answers exactly as pydicom's full read does.

Source: every file pydicom bundles (pydicom/data/test_files, MIT; vendors' CT/MR/US/RT
objects in many transfer syntaxes plus deliberately broken files; see that folder's
README), and truncated or byte-flipped copies of a few of them. The reference is
`imaging.parse._parse_reference` (dcmread + the checks), which is also the path of every
instance the lean path declines; `_parse_scanned` must give its result or decline.
"""

from __future__ import annotations

import io
import struct
import warnings
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pydicom
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from pydicom.data import get_testdata_files
from pydicom.dataset import Dataset
from pydicom.uid import ImplicitVRLittleEndian

from access.errors import AccessError
from imaging.parse import Limits, ParsedInstance, _parse_reference, _parse_scanned, parse
from tests.support.dicom import sample_bytes

FILES = sorted(Path(p) for p in get_testdata_files() if Path(p).is_file())
LIMITS = Limits()
Outcome = tuple[str, object]

# lean-path files: explicit and implicit VR little endian, native and encapsulated
MUTATED = [
    "CT_small.dcm",
    "MR_small.dcm",
    "JPEG2000.dcm",
    "SC_rgb_jpeg_dcmtk.dcm",
    "waveform_ecg.dcm",  # no pixel data: a cut one is refused by the length check
    "MR_small_implicit.dcm",
    # implicit VR, nested sequences, no pixel data; the file's MediaStorageSOPInstanceUID
    # (1.2.999...) made its SOPInstanceUID (1.2.777...): as bundled it is refused, MB-3021
    "rtplan+meta",
    "rtdose_rle.dcm",  # UN elements (public ones too), converted by pydicom
    "CT_small+procedure",  # a code sequence whose first item becomes ProcedureCode
    "CT_small+procedure+undefined",
    "CT_small+procedure+implicit+undefined",
]
MUST_BE_LEAN = [
    *MUTATED,
    "MR_small_RLE.dcm",
    "liver_1frame.dcm",
    "waveform_ecg.dcm",
    "693_J2KI.dcm",
]


def outcome(function: Callable[[], ParsedInstance | None]) -> Outcome:
    """What a parse answered: the instance, the refusal code, or the exception type.

    An instance is compared by its repr: every field and the type of every value (1 is
    not 1.0 is not "1"), and a NaN equals a NaN.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            parsed = function()
            return "accepted", None if parsed is None else repr(parsed)
        except AccessError as error:
            return "refused", error.code
        except Exception as error:  # today's path lets a few conversion errors through
            return "raised", type(error).__name__


def assert_same_answer(data: bytes) -> bool:
    """The lean path gives the reference's instance or declines (None or an exception,
    which `parse` answers with the reference path); parse gives the reference's outcome.

    Returns whether the lean path took the instance.
    """
    reference = outcome(lambda: _parse_reference(data, LIMITS, False))
    state, lean = outcome(lambda: _parse_scanned(data, LIMITS))
    taken = state == "accepted" and lean is not None
    if taken:
        assert (state, lean) == reference
    assert outcome(lambda: parse(data, LIMITS)) == reference
    return taken


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_every_pydicom_sample_gets_the_reference_answer(path: Path) -> None:
    data = path.read_bytes()
    lean = assert_same_answer(data)
    if path.name in MUST_BE_LEAN:
        assert lean, f"{path.name} should be read on the lean path"


@pytest.mark.parametrize("name", [n for n in MUTATED if n.startswith("CT_small+")])
def test_the_procedure_code_is_the_reference_one(name: str) -> None:
    assert assert_same_answer(sample(name))
    assert parse(sample(name), LIMITS).study_attrs["ProcedureCode"]["value"] == "CT-CHEST"


def test_the_lean_path_takes_most_accepted_samples() -> None:
    taken = sum(assert_same_answer(p.read_bytes()) for p in FILES if p.suffix == ".dcm")
    assert taken >= 40  # fallback is for the unusual, not the rule


@cache
def sample(name: str) -> bytes:
    if name.startswith("CT_small+"):
        return _ct_with_procedure(implicit="implicit" in name, undefined="undefined" in name)
    if name == "rtplan+meta":
        data = sample_bytes("rtplan.dcm")
        stated, actual = b"1.2.999.999.99.9.9999.9999.20030903150023", b"1.2.777.777.77.7.7777.7777"
        return data.replace(stated, actual + stated[len(actual) :], 1)
    return sample_bytes(name)


def _ct_with_procedure(implicit: bool, undefined: bool) -> bytes:
    """CT_small with a ProcedureCodeSequence, in either encoding and either length form."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(sample_bytes("CT_small.dcm")))
    code = Dataset()
    code.CodeValue, code.CodingSchemeDesignator, code.CodeMeaning = "CT-CHEST", "LN", "CT chest"
    ds.ProcedureCodeSequence = [code]
    ds["ProcedureCodeSequence"].is_undefined_length = undefined
    code.is_undefined_length_sequence_item = undefined
    if implicit:
        ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=implicit, little_endian=True, enforce_file_format=True)
    return out.getvalue()


@settings(
    max_examples=300,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],  # a failure is reported as found, not shrunk
    suppress_health_check=[HealthCheck.too_slow],
)
@given(name=st.sampled_from(MUTATED), cut=st.floats(0.0, 1.0))
def test_truncated_files_get_the_reference_answer(name: str, cut: float) -> None:
    data = sample(name)
    assert_same_answer(data[: int(len(data) * cut)])


@settings(
    max_examples=600,
    deadline=None,
    derandomize=True,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=[HealthCheck.too_slow],
)
@given(
    name=st.sampled_from(MUTATED),
    flips=st.lists(st.tuples(st.integers(0, 4095), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_byte_flipped_headers_get_the_reference_answer(
    name: str, flips: list[tuple[int, int]]
) -> None:
    data = bytearray(sample(name))
    header = _pixel_offset(name)
    for position, mask in flips:
        data[132 + position % (header - 132)] ^= mask  # inside meta and data set headers
    assert_same_answer(bytes(data))


@pytest.mark.parametrize(
    "value",
    [b"", b"  ", b"12", b"1\\2", b"+7", b"1.0", b"abc", b"1e3", b" 3.25 ", b"nan", b"00012",
     b"12\0", b"\0", b"\xe9t\xe9", b"\xc3\xa9", b"a=b", b"a=", b"\x1b$B",
     b"1\x1d", b"\t7", b"2\xa0", b"1e999", b"1\\x", b"1.2.3\n", b" 1.2.3\0", b"1.2\x00.3"],
)  # fmt: skip
@pytest.mark.parametrize(
    ("tag", "vr"),
    [(0x00200013, b"IS"), (0x00200011, b"DS"), (0x00081030, b"LO"), (0x00100010, b"PN"),
     (0x00100020, b"LO"), (0x00080020, b"DA"), (0x00280010, b"US"), (0x00080005, b"CS"),
     (0x00180050, b"DS"), (0x00280030, b"DS"), (0x00280120, b"US"), (0x00200032, b"DS"),
     (0x00091001, b"LO"), (0x00280101, b"US"), (0x00080018, b"UI"), (0x0020000D, b"UI")],
)  # fmt: skip
@pytest.mark.parametrize("implicit", [False, True], ids=["explicit", "implicit"])
def test_odd_values_get_the_reference_answer(
    tag: int, vr: bytes, value: bytes, implicit: bool
) -> None:
    source = implicit_ct() if implicit else sample("CT_small.dcm")
    data = _with_element(source, tag, vr, value, implicit)
    assert_same_answer(data)


@cache
def implicit_ct() -> bytes:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(io.BytesIO(sample("CT_small.dcm")))
    ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, implicit_vr=True, little_endian=True, enforce_file_format=True)
    return out.getvalue()


@pytest.mark.parametrize(
    "splice",
    [
        lambda head, tail: head + _short(0x00100020, b"LO", b"AGAIN") + tail,  # out of order
        lambda head, tail: head + _short(0x00100020, b"XX", b"ODDVR") + tail,  # unknown VR
        lambda head, tail: head + _short(0x00100020, b"lo", b"LOWER") + tail,  # implicit?
        lambda head, tail: head + _long(0x00280120, b"UN", b"\x01\x00\x02") + tail,  # odd US
        lambda head, tail: head + struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + tail,  # item end
        lambda head, tail: head + _long(0x7FDF0010, b"OB", b"", 0xFFFFFFFF) + tail,
        lambda head, tail: _command_group(head) + tail,
    ],
    ids=["out-of-order", "unknown-vr", "lower-case-vr", "un-odd-us", "item-delimiter",
         "undefined-ob", "command-group"],
)  # fmt: skip
def test_unusual_framing_gets_the_reference_answer(
    splice: Callable[[bytes, bytes], bytes],
) -> None:
    data = sample("CT_small.dcm")
    pixels = _pixel_offset("CT_small.dcm")
    assert not assert_same_answer(splice(data[:pixels], data[pixels:]))


def _short(tag: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _long(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, size) + value


@pytest.mark.parametrize(
    "element",
    [_long(0x7FDF0010, b"UN", b"CREATOR "), _long(0x7FDF1010, b"UN", b"\x01\x00")],
    ids=["private-creator", "private-unknown"],
)
def test_un_elements_are_converted_by_pydicom_as_the_reference_does(element: bytes) -> None:
    data = sample("CT_small.dcm")
    pixels = _pixel_offset("CT_small.dcm")
    assert assert_same_answer(data[:pixels] + element + data[pixels:])


ITEM, ITEM_END, SEQUENCE_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
UNDEFINED = 0xFFFFFFFF


def _item(content: bytes, undefined: bool = False) -> bytes:
    if undefined:
        return _tagged(ITEM, UNDEFINED) + content + _tagged(ITEM_END, 0)
    return _tagged(ITEM, len(content)) + content


def _tagged(tag: int, length: int) -> bytes:
    return struct.pack("<HHI", tag >> 16, tag & 0xFFFF, length)


def _sequence(items: bytes, undefined: bool = False, tag: int = 0x7FDF1010) -> bytes:
    if undefined:
        return _long(tag, b"SQ", items + _tagged(SEQUENCE_END, 0), UNDEFINED)
    return _long(tag, b"SQ", items)


def _nested(depth: int) -> bytes:
    inner = _short(0x00080100, b"SH", b"LEAF")
    for _ in range(depth):
        inner = _sequence(_item(inner), undefined=True, tag=0x00400555)
    return inner


CODE = _short(0x00080100, b"SH", b"CODE01") + _short(0x00080102, b"SH", b"DCM ")


@pytest.mark.parametrize(
    ("sequence", "lean"),
    [
        (_sequence(_item(CODE)), True),
        (_sequence(_item(CODE, undefined=True), undefined=True), True),
        (_sequence(_item(CODE) + _item(CODE, undefined=True)), True),
        (_sequence(b""), True),
        (_sequence(_item(b"", undefined=True), undefined=True), True),
        (_sequence(_item(_nested(15))), True),  # items 16 levels deep: the limit
        (_sequence(_item(_nested(16))), False),  # 17: refused (MB-3004)
        (_sequence(_item(_long(0x00280010, b"UN", b"\x01\x00\x02"))), False),  # odd US
        (_sequence(_item(_short(0x00080005, b"CS", b"ISO_IR 192"))), False),
        (_sequence(_tagged(0x00080100, len(CODE)) + CODE), False),  # not an item tag
        (_sequence(_tagged(ITEM, 10) + CODE), False),  # elements overrun their item
        (_sequence(_item(CODE) + b"\0" * 4), False),  # sequence length past its items
        (_sequence(_item(CODE, undefined=True)), True),
        (_long(0x7FDF1010, b"SQ", _item(CODE), UNDEFINED), False),  # no sequence delimiter
        (_sequence(_item(CODE)[:-4], undefined=True), False),  # cut inside an item
        (_sequence(_item(CODE[14:] + CODE[:14])), False),  # tags out of order in the item
        (_sequence(_item(_long(0x00091010, b"OB", b"", UNDEFINED))), False),
    ],
    ids=["defined", "undefined", "mixed-items", "empty", "empty-item", "depth-16",
         "depth-17", "un-in-item", "charset-in-item", "not-an-item", "item-overrun",
         "sequence-overrun", "undefined-item", "no-delimiter", "cut-item", "item-order",
         "undefined-ob"],
)  # fmt: skip
def test_sequences_framed_by_the_walk_get_the_reference_answer(sequence: bytes, lean: bool) -> None:
    data = sample("CT_small.dcm")
    pixels = _pixel_offset("CT_small.dcm")
    assert assert_same_answer(data[:pixels] + sequence + data[pixels:]) is lean


def _command_group(head: bytes) -> bytes:
    """A (0000,0000) implicit VR element between the file meta and the data set."""
    meta_end = 144 + struct.unpack_from("<I", head, 140)[0]  # after the group length
    return head[:meta_end] + struct.pack("<HHII", 0, 0, 4, 0) + head[meta_end:]


def _with_element(data: bytes, tag: int, vr: bytes, value: bytes, implicit: bool = False) -> bytes:
    """`data` with its first element `tag` (short VR if explicit) replaced by `value`."""
    start = data.index(struct.pack("<HH", tag >> 16, tag & 0xFFFF), 300)  # past the meta
    if vr != b"US":
        value += b" " * (len(value) % 2)  # binary values stay odd: a length US cannot have
    if implicit:
        end = start + 8 + struct.unpack_from("<I", data, start + 4)[0]
        header = struct.pack("<HHI", tag >> 16, tag & 0xFFFF, len(value))
    else:
        end = start + 8 + struct.unpack_from("<H", data, start + 6)[0]
        header = struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value))
    return data[:start] + header + value + data[end:]


@cache
def _pixel_offset(name: str) -> int:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        stream = io.BytesIO(sample(name))
        pydicom.dcmread(stream, stop_before_pixels=True)
    return stream.tell()
