"""A lean walker over the element framing of common Part 10 files, for ingest's parse.

pydicom's reader is general (file-like reads, VR heuristics, a BaseTag and a
RawDataElement per element, conversion hooks): on a 40 KB CT slice dcmread costs ~0.56 ms
for ~260 elements and each converted value ~7 us, most of a parse that needs ~30 values.
This walker handles only the common framing, explicit and implicit VR little endian
(explicit is also the data set of every encapsulated syntax), reading (VR, length,
offset) per element with struct.unpack_from over the bytes; explicit VR sequences are
framed strictly, item by item. Plain values (UI, CS, DA, TM, IS, DS, US... in the
default, ISO_IR 100 or ISO_IR 192 character sets) are converted directly. Anything else
returns None or SLOW, and the caller hands that instance or that value to pydicom: big
endian, deflate, unknown VRs, undefined lengths other than sequences, UN in items,
command groups, tags out of order, odd item framing, truncation, escapes and NULs;
pydicom also reads the sequences of implicit VR files, top-level UN elements, and any
sequence whose content is needed.
"""

from __future__ import annotations

import io
import math
import re
import struct
from collections.abc import MutableSequence
from dataclasses import dataclass, field
from functools import cache
from typing import Final

from pydicom import config
from pydicom._dicom_dict import DicomDictionary
from pydicom.charset import convert_encodings, default_encoding
from pydicom.datadict import dictionary_VR
from pydicom.dataelem import DataElement
from pydicom.filereader import ENCODED_VR, read_sequence
from pydicom.hooks import hooks, raw_element_value, raw_element_vr
from pydicom.tag import BaseTag
from pydicom.uid import PrivateTransferSyntaxes
from pydicom.valuerep import EXPLICIT_VR_LENGTH_32
from pydicom.values import convert_string

Element = tuple[str, int, int]  # VR, value length, value offset

PIXEL_TAGS: Final = frozenset((0x7FE00008, 0x7FE00009, 0x7FE00010))
EVERY_TAG: Final = 0xFFFFFFFF  # `scan(until=...)`'s default: frame the whole data set
CHARSET: Final = 0x00080005
SLOW: Final = object()  # "convert this one with pydicom"

_HEADER = struct.Struct("<HH2sH").unpack_from
_IMPLICIT_HEADER = struct.Struct("<HHL").unpack_from
_LENGTH32 = struct.Struct("<L").unpack_from
_VRS: Final = {vr: vr.decode("ascii") for vr in ENCODED_VR if len(vr) == 2}
_LONG: Final = frozenset(vr.encode("ascii") for vr in EXPLICIT_VR_LENGTH_32)
# syntaxes whose data set pydicom does not read as explicit VR little endian
IMPLICIT_VR_LITTLE_ENDIAN: Final = "1.2.840.10008.1.2"
_NOT_EXPLICIT_LE: Final = frozenset(
    (IMPLICIT_VR_LITTLE_ENDIAN, "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99")
)
_DEFAULT_ONLY: Final = frozenset(("AE", "AS", "CS", "DA", "DT", "TM"))  # decoded as latin-1
_TEXT: Final = frozenset(("SH", "LO", "UC", "ST", "LT", "UT"))  # decoded in the charset
_INTS: Final = {"US": (2, False), "SS": (2, True), "UL": (4, False), "SL": (4, True)}
_IS = re.compile(r"[+-]?[0-9]+")
_DS = re.compile(r"[+-]?(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]{1,3})?")
_STRINGS: Final = _DEFAULT_ONLY | _TEXT | {"UI", "PN", "UR"}
_BYTES: Final = frozenset(("OB", "OW", "OD", "OF", "OL", "OV"))
_WIDTHS: Final = {"US": 2, "SS": 2, "UL": 4, "SL": 4, "FL": 4, "FD": 8, "SV": 8, "UV": 8, "AT": 4}
_CODECS: Final = {b"ISO_IR 100": "latin_1", b"ISO_IR 192": "utf_8"}


