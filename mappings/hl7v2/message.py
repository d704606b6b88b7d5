"""A read-only view of an HL7 v2 message: segments, fields, repetitions, components.

Splitting and unescaping come from python-hl7 (fast and tolerant); this view only
evens out its shapes, so every field reads as repetitions of components of
subcomponents, with escape sequences (\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\X..\\) resolved.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import hl7

from mappings.hl7v2.errors import MappingError

Repetition = list[list[str]]  # components of subcomponents
SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")


@dataclass(frozen=True, slots=True)
class Header:
    """MSH fields every answer needs, read before the body is trusted."""

    field_separator: str
    encoding_characters: str
    sending_application: str
    sending_facility: str
    receiving_application: str
    receiving_facility: str
    message_type: str  # MSH-9.1
    trigger_event: str  # MSH-9.2
    message_structure: str  # MSH-9.3
    control_id: str  # MSH-10
    processing_id: str  # MSH-11
    version: str  # MSH-12
    accept_ack_type: str  # MSH-15
    application_ack_type: str  # MSH-16
    character_set: str  # MSH-18 (first repetition)


class Segment:
    """One segment; `field(n)` uses HL7 numbering (MSH-1 is the field separator)."""

    def __init__(self, message: V2Message, raw: hl7.Segment, index: int) -> None:
        self._message = message
        self._raw = raw
        self.name = str(raw[0])
        self.index = index  # 1-based position in the message, for ERR-2

    def field(self, number: int) -> list[Repetition]:
        """Repetitions of field `number`, unescaped; [] when empty or absent."""
        if number >= len(self._raw) or (self.name == "MSH" and number <= 2):
            if self.name == "MSH" and number in (1, 2) and number < len(self._raw):
                return [[[str(self._raw[number])]]]
            return []
        raw_field = self._raw[number]
        if isinstance(raw_field, str):
            return [[[self._unescape(raw_field)]]] if raw_field else []
        repetitions = (
            list(raw_field)
            if raw_field and isinstance(raw_field[0], hl7.Repetition)
            else [raw_field]
        )
        result: list[Repetition] = []
        for repetition in repetitions:
            shaped = self._components(repetition)
            if any(any(sub for sub in component) for component in shaped):
                result.append(shaped)
        return result

    def value(self, number: int, component: int = 1, subcomponent: int = 1) -> str:
        """Text of FIELD.COMPONENT.SUBCOMPONENT in the first repetition, '' when absent."""
        repetitions = self.field(number)
        return component_of(repetitions[0], component, subcomponent) if repetitions else ""

    def _components(self, repetition: object) -> Repetition:
        if isinstance(repetition, str):
            return [[self._unescape(repetition)]]
        assert isinstance(repetition, list)
        if repetition and all(isinstance(part, str) for part in repetition):
            return (
                [[self._unescape(part)] for part in repetition]
                if len(repetition) > 1
                else [[self._unescape(repetition[0])]]
            )
        shaped: Repetition = []
        for component in repetition:
            if isinstance(component, str):
                shaped.append([self._unescape(component)])
            else:
                shaped.append([self._unescape(str(sub)) for sub in component])
        return shaped

    def _unescape(self, text: str) -> str:
        if "\\" not in text:
            return text
        return str(self._message.raw.unescape(text))


def component_of(repetition: Repetition, component: int, subcomponent: int = 1) -> str:
    """1-based component and subcomponent of one repetition, '' when absent."""
    if component > len(repetition):
        return ""
    parts = repetition[component - 1]
    return parts[subcomponent - 1] if subcomponent <= len(parts) else ""


class V2Message:
    """Parsed message text (segments separated by CR, LF or CRLF)."""

    def __init__(self, text: str) -> None:
        normalized = text.replace("\r\n", "\r").replace("\n", "\r").strip("\r")
        check_msh(normalized)
        try:
            self.raw = hl7.parse(normalized)
        except Exception as error:  # python-hl7 raises bare errors on odd input
            raise MappingError("100", "message could not be split into segments", "MSH") from error
        self.segments = [Segment(self, raw, i + 1) for i, raw in enumerate(self.raw)]
        for segment in self.segments:
            if not SEGMENT_NAME.fullmatch(segment.name):
                raise MappingError(
                    "100", f"segment {segment.index} has no valid name", segment_location(segment)
                )
        self.header = _header(self.segments[0])

    def all(self, name: str) -> list[Segment]:
        return [segment for segment in self.segments if segment.name == name]

    def first(self, name: str) -> Segment | None:
        return next((segment for segment in self.segments if segment.name == name), None)

    def groups(self, start: str, stop: frozenset[str]) -> Iterator[list[Segment]]:
        """Runs of segments from each `start` segment up to the next one named in `stop`."""
        group: list[Segment] | None = None
        for segment in self.segments:
            if segment.name == start:
                if group:
                    yield group
                group = [segment]
            elif group is not None and segment.name in stop:
                yield group
                group = None
            elif group is not None:
                group.append(segment)
        if group:
            yield group


def check_msh(text: str) -> None:
    """MSH-1 and MSH-2 must be present and sane before anything else can be read."""
    if not text.startswith("MSH") or len(text) < 8:
        raise MappingError("100", "message does not start with an MSH segment", "MSH")
    separator = text[3]
    if separator.isalnum() or separator in " \r\n":
        raise MappingError("100", "MSH-1 field separator is invalid", "MSH^1^1")
    encoding = text[4:].split(separator, 1)[0]
    if (
        len(encoding) not in (4, 5)
        or len(set(encoding + separator)) != len(encoding) + 1
        or any(c.isalnum() or c in " \r\n" for c in encoding)
    ):
        raise MappingError("100", "MSH-2 encoding characters are invalid", "MSH^1^2")


def segment_location(segment: Segment, field: int | None = None) -> str:
    """ERR-2 style location: SEG^sequence^field."""
    return f"{segment.name}^{segment.index}" + (f"^{field}" if field else "")


def _header(msh: Segment) -> Header:
    charset = msh.field(18)
    return Header(
        field_separator=msh.value(1),
        encoding_characters=msh.value(2),
        sending_application=msh.value(3),
        sending_facility=msh.value(4),
        receiving_application=msh.value(5),
        receiving_facility=msh.value(6),
        message_type=msh.value(9, 1),
        trigger_event=msh.value(9, 2),
        message_structure=msh.value(9, 3),
        control_id=msh.value(10),
        processing_id=msh.value(11),
        version=msh.value(12),
        accept_ack_type=msh.value(15),
        application_ack_type=msh.value(16),
        character_set=component_of(charset[0], 1) if charset else "",
    )
