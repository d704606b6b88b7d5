"""The message view: separators, escapes, repetitions, Z-segments, broken MSH."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import hl7
import pytest

from hl7_bridge.charset import decode
from mappings.hl7v2.errors import MappingError
from mappings.hl7v2.message import V2Message

BASE = "MSH|^~\\&|RIS|HOSP|MB|MB|20261122101500||ADT^A08|C1|P|2.5.1\r"


@pytest.mark.parametrize("separator", ["\r", "\n", "\r\n"])
def test_segment_separators(separator: str) -> None:
    text = BASE.rstrip("\r") + separator + "PID|1||123^^^LTPK||Šimkus^Jonas" + separator
    message = V2Message(text)
    assert [s.name for s in message.segments] == ["MSH", "PID"]
    assert message.first("PID") is not None
    assert message.first("PID").value(5, 2) == "Jonas"  # type: ignore[union-attr]


def test_escape_sequences_resolved() -> None:
    pid = "PID|1||1||O\\S\\Brien\\T\\Co^A\\F\\B\\R\\C\\E\\D^\\X41\\"
    message = V2Message(BASE + pid + "\r")
    segment = message.first("PID")
    assert segment is not None
    assert segment.value(5, 1) == "O^Brien&Co"
    assert segment.value(5, 2) == "A|B~C\\D"
    assert segment.value(5, 3) == "A"


def test_non_default_encoding_characters() -> None:
    text = "MSH#$%*@#RIS#HOSP#MB#MB#20261122##ADT$A08#C2#P#2.5\rPID#1##77$$$LTPK%X@Y##Doe$Jane\r"
    message = V2Message(text)
    assert message.header.message_type == "ADT"
    assert message.header.trigger_event == "A08"
    pid = message.first("PID")
    assert pid is not None
    repetitions = pid.field(3)
    assert repetitions[0][0] == ["77"]
    assert repetitions[0][3] == ["LTPK"]
    assert repetitions[1][0] == ["X", "Y"]  # @ is the subcomponent separator here
    assert pid.value(5, 2) == "Jane"


def test_repeated_fields_and_z_segments_kept() -> None:
    text = BASE + "PID|1||A^^^X~B^^^Y~~||Doe\rZDS|1.2.3.4^MB^Application^DICOM\r"
    message = V2Message(text)
    pid = message.first("PID")
    assert pid is not None
    assert [rep[0][0] for rep in pid.field(3)] == ["A", "B"]  # empty repetitions dropped
    zds = message.first("ZDS")
    assert zds is not None
    assert zds.value(1) == "1.2.3.4"
    assert zds.value(1, 4) == "DICOM"


@pytest.mark.parametrize(
    ("text", "location"),
    [
        ("PID|1\r", "MSH"),
        ("MSHA^~\\&|X\r", "MSH^1^1"),
        ("MSH|^^\\&|X|Y\r", "MSH^1^2"),
        ("MSH|^~|X|Y\r", "MSH^1^2"),
        ("MSH", "MSH"),
    ],
)
def test_broken_msh_is_reported(text: str, location: str) -> None:
    with pytest.raises(MappingError) as raised:
        V2Message(text)
    assert raised.value.code == "100"
    assert raised.value.location == location


def test_header_fields() -> None:
    text = (
        "MSH|^~\\&|RIS^1.2.3^ISO|HOSP|MB|MBF|20261122||ORM^O01^ORM_O01|X9|P|2.4|||AL|NE||8859/4\r"
    )
    header = V2Message(text).header
    assert header.sending_application == "RIS"
    assert header.receiving_facility == "MBF"
    assert header.message_structure == "ORM_O01"
    assert header.control_id == "X9"
    assert header.version == "2.4"
    assert header.accept_ack_type == "AL"
    assert header.application_ack_type == "NE"
    assert header.character_set == "8859/4"


SAMPLES = sorted((Path(__file__).parents[2] / "data" / "hl7").glob("*.hl7"))


def _as_python_hl7_reads(message: hl7.Message, segment: hl7.Segment, number: int) -> Any:
    """Field `number` shaped from python-hl7's full container tree (the reference)."""
    if number >= len(segment):
        return []
    if str(segment[0]) == "MSH" and number in (1, 2):
        return [[[str(segment[number])]]]
    field = segment[number]
    repetitions = field if isinstance(field[0], hl7.Repetition) else [field]
    shaped = []
    for repetition in repetitions:
        components = [
            [message.unescape(str(sub)) for sub in component]
            if isinstance(component, hl7.Component)
            else [message.unescape(str(component))]
            for component in repetition
        ]
        if any(any(component) for component in components):
            shaped.append(components)
    return shaped


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_fields_read_as_python_hl7_parses_them(path: Path) -> None:
    text = decode(path.read_bytes()).text
    message = V2Message(text)
    reference = hl7.parse(text.replace("\r\n", "\r").replace("\n", "\r").strip("\r"))
    assert [s.name for s in message.segments] == [str(s[0]) for s in reference]
    for segment, raw in zip(message.segments, reference, strict=True):
        for number in range(1, len(raw) + 2):
            assert segment.field(number) == _as_python_hl7_reads(reference, raw, number)
