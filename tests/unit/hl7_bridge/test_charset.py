"""MSH-18 handling: declared sets, BOM, UTF-8 detection, mismatches read plausibly."""

from __future__ import annotations

import pytest

from hl7_bridge.charset import decode


def message(charset: str, name: str) -> str:
    return f"MSH|^~\\&|A|B|C|D|20261122||ADT^A08|1|P|2.5|||||LT|{charset}\rPID|1||1||{name}\r"


@pytest.mark.parametrize(
    ("charset", "codec", "name"),
    [
        ("8859/1", "latin-1", "Müller^Zoë"),
        ("8859/4", "iso8859-4", "Šimkutė^Rūta"),  # Baltic
        ("8859/5", "iso8859-5", "Иванов^Пётр"),  # Cyrillic
        ("UNICODE UTF-8", "utf-8", "Šimkutė^Иванов"),
        ("ASCII", "ascii", "Smith^John"),
    ],
)
def test_declared_character_sets(charset: str, codec: str, name: str) -> None:
    text = message(charset, name)
    decoded = decode(text.encode(codec))
    assert decoded.text == text
    assert decoded.codec == codec
    assert not decoded.mismatch


def test_empty_msh18_reads_utf8_when_valid() -> None:
    text = message("", "Šimkutė^Rūta")
    decoded = decode(text.encode("utf-8"))
    assert decoded.text == text
    assert decoded.codec == "utf-8"


def test_empty_msh18_falls_back_to_latin1() -> None:
    text = message("", "Müller^Zoë")
    decoded = decode(text.encode("latin-1"))
    assert decoded.text == text
    assert decoded.codec == "latin-1"


def test_utf8_bytes_declared_8859_1_are_read_as_utf8() -> None:
    text = message("8859/1", "Šimkutė^Rūta")
    decoded = decode(text.encode("utf-8"))
    assert decoded.text == text
    assert decoded.mismatch


def test_invalid_utf8_declared_utf8_is_read_as_latin1() -> None:
    text = message("UNICODE UTF-8", "Müller")
    decoded = decode(text.encode("latin-1"))
    assert decoded.text == text
    assert decoded.codec == "latin-1"
    assert decoded.mismatch


def test_bom_before_msh_is_dropped() -> None:
    text = message("", "Šimkutė")
    decoded = decode(b"\xef\xbb\xbf" + text.encode("utf-8"))
    assert decoded.text == text


def test_unknown_charset_is_read_plausibly() -> None:
    text = message("KLINGON", "Šimkutė")
    decoded = decode(text.encode("utf-8"))
    assert decoded.text == text
    assert decoded.mismatch
