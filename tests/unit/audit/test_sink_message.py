"""audit/sink_message.py: one AuditEvent as one RFC 5424 message in an octet-counted
frame, checked with the test collector's own ABNF parser (tests/support)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from audit.sink_message import frame, severity, syslog_message, timestamp
from tests.support.syslog_collector import BOM, parse

EVENT: dict[str, Any] = {
    "resourceType": "AuditEvent",
    "id": "0000000000000007",
    "type": {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110112"},
    "subtype": [{"code": "search-type"}],
    "recorded": "2026-12-06T09:15:02.345Z",
    "outcome": "0",
    "source": {"observer": {"display": "pacs-gw.hospital.lt"}},
    "entity": [{"description": 'Jonas\nJonaitis ]"\\ ąčę'}],  # any byte may be in MSG
}
RAW = orjson.dumps(EVENT)


def message(event: dict[str, Any] = EVENT, sequence: int | None = 7) -> bytes:
    return syslog_message(orjson.dumps(event), event, sequence, "medbridge", "this-host")


def test_a_message_parses_as_rfc_5424_with_the_event_as_msg() -> None:
    parsed = parse(message())
    assert (parsed.facility, parsed.severity, parsed.version) == (10, 5, 1)
    assert parsed.timestamp == "2026-12-06T09:15:02.345Z"
    assert parsed.hostname == "pacs-gw.hospital.lt"
    assert (parsed.app_name, parsed.procid, parsed.msgid) == ("medbridge", "-", "110112")
    assert parsed.structured == {"meta": {"sequenceId": "7"}}
    assert parsed.msg == BOM + RAW
    assert parsed.event() == EVENT


def test_the_frame_counts_octets_not_characters() -> None:
    body = message()
    framed = frame(body)
    length, _, rest = framed.partition(b" ")
    assert int(length) == len(rest) == len(body)
    assert len(body) > len(body.decode("utf-8"))  # multi-byte characters were counted as bytes


@pytest.mark.parametrize(
    ("outcome", "subtype", "expected"),
    [
        ("0", [], 5),  # notice
        ("4", [], 4),  # warning: refused or wrong
        ("8", [], 3),  # error: the server failed
        ("12", [], 2),  # critical
        ("0", [{"code": "110113"}], 4),  # break-the-glass: at least a warning
        ("8", [{"code": "110113"}], 3),
        ("x", [], 5),
    ],
)
def test_severity_follows_the_outcome(outcome: str, subtype: list[Any], expected: int) -> None:
    event = {**EVENT, "outcome": outcome, "subtype": subtype}
    assert severity(event) == expected
    assert parse(message(event)).severity == expected


def test_fields_that_do_not_fit_become_nil_or_this_host() -> None:
    event = {**EVENT, "recorded": "yesterday", "type": {"code": "a b"},
             "source": {"observer": {"display": "Radiology dept"}}}  # fmt: skip
    parsed = parse(message(event, sequence=None))
    assert parsed.timestamp == "-"
    assert parsed.msgid == "ab"  # printable US-ASCII only
    assert parsed.hostname == "this-host"
    assert parsed.structured == {}


def test_timestamps_are_utc_with_milliseconds() -> None:
    assert timestamp("2026-12-06T11:15:02.3+02:00") == "2026-12-06T09:15:02.300Z"
    assert timestamp("2026-12-06T09:15:02") == "-"  # no zone: not an instant
    assert timestamp(None) == "-"


def test_the_sequence_id_wraps_as_rfc_5424_says() -> None:
    assert parse(message(sequence=2_147_483_647)).structured["meta"]["sequenceId"] == "2147483647"
    assert parse(message(sequence=2_147_483_648)).structured["meta"]["sequenceId"] == "1"


def test_the_parser_refuses_what_rfc_5424_refuses() -> None:
    with pytest.raises(AssertionError):
        parse(b"<85>1 2026-12-06T11:00:00Z host app - id [bad id] x")  # SP in an SD-ID
    with pytest.raises(AssertionError):
        parse(b"<192>1 - - - - - -")  # PRIVAL above 191
    with pytest.raises(AssertionError):
        parse(b"<85> 1 - - - - - -")
