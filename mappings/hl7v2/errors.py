"""The one failure a translation can report: an ERR-3 code (HL7 table 0357) and where."""

from __future__ import annotations


class MappingError(Exception):
    """Content the mapping cannot translate; the bridge answers it with AE or AR + ERR."""

    def __init__(self, code: str, text: str, location: str = "", *, reject: bool = False) -> None:
        self.code = code  # HL7 table 0357: 100 segment sequence, 101 required field missing ...
        self.text = text
        self.location = location  # ERR-2: SEG^sequence^field^repetition^component
        self.reject = reject  # AR (message type/version not handled) rather than AE
        super().__init__(f"{code} {location}: {text}")
