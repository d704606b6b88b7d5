"""Bytes -> text per MSH-18, reading what real senders mean rather than what they declare.

With MSH-18 empty, bytes that are valid UTF-8 are UTF-8, else 8859/1. When the bytes
contradict the declared set (UTF-8 sent as 8859/1, or invalid UTF-8 declared UTF-8) the
most plausible reading wins and the mismatch is logged, not rejected. A UTF-8 BOM before
MSH is dropped.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

BOM = b"\xef\xbb\xbf"
# MSH-18 values (HL7 table 0211) -> Python codecs
CODECS = {
    "": "",
    "ASCII": "ascii",
    "8859/1": "latin-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "UNICODE UTF-8": "utf-8",
    "UTF-8": "utf-8",
}


@dataclass(frozen=True, slots=True)
class Decoded:
    text: str
    codec: str  # what the text was read as; ACKs are encoded the same way
    declared: str  # MSH-18 as sent
    mismatch: bool  # bytes contradicted the declaration


def declared_charset(raw: bytes) -> str:
    """MSH-18 (first repetition) read from the raw MSH segment, '' when absent."""
    end = len(raw)
    for terminator in (b"\r", b"\n"):
        found = raw.find(terminator)
        if found != -1:
            end = min(end, found)
    msh = raw[:end]
    if len(msh) < 8 or not msh.startswith(b"MSH"):
        return ""
    fields = msh.split(msh[3:4])
    if len(fields) < 18:
        return ""
    repetition = msh[5:6] if len(fields[1]) > 1 else b"~"
    return fields[17].split(repetition)[0].decode("ascii", "replace").strip().upper()


def decode(raw: bytes) -> Decoded:
    """The message text, read the most plausible way (a mismatch is logged)."""
    decoded, note = read_text(raw)
    if note is not None:
        log.warning("%s", note)
    return decoded


def read_text(raw: bytes) -> tuple[Decoded, str | None]:
    """The message text, and what was odd about its character set (no message content:
    the MSH-18 value at most), for the caller to log where it runs: on a worker process
    a record would not reach the server's log."""
    if raw.startswith(BOM):
        raw = raw[len(BOM) :]
    declared = declared_charset(raw)
    codec = CODECS.get(declared)
    utf8 = _utf8(raw)
    note: str | None
    if codec is None:
        reading = "UTF-8" if utf8 is not None else "8859/1"
        note = f"unknown MSH-18 character set {declared[:20]!r}; reading as {reading}"
        return _plausible(raw, utf8, declared, mismatch=True), note
    if codec in ("", "ascii"):
        if raw.isascii():
            text = raw.decode("ascii")
            return Decoded(text, "ascii" if codec else "utf-8", declared, False), None
        note = "MSH-18 declares ASCII but the message has 8-bit bytes" if codec else None
        return _plausible(raw, utf8, declared, mismatch=bool(codec)), note
    if codec == "utf-8":
        if utf8 is not None:
            return Decoded(utf8, "utf-8", declared, False), None
        note = "MSH-18 declares UTF-8 but the bytes are not UTF-8; reading as 8859/1"
        return Decoded(raw.decode("latin-1"), "latin-1", declared, True), note
    if utf8 is not None and not raw.isascii():
        # Multi-byte UTF-8 sequences are very unlikely in genuine single-byte text.
        note = f"MSH-18 declares {declared} but the bytes are UTF-8; reading as UTF-8"
        return Decoded(utf8, "utf-8", declared, True), note
    return Decoded(raw.decode(codec, "replace"), codec, declared, False), None


def _utf8(raw: bytes) -> str | None:
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _plausible(raw: bytes, utf8: str | None, declared: str, mismatch: bool) -> Decoded:
    if utf8 is not None:
        return Decoded(utf8, "utf-8", declared, mismatch)
    return Decoded(raw.decode("latin-1"), "latin-1", declared, mismatch)
