"""Header checks before a message is trusted: each failure is AR with its ERR-3 code."""

from __future__ import annotations

import pytest

from hl7_bridge.errors import Hl7Error
from hl7_bridge.processor import SUPPORTED_VERSIONS, parse


def message(type_: str = "ADT^A08", control: str = "C1", processing: str = "P",
            version: str = "2.5") -> str:  # fmt: skip
    return f"MSH|^~\\&|A|B|C|D|2026||{type_}|{control}|{processing}|{version}\rPID|1||1\r"


@pytest.mark.parametrize(
    ("text", "code", "location"),
    [
        (message(type_=""), "101", "MSH^1^9"),
        (message(control=""), "101", "MSH^1^10"),
        (message(processing=""), "101", "MSH^1^11"),
        (message(version=""), "101", "MSH^1^12"),
        (message(version="2.2"), "203", "MSH^1^12"),
        (message(version="3.0"), "203", "MSH^1^12"),
        (message(processing="X"), "202", "MSH^1^11"),
        ("EVN|A08\r", "100", "MSH"),
        ("MSH|^~\\&|A\rP\x00D|1\r", "100", "P\x00D^2"),
    ],
)
def test_bad_headers_are_rejected(text: str, code: str, location: str) -> None:
    with pytest.raises(Hl7Error) as raised:
        parse(text)
    assert (raised.value.ack_code, raised.value.code) == ("AR", code)
    assert raised.value.location == location


@pytest.mark.parametrize("version", ["2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.8"])
def test_supported_versions(version: str) -> None:
    assert version in SUPPORTED_VERSIONS
    assert parse(message(version=version)).header.version == version
