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
from pydicom.uid import ImplicitVRLittleEndian

from fhir_server.errors import FhirError
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
    "rtplan.dcm",  # implicit VR, nested sequences, no pixel data
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
        except FhirError as error:
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


def test_the_lean_path_takes_most_accepted_samples() -> None:
    taken = sum(assert_same_answer(p.read_bytes()) for p in FILES if p.suffix == ".dcm")
    assert taken >= 40  # fallback is for the unusual, not the rule


@cache
def sample(name: str) -> bytes:
    return sample_bytes(name)


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
     b"12\0", b"\0", b"\xe9t\xe9", b"\xc3\xa9", b"a=b", b"a=", b"\x1b$B"],
)  # fmt: skip
@pytest.mark.parametrize(
    ("tag", "vr"),
    [(0x00200013, b"IS"), (0x00200011, b"DS"), (0x00081030, b"LO"), (0x00100010, b"PN"),
     (0x00100020, b"LO"), (0x00080020, b"DA"), (0x00280010, b"US"), (0x00080005, b"CS"),
     (0x00180050, b"DS"), (0x00280030, b"DS"), (0x00280120, b"US"), (0x00200032, b"DS"),
     (0x00091001, b"LO"), (0x00280101, b"US")],
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
        lambda head, tail: head + _long(0x7FDF0010, b"UN", b"UNKNOWN ") + tail,  # UN
        lambda head, tail: head + struct.pack("<HHI", 0xFFFE, 0xE00D, 0) + tail,  # item end
        lambda head, tail: head + _long(0x7FDF0010, b"OB", b"", 0xFFFFFFFF) + tail,
        lambda head, tail: _command_group(head) + tail,
    ],
    ids=["out-of-order", "unknown-vr", "lower-case-vr", "un", "item-delimiter",
         "undefined-ob", "command-group"],
)  # fmt: skip
def test_unusual_framing_gets_the_reference_answer(
    splice: Callable[[bytes, bytes], bytes],
) -> None:
    data = sample("CT_small.dcm")
    pixels = _pixel_offset("CT_small.dcm")
    assert not assert_same_answer(splice(data[:pixels], data[pixels:]))


def _command_group(head: bytes) -> bytes:
    """A (0000,0000) implicit VR element between the file meta and the data set."""
    meta_end = 144 + struct.unpack_from("<I", head, 140)[0]  # after the group length
    return head[:meta_end] + struct.pack("<HHII", 0, 0, 4, 0) + head[meta_end:]


def _short(tag: int, vr: bytes, value: bytes) -> bytes:
    return struct.pack("<HH2sH", tag >> 16, tag & 0xFFFF, vr, len(value)) + value


def _long(tag: int, vr: bytes, value: bytes, length: int | None = None) -> bytes:
    size = len(value) if length is None else length
    return struct.pack("<HH2sHI", tag >> 16, tag & 0xFFFF, vr, 0, size) + value


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
