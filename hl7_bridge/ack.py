"""ACK messages: MSH swaps sender and receiver, MSA-2 echoes MSH-10, same version and
encoding characters; ERR carries ERR-2 location, ERR-3 (table 0357) and ERR-8 text.

Original mode answers AA/AE/AR once. Enhanced mode (MSH-15/MSH-16 set) answers per
those fields: AL always, ER on errors only, SU on success only, NE never; the
application acknowledgment (MSH-16) takes precedence over the accept one (MSH-15).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from hl7_bridge.errors import TABLE_0357, Hl7Error, Hl7Warning

DEFAULT_SEPARATORS = "|", "^~\\&"
ERR_SEGMENT_FROM = (2, 5)  # ERR-2..ERR-8 exist from v2.5 on; earlier versions use ERR-1


@dataclass(frozen=True, slots=True)
class Original:
    """The raw MSH fields an ACK copies, as sent (escapes kept)."""

    field_separator: str = DEFAULT_SEPARATORS[0]
    encoding: str = DEFAULT_SEPARATORS[1]
    fields: tuple[str, ...] = ()  # MSH-3 onward, raw

    def get(self, number: int) -> str:
        index = number - 3
        return self.fields[index] if 0 <= index < len(self.fields) else ""


def original_of(text: str) -> Original:
    """Raw MSH fields of a message text, tolerant of whatever is broken."""
    line = text.replace("\n", "\r").split("\r", 1)[0]
    if not line.startswith("MSH") or len(line) < 8 or line[3].isalnum():
        return Original()
    separator = line[3]
    parts = line[4:].split(separator)
    encoding = parts[0] if _valid_encoding(parts[0], separator) else DEFAULT_SEPARATORS[1]
    return Original(separator, encoding, tuple(parts[1:]))


def _valid_encoding(encoding: str, separator: str) -> bool:
    return (
        len(encoding) in (4, 5)
        and len(set(encoding + separator)) == len(encoding) + 1
        and not any(c.isalnum() or c in " \r\n" for c in encoding)
    )


def ack_code_wanted(
    original: Original, error: Hl7Error | None, honor_never: bool = True
) -> str | None:
    """MSA-1 to send, or None when the sender asked for no acknowledgment of this kind.

    With `honor_never` off, a message asking for none still gets its application ACK:
    many senders wait for an answer whatever MSH-15/16 say.
    """
    application = _condition(original.get(16))
    accept = _condition(original.get(15))
    if not application and not accept:
        return error.ack_code if error else "AA"
    for condition, codes in ((application, ("AA", "AE", "AR")), (accept, ("CA", "CE", "CR"))):
        if _wanted(condition, error):
            success, failure, reject = codes
            if error is None:
                return success
            return reject if error.ack_code == "AR" else failure
    if not honor_never:
        return error.ack_code if error else "AA"
    return None


def _condition(value: str) -> str:
    """An HL7 table 0155 value; anything else counts as absent, so garbage still gets ACKs."""
    value = value.strip().upper()
    return value if value in ("AL", "NE", "ER", "SU") else ""


def _wanted(condition: str, error: Hl7Error | None) -> bool:
    return (
        condition == "AL"
        or (condition == "ER" and error is not None)
        or (condition == "SU" and error is None)
    )


def build_ack(
    original: Original,
    code: str,
    error: Hl7Error | None,
    now: datetime | None = None,
    warnings: Sequence[Hl7Warning] = (),
) -> str:
    """The ACK text (segments separated by CR); one ERR per error (E) and warning (W)."""
    sep, enc = original.field_separator, original.encoding
    component = enc[0]
    version = original.get(12).split(component)[0] or "2.5"
    event = original.get(9).split(component)[1] if component in original.get(9) else ""
    message_type = component.join(p for p in ("ACK", event, "ACK" if event else "") if p)
    timestamp = (now or datetime.now(UTC)).strftime("%Y%m%d%H%M%S")
    msh = [
        "MSH",
        enc,
        original.get(5),
        original.get(6),
        original.get(3),
        original.get(4),
        timestamp,
        "",
        message_type,
        uuid.uuid4().hex[:20],
        original.get(11) or "P",
        original.get(12) or version,
    ]
    charset = original.get(18)
    if charset:
        msh += ["", "", "", "", "", charset]
    segments = [sep.join(msh[:1]) + sep + sep.join(msh[1:])]
    msa = ["MSA", code, original.get(10)]
    if error is not None:
        msa.append(_escape(error.text[:80], sep, enc))
    segments.append(sep.join(msa))
    if error is not None:
        segments.append(_err(error, "E", version, sep, enc))
    segments.extend(_err(warning, "W", version, sep, enc) for warning in warnings)
    return "\r".join(segments) + "\r"


def _err(error: Hl7Error | Hl7Warning, severity: str, version: str, sep: str, enc: str) -> str:
    component, subcomponent = enc[0], enc[3] if len(enc) > 3 else "&"
    location = error.location.replace("^", component)
    description = TABLE_0357[error.code]
    text = _escape(error.text, sep, enc)
    if _version(version) < ERR_SEGMENT_FROM:
        # v2.1-2.4 ERR-1: location^^^code&text&HL70357 (CM_ELD)
        parts = [*location.split(component), "", "", ""][:3]
        code = subcomponent.join((error.code, description, "HL70357"))
        return sep.join(["ERR", component.join([*parts, code])])
    code = component.join((error.code, description, "HL70357"))
    return sep.join(["ERR", "", location, code, severity, "", "", "", text])


def _version(text: str) -> tuple[int, int]:
    parts = text.split(".")
    try:
        return int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    except ValueError:
        return ERR_SEGMENT_FROM


def _escape(text: str, sep: str, enc: str) -> str:
    """HL7 escaping of the delimiters in free text (escape character first)."""
    escape = enc[2] if len(enc) > 2 else "\\"
    names = {escape: "E", sep: "F", enc[0]: "S", enc[1]: "R"}
    if len(enc) > 3:
        names[enc[3]] = "T"
    out = []
    for char in text.replace("\r", " ").replace("\n", " "):
        out.append(f"{escape}{names[char]}{escape}" if char in names else char)
    return "".join(out)
