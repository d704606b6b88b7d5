"""A C-STORE's data set as a Part 10 file: the File Meta Information pynetdicom would write.

pynetdicom's `Event.encoded_dataset(include_meta=True)` builds a pydicom
FileMetaDataset and writes it for every instance (~0.2 ms of CPU holding the GIL, about
a twentieth of an instance's work on the DIMSE path). The group is always the same seven
explicit VR little endian elements, so it is written here directly; a test holds the
bytes equal to pynetdicom's. Anything unusual (a UID that is not ASCII) takes
pynetdicom's path.
"""

from __future__ import annotations

import struct
from typing import cast

from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.events import Event

PREAMBLE = b"\0" * 128 + b"DICM"
_SHORT = struct.Struct("<HH2sH")  # tag, VR, 2-byte length
_VERSION = struct.pack("<HH2sHL", 0x0002, 0x0001, b"OB", 0, 2) + b"\x00\x01"


def part10(event: Event) -> bytes:
    """The received data set with its File Meta Information, as pynetdicom encodes it."""
    request = cast(C_STORE, event.request)
    body = cast(bytes, request.DataSet.getvalue())  # type: ignore[union-attr]
    try:
        meta = file_meta(
            str(request.AffectedSOPClassUID),
            str(request.AffectedSOPInstanceUID),
            str(event.context.transfer_syntax),
        )
    except (UnicodeEncodeError, struct.error):
        return event.encoded_dataset(include_meta=True)
    return b"".join((PREAMBLE, meta, body))


def file_meta(sop_class: str, sop_instance: str, transfer_syntax: str) -> bytes:
    """Group 0002 with its group length, explicit VR little endian."""
    elements = b"".join(
        (
            _VERSION,
            _text(0x0002, "UI", sop_class, b"\0"),
            _text(0x0003, "UI", sop_instance, b"\0"),
            _text(0x0010, "UI", transfer_syntax, b"\0"),
            _text(0x0012, "UI", str(PYNETDICOM_IMPLEMENTATION_UID), b"\0"),
            _text(0x0013, "SH", PYNETDICOM_IMPLEMENTATION_VERSION, b" "),
        )
    )
    group_length = struct.pack("<HH2sHL", 0x0002, 0x0000, b"UL", 4, len(elements))
    return group_length + elements


def _text(element: int, vr: str, value: str, pad: bytes) -> bytes:
    raw = value.encode("ascii")
    if len(raw) % 2:
        raw += pad
    return _SHORT.pack(0x0002, element, vr.encode("ascii"), len(raw)) + raw