@dataclass(slots=True)
class Scan:
    """The top level of one little endian instance, as framed in its bytes."""

    transfer_syntax: str
    implicit: bool
    elements: dict[int, Element]  # tag -> element, file order, data set only
    sequences: dict[int, DataElement]  # undefined-length sequences as pydicom reads them
    pixel_offset: int | None  # where the pixel data element starts; None if absent
    codec: str | None  # Python codec of the text VRs; None when pydicom must decode
    meta: dict[int, Element] = field(default_factory=dict)  # the File Meta Information


def scan(data: bytes, max_depth: int = 16, until: int = EVERY_TAG) -> Scan | None:
    """Frame the file meta and the data set up to the pixel data; None to use pydicom.

    Explicit VR sequences are framed here too, item by item down to `max_depth` levels.
    With `until`, framing stops before the first top-level tag above it: a caller that
    needs a few leading elements (a C-STORE's identifying header) does not frame the
    other few hundred, and nothing after them is checked.
    """
    size = len(data)
    if size < 140 or data[128:132] != b"DICM" or not _default_config():
        return None
    meta: dict[int, Element] = {}
    pos, previous = 132, -1
    while True:  # file meta: group 0002, always explicit VR little endian
        if pos + 8 > size:
            return None
        group, number, vr, length = _HEADER(data, pos)
        if group != 2:
            break
        element = _frame(data, pos, vr, length, size)
        if element is None or (tag := group << 16 | number) <= previous:
            return None
        meta[tag], previous = element, tag
        pos = element[2] + element[1]
    syntax = meta.get(0x00020010)
    if syntax is None or syntax[0] != "UI":
        return None
    start, length = syntax[2], syntax[1]
    # as pydicom's UID: trailing NULs and spaces, then any whitespace around
    transfer_syntax = data[start : start + length].decode("latin_1").rstrip("\0 ").strip()
    implicit = transfer_syntax == IMPLICIT_VR_LITTLE_ENDIAN
    if (
        "\\" in transfer_syntax
        or "\0" in transfer_syntax
        or (transfer_syntax in _NOT_EXPLICIT_LE and not implicit)
        or transfer_syntax in PrivateTransferSyntaxes
    ):
        return None
    found = Scan(transfer_syntax, implicit, {}, {}, None, None, meta)
    if implicit:
        walked = _walk_implicit(data, pos, previous, found, until)
    else:
        walked = _walk_explicit(data, pos, previous, found, max_depth, until)
    if not walked or not found.elements:
        return None
    found.codec = _codec(data, found.elements.get(CHARSET))
    return found


def _walk_explicit(
    data: bytes, pos: int, previous: int, found: Scan, max_depth: int, until: int
) -> bool:
    """Top-level elements of an explicit VR little endian data set; False to decline."""
    size, elements = len(data), found.elements
    vrs, long, header, length32 = _VRS, _LONG, _HEADER, _LENGTH32  # locals: the hot loop
    while pos < size:
        if pos + 8 > size:
            return False
        group, number, vr, length = header(data, pos)
        tag = group << 16 | number
        if tag > until:
            return True
        name = vrs.get(vr)
        if name is None or tag <= previous or group == 0xFFFE:
            return False
        start = pos + 8
        if vr in long:
            if pos + 12 > size:
                return False
            length, start = length32(data, start)[0], pos + 12
        if tag in PIXEL_TAGS:
            found.pixel_offset = pos
            return True
        if name == "SQ":
            end = _sequence_end(data, start, length, 1, max_depth)
            if end is None:
                return False
            pos = end
        elif length == 0xFFFFFFFF or start + length > size:
            return False
        else:
            pos = start + length
        elements[tag], previous = (name, length, start), tag
    return True


def _sequence_end(data: bytes, start: int, length: int, depth: int, max_depth: int) -> int | None:
    """Where an explicit VR sequence's value ends, its items framed strictly; None to decline.

    Strict (items tagged as items, delimiters where they belong, elements filling their
    item exactly, known VRs, no UN, no character set, depth within `max_depth`) so that
    pydicom reads the same elements and the reference's structure check, which converts
    every sequence, passes: what is not strict here goes to the pydicom path.
    """
    undefined = length == 0xFFFFFFFF
    limit = len(data) if undefined else start + length
    if depth > max_depth or limit > len(data):
        return None
    pos = start
    while undefined or pos < limit:
        if pos + 8 > limit:
            return None
        group, number, item_length = _IMPLICIT_HEADER(data, pos)
        tag = group << 16 | number
        if tag == 0xFFFEE0DD and undefined and item_length == 0:
            return pos + 8
        if tag != 0xFFFEE000:
            return None
        pos += 8
        if item_length == 0xFFFFFFFF:
            end = _item_end(data, pos, None, depth, max_depth)
        elif pos + item_length <= limit:
            end = _item_end(data, pos, pos + item_length, depth, max_depth)
        else:
            return None
        if end is None:
            return None
        pos = end
    return pos if pos == limit else None


