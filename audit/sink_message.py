"""One stored AuditEvent as one RFC 5424 syslog message, framed for RFC 5425 (TLS) and
RFC 6587 (plain TCP) by octet counting: the transport of IHE ATNA Record Audit Event
(ITI-20), with the event's FHIR JSON as the MSG.

HEADER: PRI = facility 10 (security/authorization, as ITI-20) * 8 + a severity from
the event's outcome; TIMESTAMP = the event's `recorded`; HOSTNAME = the server that
recorded it (`source.observer`) when that is a host name, else this host; APP-NAME from
the settings; PROCID nil (the sender need not be the process that recorded the event);
MSGID = the AuditEvent type code (`rest`, `110112` ...). STRUCTURED-DATA: RFC 5424's
`meta` element with the chain's sequence number as `sequenceId`, so a collector sees a
gap or a resent event without reading the JSON. MSG: a BOM and the UTF-8 JSON.
"""

from __future__ import annotations

import datetime
import re
from typing import Any

Document = dict[str, Any]
FACILITY_AUTHPRIV = 10  # RFC 5424 table 1: security/authorization messages
# RFC 5424 severities by AuditEvent.outcome: success is a notice (ITI-20's severity for
# audit messages), a refused or wrong request a warning, a server failure an error
SEVERITY_BY_OUTCOME = {"0": 5, "4": 4, "8": 3, "12": 2}
SEVERITY_UNKNOWN = 5
SEVERITY_SECURITY_ALERT = 4  # a break-the-glass access (DCM 110113) is at least a warning
SECURITY_ALERT = "110113"
NILVALUE = "-"
BOM = b"\xef\xbb\xbf"
SEQUENCE_WRAP = 2_147_483_647  # RFC 5424 7.3.1: sequenceId is 1..2147483647, then wraps
_PRINTABLE = re.compile(r"[\x21-\x7e]+")  # PRINTUSASCII
_HOSTNAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9.:_-]{0,254}$")


def severity(event: Document) -> int:
    """RFC 5424 severity of an AuditEvent: from its outcome; a security alert at least 4."""
    level = SEVERITY_BY_OUTCOME.get(str(event.get("outcome", "")), SEVERITY_UNKNOWN)
    if any(coding.get("code") == SECURITY_ALERT for coding in event.get("subtype") or []):
        level = min(level, SEVERITY_SECURITY_ALERT)
    return level


def priority(event: Document) -> int:
    return FACILITY_AUTHPRIV * 8 + severity(event)


def timestamp(recorded: object) -> str:
    """RFC 5424 TIMESTAMP (RFC 3339, upper-case T and Z, at most 6 fraction digits) of an
    R4 instant; NILVALUE when it is missing or not an instant."""
    if not isinstance(recorded, str):
        return NILVALUE
    try:
        moment = datetime.datetime.fromisoformat(recorded)
    except ValueError:
        return NILVALUE
    if moment.tzinfo is None:
        return NILVALUE
    moment = moment.astimezone(datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S") + f".{moment.microsecond // 1000:03d}Z"


def field(value: object, longest: int) -> str:
    """A header field: printable US-ASCII only, at most `longest` characters, else nil."""
    if not isinstance(value, str):
        return NILVALUE
    printable = "".join(_PRINTABLE.findall(value))[:longest]
    return printable or NILVALUE


def hostname(event: Document, fallback: str) -> str:
    """The observer that recorded the event when it reads as a host name, else `fallback`."""
    observer = (event.get("source") or {}).get("observer") or {}
    display = observer.get("display")
    if isinstance(display, str) and _HOSTNAME.match(display):
        return display
    return field(fallback, 255)


def message_id(event: Document) -> str:
    kind = event.get("type") or {}
    return field(kind.get("code") if isinstance(kind, dict) else None, 32)


def structured_data(sequence: int | None) -> str:
    if sequence is None or sequence < 1:
        return NILVALUE
    return f'[meta sequenceId="{(sequence - 1) % SEQUENCE_WRAP + 1}"]'


def syslog_message(
    raw: bytes, event: Document, sequence: int | None, app_name: str, host: str
) -> bytes:
    """SYSLOG-MSG = HEADER SP STRUCTURED-DATA SP MSG; `raw` is the event's JSON as stored
    (sent byte for byte, so the collector can check the chain's hash)."""
    header = " ".join(
        (
            f"<{priority(event)}>1",
            timestamp(event.get("recorded")),
            hostname(event, host),
            field(app_name, 48),
            NILVALUE,
            message_id(event),
            structured_data(sequence),
        )
    )
    return header.encode("ascii") + b" " + BOM + raw


def frame(message: bytes) -> bytes:
    """SYSLOG-FRAME = MSG-LEN SP SYSLOG-MSG (RFC 5425 4.3, RFC 6587 3.4.1): the length in
    octets, so a message may hold any byte, newlines included."""
    return str(len(message)).encode("ascii") + b" " + message
