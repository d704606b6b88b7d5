"""A read-only view of an HL7 v2 message: segments, fields, repetitions, components.

The separators (MSH-1, MSH-2 and their defaults) and the escape sequences
(\\F\\ \\S\\ \\T\\ \\R\\ \\E\\ \\X..\\) come from python-hl7. Segments are split into
fields up front, but a field is split into repetitions of components of subcomponents
only when it is read: a translation reads a few dozen of a message's hundreds of
fields, and python-hl7's full container tree cost more than the whole translation.
The shapes are the ones `hl7.parse` gives, evened out.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from dataclasses import dataclass

import hl7
import hl7.containers
import hl7.util

from mappings.hl7v2.errors import MappingError

Repetition = list[list[str]]  # components of subcomponents
SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")
HEADER_SEGMENTS = ("MSH", "BHS", "FHS")  # segments whose fields 1 and 2 are separators
NULL = '""'  # HL7's explicit null: "delete the value", never the two quote characters


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


class _AtDebug(logging.Filter):
    """python-hl7 logs the whole field text at WARNING/ERROR when an escape sequence is bad
    (`Kazlauskas\\Zx\\`): patient data. Its records are demoted to DEBUG, traceback dropped."""

    def __init__(self, logger: logging.Logger) -> None:
        super().__init__()
        self.logger = logger

    def filter(self, record: logging.LogRecord) -> bool:
        record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        record.exc_info, record.exc_text = None, None
        # handlers usually pass every level: the logger's own level decides, as for DEBUG
        return self.logger.isEnabledFor(logging.DEBUG)


def quiet_python_hl7() -> None:
    """Demote python-hl7's own log records (its loggers are named after its files)."""
    for module in (hl7.util, hl7.containers):
        logger = logging.getLogger(module.__file__)
        if not any(isinstance(f, _AtDebug) for f in logger.filters):
            logger.addFilter(_AtDebug(logger))


quiet_python_hl7()


class Segment:
    """One segment; `field(n)` uses HL7 numbering (MSH-1 is the field separator)."""

    def __init__(self, message: V2Message, fields: list[str], index: int) -> None:
        self._message = message
        self._fields = fields  # raw text of each field; [0] is the segment name
        self.name = fields[0]
        self.index = index  # 1-based position in the message, for ERR-2

    def nulled(self, number: int) -> bool:
        """True when field `number` is HL7's explicit null `""`: the value is to be cleared."""
        fields = self._fields
        return 0 < number < len(fields) and fields[number] == NULL

    def field(self, number: int) -> list[Repetition]:
        """Repetitions of field `number`, unescaped; [] when empty, absent or `""`.

        A component or subcomponent `""` reads as empty: it is absent from the new value.
        """
        fields = self._fields
        if number >= len(fields) or (number == 0 and self.name == "MSH"):
            return []
        if number in (1, 2) and self.name in HEADER_SEGMENTS:
            return [[[fields[number]]]]  # MSH-1 and MSH-2 are the separators, as sent
        message, text = self._message, fields[number]
        escaped = "\\" in text  # most fields have no escape sequence at all
        result: list[Repetition] = []
        for repetition in text.split(message.repetition_separator):
            shaped = [
                component.split(message.subcomponent_separator)
                for component in repetition.split(message.component_separator)
            ]
            if escaped:
                shaped = [[message.unescape(sub) for sub in component] for component in shaped]
            if NULL in repetition:
                shaped = [["" if sub == NULL else sub for sub in component] for component in shaped]
            if any(any(component) for component in shaped):
                result.append(shaped)
        return result

    def value(self, number: int, component: int = 1, subcomponent: int = 1) -> str:
        """Text of FIELD.COMPONENT.SUBCOMPONENT in the first repetition, '' when absent."""
        repetitions = self.field(number)
        return component_of(repetitions[0], component, subcomponent) if repetitions else ""


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
        stripped = normalized.strip()  # as hl7.parse does: trailing blanks are no data
        try:
            plan = hl7.parser.create_parse_plan(stripped)
            # python-hl7's unescape reads the separators and escape character from this
            self._escapes = hl7.Message(separators=plan.separators, esc=plan.esc)
            self.repetition_separator = plan.separators[2]
            self.component_separator = plan.separators[3]
            self.subcomponent_separator = plan.separators[4]
            self.segments = [
                Segment(self, _fields(raw, plan.separators[1:]), i + 1)
                for i, raw in enumerate(stripped.split("\r"))
            ]
        except Exception as error:  # a short MSH-like segment, odd separators
            raise MappingError("100", "message could not be split into segments", "MSH") from error
        for segment in self.segments:
            if not SEGMENT_NAME.fullmatch(segment.name):
                raise MappingError(
                    "100", f"segment {segment.index} has no valid name", segment_location(segment)
                )
        self.header = _header(self.segments[0])

    def unescape(self, text: str) -> str:
        """`text` with its escape sequences resolved (python-hl7's table)."""
        if "\\" not in text:
            return text
        return str(self._escapes.unescape(text))

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


def _fields(segment: str, separators: str) -> list[str]:
    """The raw fields of one segment, split as `hl7.parse` splits them.

    `separators` are the field, repetition, component and subcomponent separators.
    """
    field_separator = separators[0]
    if segment[:3] not in HEADER_SEGMENTS or not any(s in segment for s in separators):
        return segment.split(field_separator)
    # a header's own field separator and encoding characters are not split
    own_separator = segment[3]
    end = segment.find(own_separator, 4)
    rest = segment[end + 1 :]
    fields = rest.split(field_separator) if rest else []
    return [segment[:3], own_separator, segment[4:end], *fields]


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