def _item_end(data: bytes, pos: int, end: int | None, depth: int, max_depth: int) -> int | None:
    """Where one item ends: at `end` (defined length) or after its delimiter."""
    limit = len(data) if end is None else end
    previous = -1
    while pos != end:
        if pos + 8 > limit:
            return None
        group, number, vr, length = _HEADER(data, pos)
        tag = group << 16 | number
        if tag == 0xFFFEE00D and end is None and length == 0:
            return pos + 8
        name = _VRS.get(vr)
        if name is None or tag <= previous or group == 0xFFFE or name == "UN" or tag == CHARSET:
            return None
        start = pos + 8
        if vr in _LONG:
            if pos + 12 > limit:
                return None
            length, start = _LENGTH32(data, start)[0], pos + 12
        if name == "SQ":
            after = _sequence_end(data, start, length, depth + 1, max_depth)
            if after is None or after > limit:
                return None
            pos = after
        elif length == 0xFFFFFFFF or start + length > limit:
            return None
        else:
            pos = start + length
        previous = tag
    return pos


def read_undefined_sequence(data: bytes, tag: int, found: Scan) -> DataElement:
    """A top-level undefined-length sequence as pydicom's reader makes it, when needed."""
    if tag not in found.sequences:
        _read_sequence(data, tag, found.elements[tag][2], found)
    return found.sequences[tag]


def _walk_implicit(data: bytes, pos: int, previous: int, found: Scan, until: int) -> bool:
    """Top-level elements of an implicit VR little endian data set; False to decline.

    The VR kept is the dictionary's when pydicom's lookup would give it plainly, else "".
    """
    size, elements = len(data), found.elements
    if pos + 6 <= size and 0x40 < data[pos + 4] < 0x5B and 0x40 < data[pos + 5] < 0x5B:
        return False  # looks explicit: pydicom would switch encodings
    header, vrs = _IMPLICIT_HEADER, _dictionary_vrs()
    while pos < size:
        if pos + 8 > size:
            return False
        group, number, length = header(data, pos)
        tag = group << 16 | number
        if tag > until:
            return True
        if tag <= previous or group == 0xFFFE:
            return False
        start = pos + 8
        if tag in PIXEL_TAGS:
            found.pixel_offset = pos
            return True
        name = "" if group & 1 else vrs.get(tag, "")
        if length == 0xFFFFFFFF:
            if not (name == "SQ" or (not name and _items_follow(data, tag, start))):
                return False
            name, pos = "SQ", _read_sequence(data, tag, start, found)
        elif start + length > size:
            return False
        else:
            pos = start + length
        elements[tag], previous = (name, length, start), tag
    return True


def _items_follow(data: bytes, tag: int, start: int) -> bool:
    """pydicom's look-ahead for an undefined length it cannot find in the dictionary."""
    try:
        dictionary_VR(tag)
    except KeyError:
        return data[start : start + 4] == b"\xfe\xff\x00\xe0"
    return False


def _read_sequence(data: bytes, tag: int, start: int, found: Scan) -> int:
    """An undefined-length sequence read as pydicom's reader does; where it ends."""
    stream = io.BytesIO(data)
    stream.seek(start)
    charset = found.elements.get(CHARSET) if tag > CHARSET else None  # read before it
    encoding = _encoding(data, charset)
    items = read_sequence(stream, found.implicit, True, 0xFFFFFFFF, encoding)
    found.sequences[tag] = DataElement(BaseTag(tag), "SQ", items, start, True)
    return stream.tell()


