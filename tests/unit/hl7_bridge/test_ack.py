"""ACK building: swapped MSH, MSA echoing MSH-10, ERR by version, enhanced mode."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from hl7_bridge.ack import ack_code_wanted, build_ack, original_of
from hl7_bridge.errors import Hl7Error, Hl7Warning
from mappings.hl7v2.message import V2Message

NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def test_original_mode_aa_swaps_sender_and_receiver() -> None:
    original = original_of("MSH|^~\\&|RIS|HOSP|MB|MBF|20261122||ORM^O01|X-1|P|2.3.1\rPID|1\r")
    ack = build_ack(original, ack_code_wanted(original, None) or "", None, NOW)
    msh, msa = ack.rstrip("\r").split("\r")
    fields = msh.split("|")
    assert fields[2:6] == ["MB", "MBF", "RIS", "HOSP"]
    assert fields[6] == "20261122100000"
    assert fields[8] == "ACK^O01^ACK"
    assert fields[10:12] == ["P", "2.3.1"]
    assert msa == "MSA|AA|X-1"
    parsed = V2Message(ack)  # our own ACK parses with our own reader
    assert parsed.header.message_type == "ACK"


def test_err_segment_v25() -> None:
    original = original_of("MSH|^~\\&|RIS|HOSP|MB|MBF|20261122||ADT^A01|X-2|P|2.5.1\r")
    error = Hl7Error("AE", "101", "PID-3 is required|really", "PID^2^3")
    ack = build_ack(original, "AE", error, NOW)
    segments = ack.rstrip("\r").split("\r")
    assert segments[1].startswith("MSA|AE|X-2|")
    err = segments[2].split("|")
    assert err[0] == "ERR"
    assert err[2] == "PID^2^3"
    assert err[3] == "101^Required field missing^HL70357"
    assert err[4] == "E"
    assert err[8] == "PID-3 is required\\F\\really"  # delimiters escaped


def test_err_segment_v23_uses_err1() -> None:
    original = original_of("MSH|^~\\&|RIS|HOSP|MB|MBF|20261122||ADT^A01|X-3|P|2.3\r")
    error = Hl7Error("AE", "204", "no such order", "ORC^3^2")
    ack = build_ack(original, "AE", error, NOW)
    assert ack.rstrip("\r").split("\r")[2] == "ERR|ORC^3^2^204&Unknown key identifier&HL70357"


def test_same_encoding_characters_and_charset() -> None:
    original = original_of("MSH#$%*@#RIS#H#MB#M#2026##ADT$A08#X-4#P#2.5######UNICODE UTF-8\r")
    ack = build_ack(original, "AA", None, NOW)
    msh = ack.split("\r")[0].split("#")
    assert msh[1] == "$%*@"
    assert msh[8] == "ACK$A08$ACK"
    assert msh[17] == "UNICODE UTF-8"


@pytest.mark.parametrize(
    ("accept", "application", "failed", "expected"),
    [
        ("", "", False, "AA"),
        ("", "", True, "AE"),
        ("AL", "AL", False, "AA"),
        ("AL", "NE", False, "CA"),
        ("AL", "NE", True, "CE"),
        ("NE", "ER", False, None),
        ("NE", "ER", True, "AE"),
        ("NE", "NE", True, None),
        ("ER", "NE", True, "CE"),
        ("SU", "NE", False, "CA"),
        ("\x00", "XX", False, "AA"),  # values outside table 0155 count as absent
    ],
)
def test_enhanced_mode(accept: str, application: str, failed: bool, expected: str | None) -> None:
    original = original_of(f"MSH|^~\\&|A|B|C|D|2026||ADT^A08|1|P|2.5|||{accept}|{application}\r")
    error = Hl7Error("AE", "101", "x") if failed else None
    assert ack_code_wanted(original, error) == expected


def test_never_is_answered_unless_honored() -> None:
    original = original_of("MSH|^~\\&|A|B|C|D|2026||ADT^A08|1|P|2.5|||NE|NE\r")
    assert ack_code_wanted(original, None, honor_never=True) is None
    assert ack_code_wanted(original, None, honor_never=False) == "AA"
    assert ack_code_wanted(original, Hl7Error("AR", "200", "x"), honor_never=False) == "AR"


def test_reject_in_enhanced_mode_is_cr() -> None:
    original = original_of("MSH|^~\\&|A|B|C|D|2026||ADT^A08|1|P|2.5|||AL|NE\r")
    assert ack_code_wanted(original, Hl7Error("AR", "203", "x")) == "CR"


def test_unreadable_msh_still_gets_an_ack() -> None:
    original = original_of("garbage")
    ack = build_ack(original, "AR", Hl7Error("AR", "100", "no MSH", "MSH"), NOW)
    assert ack.startswith("MSH|^~\\&|")
    assert "\rMSA|AR||no MSH\r" in ack


def test_warnings_are_err_segments_of_severity_w_on_an_aa() -> None:
    original = original_of("MSH|^~\\&|LAB|HOSP|MB|MBF|20261122||ORU^R01|X-9|P|2.5.1\r")
    warnings = [
        Hl7Warning("102", "'01/10/1948' is not an HL7 date/time", "PID^2^7"),
        Hl7Warning("102", "'x' is not an HL7 date/time", "PID^2^29"),
    ]
    ack = build_ack(original, "AA", None, NOW, warnings)
    segments = ack.rstrip("\r").split("\r")
    assert segments[1] == "MSA|AA|X-9"
    first, second = (s.split("|") for s in segments[2:])
    assert (first[0], first[2], first[3], first[4]) == (
        "ERR", "PID^2^7", "102^Data type error^HL70357", "W",
    )  # fmt: skip
    assert second[2] == "PID^2^29"
