"""Whether two Part 10 files carry the same instance: their data sets, not their files.

The File Meta Information (group 0002) says how a copy travelled (the implementation
that wrote it, the source AE title, a private group of the sender), so it differs
between STOW-RS and C-STORE copies of one instance. PS3.10 7.1: the data set is what
the instance is; two copies whose bytes after the File Meta Information are equal are
the same instance (docs/dicom.md, "Duplicates").
"""

from __future__ import annotations

import struct

PREAMBLE_END = 132  # 128-byte preamble + "DICM"
_HEADER = struct.Struct("<HH2sH")
_LENGTH32 = struct.Struct("<L")
_LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC",
                       b"UN", b"UR", b"UT", b"UV"))  # fmt: skip


def data_set_offset(data: bytes | memoryview) -> int | None:
    """Where the data set starts: after the last group 0002 element (explicit VR little
    endian, as PS3.10 requires); None when the file meta cannot be framed."""
    size = len(data)
    if size < PREAMBLE_END or bytes(data[128:132]) != b"DICM":
        return None
    position = PREAMBLE_END
    while position + 8 <= size:
        group, _element, vr, length = _HEADER.unpack_from(data, position)
        if group != 2:
            return position
        position += 8
        if vr in _LONG_VRS:
            if position + 4 > size:
                return None
            length = _LENGTH32.unpack_from(data, position)[0]
            position += 4
        if length == 0xFFFFFFFF:
            return None
        position += length
    return position if position == size else None


def same_data_set(first: bytes, second: bytes) -> bool:
    """True when both files frame their File Meta Information and the bytes after it match."""
    start_first, start_second = data_set_offset(first), data_set_offset(second)
    if start_first is None or start_second is None:
        return False
    if len(first) - start_first != len(second) - start_second:
        return False
    return memoryview(first)[start_first:] == memoryview(second)[start_second:]