@cache
def _dictionary_vrs() -> dict[int, str]:
    """Public tag -> VR, where the VR is one (no "US or SS"): pydicom's lookup, flattened."""
    return {tag: entry[0] for tag, entry in DicomDictionary.items() if " " not in entry[0]}


def _default_config() -> bool:
    """The conversions mirrored here are those of pydicom's default settings."""
    return (
        config.settings.reading_validation_mode == config.WARN
        and not config.datetime_conversion
        and not (config.use_DS_numpy or config.use_IS_numpy or config.use_DS_decimal)
        and config.data_element_callback is None
        and not config.convert_wrong_length_to_UN
        and not hooks.raw_element_kwargs
        and hooks.raw_element_vr is raw_element_vr
        and hooks.raw_element_value is raw_element_value
    )


def _encoding(data: bytes, charset: Element | None) -> str | MutableSequence[str]:
    """The encoding pydicom's reader hands to the sequences it reads (see its generator)."""
    if charset is None:
        return default_encoding
    _vr, length, start = charset
    value = convert_string(data[start : start + length] or b"", True)
    return convert_encodings(value)


def _frame(data: bytes, pos: int, vr: bytes, length: int, size: int) -> Element | None:
    name = _VRS.get(vr)
    if name is None:
        return None
    start = pos + 8
    if vr in _LONG:
        if pos + 12 > size:
            return None
        length, start = _LENGTH32(data, pos + 8)[0], pos + 12
    if length == 0xFFFFFFFF or start + length > size:
        return None
    return name, length, start


def _codec(data: bytes, charset: Element | None) -> str | None:
    if charset is None:
        return "latin_1"  # pydicom's default encoding, iso8859
    vr, length, start = charset
    if vr != "CS":
        return None
    return _CODECS.get(data[start : start + length].rstrip(b"\0 "))


def plain_value(data: bytes, element: Element, codec: str | None) -> object:
    """The value as _scalars and the UID checks see it (first of none); SLOW for pydicom."""
    vr, length, start = element
    if vr == "SQ":
        return SLOW
    if length == 0:  # as pydicom converts empty values
        if vr == "IS" or vr == "DS":
            return None
        return "" if vr == "UI" or vr == "PN" or vr in _DEFAULT_ONLY or vr in _TEXT else SLOW
    raw = data[start : start + length]
    if vr in _INTS:
        width, signed = _INTS[vr]
        return int.from_bytes(raw, "little", signed=signed) if length == width else SLOW
    if vr == "UI":
        raw = raw.rstrip(b"\0 ")
    if b"\\" in raw or b"\0" in raw or b"\x1b" in raw:
        return SLOW
    if vr == "UI":
        return raw.decode("latin_1").strip()  # pydicom's UID strips whitespace
    if vr in _DEFAULT_ONLY:
        return raw.decode("latin_1")
    if vr == "IS" or vr == "DS":
        text = raw.decode("latin_1").strip(" ")  # only spaces: int() and str.strip() know more
        if vr == "IS":
            return int(text) if _IS.fullmatch(text) else SLOW
        number = float(text) if _DS.fullmatch(text) else math.inf
        return number if math.isfinite(number) else SLOW
    if codec is None or (vr not in _TEXT and vr != "PN"):
        return SLOW
    try:
        text = raw.decode(codec)
    except UnicodeDecodeError:
        return SLOW
    if vr == "PN" and "=" in text:
        return SLOW  # pydicom drops empty trailing component groups
    return text


def converts_plainly(data: bytes, element: Element) -> bool:
    """True when pydicom converts this implicit VR element without fail or context.

    The reference's structure check converts every implicit VR element; only the others
    (sequences, private, ambiguous or unknown VRs, odd lengths, odd numbers) need it.
    """
    vr, length, start = element
    if vr in _STRINGS or vr in _BYTES:
        return True
    width = _WIDTHS.get(vr)
    if width is not None:
        return length % width == 0
    if vr == "IS" or vr == "DS":
        pattern = _IS if vr == "IS" else _DS
        text = data[start : start + length].decode("latin_1").rstrip(" \0")
        return all(
            pattern.fullmatch(part := piece.strip(" ")) and math.isfinite(float(part))
            for piece in text.split("\\")
        )
    return False
