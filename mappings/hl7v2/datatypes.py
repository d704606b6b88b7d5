"""HL7 v2 data types -> FHIR data types, after the v2-to-FHIR IG datatype maps.

Each converter takes one repetition (components of subcomponents) and the translation
context, and returns a FHIR element or None when the repetition carries nothing.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, tzinfo
from typing import Any

from mappings.hl7v2.errors import MappingError
from mappings.hl7v2.message import Repetition, component_of
from mappings.hl7v2.tables import Tables

Element = dict[str, Any]
TS = re.compile(
    r"(?P<y>\d{4})(?P<m>\d{2})?(?P<d>\d{2})?(?P<H>\d{2})?(?P<M>\d{2})?(?P<S>\d{2})?"
    r"(?:\.(?P<f>\d{1,4}))?(?P<z>[+-]\d{4})?"
)
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"


@dataclass(slots=True)
class Context:
    """What converters need beyond the field: tables, sender, time zone, side resources."""

    tables: Tables
    sender: str  # MSH-3/MSH-4, for identifiers without an assigning authority
    timezone: tzinfo
    location: str = ""  # ERR-2 of the field being converted
    side: list[tuple[Element, str]] = field(default_factory=list)  # (resource, criteria)
    # MSH-7's offset: the sender's zone, for its times sent without one (before `timezone`)
    offset: timedelta | None = None
    # data-type errors in fields that identify nothing: dropped, answered AA + ERR (W)
    warnings: list[MappingError] = field(default_factory=list)


def identifier_system(authority: list[str], context: Context, kind: str) -> str:
    """HD (namespace^universal id^type) -> identifier system, via the authority table."""
    parts = list(authority)
    namespace = parts[0] if parts else ""
    universal = parts[1] if len(parts) > 1 else ""
    universal_type = parts[2] if len(parts) > 2 else ""
    return context.tables.system_for(namespace, universal, universal_type, context.sender, kind)


def cx(rep: Repetition, context: Context) -> Element | None:
    value = component_of(rep, 1)
    if not value:
        return None
    authority = rep[3] if len(rep) > 3 else []
    kind = component_of(rep, 5)
    identifier: Element = {"system": identifier_system(authority, context, kind), "value": value}
    if kind:
        identifier["type"] = {"coding": [{"system": V2_0203, "code": kind}]}
    return identifier


def ei(rep: Repetition, context: Context) -> Element | None:
    """EI (entity id^namespace^universal id^type) -> Identifier."""
    value = component_of(rep, 1)
    if not value:
        return None
    authority = [component_of(rep, 2), component_of(rep, 3), component_of(rep, 4)]
    return {"system": identifier_system(authority, context, ""), "value": value}


def xpn(rep: Repetition, context: Context) -> Element | None:
    name: Element = {}
    family = component_of(rep, 1)
    if family:
        name["family"] = family
    given = [g for g in (component_of(rep, 2), component_of(rep, 3)) if g]
    if given:
        name["given"] = given
    suffix = [s for s in (component_of(rep, 4), component_of(rep, 6)) if s]
    if suffix:
        name["suffix"] = suffix
    if component_of(rep, 5):
        name["prefix"] = [component_of(rep, 5)]
    use = context.tables.code("name-use", component_of(rep, 7))
    if use:
        name["use"] = use
    return name or None


def xad(rep: Repetition, context: Context) -> Element | None:
    address: Element = {}
    lines = [line for line in (component_of(rep, 1), component_of(rep, 2)) if line]
    if lines:
        address["line"] = lines
    for number, element in ((3, "city"), (4, "state"), (5, "postalCode"), (6, "country")):
        if component_of(rep, number):
            address[element] = component_of(rep, number)
    use = context.tables.code("address-use", component_of(rep, 7))
    if use:
        address["use"] = use
    return address or None


def xtn(rep: Repetition, context: Context) -> Element | None:
    equipment = component_of(rep, 3)
    value = component_of(rep, 1) or component_of(rep, 4)
    if not value:
        local = "".join(component_of(rep, n) for n in (5, 6, 7))
        value = ("+" if component_of(rep, 5) else "") + local if local else ""
    if not value:
        return None
    point: Element = {"system": context.tables.code("telecom-system", equipment) or "phone"}
    if component_of(rep, 4) and not component_of(rep, 1):
        point["system"] = "email"
    point["value"] = value
    use = context.tables.code("telecom-use", component_of(rep, 2))
    if use:
        point["use"] = use
    return point


def cwe(rep: Repetition, context: Context) -> Element | None:
    codings = []
    for start in (1, 4):
        code = component_of(rep, start)
        if not code:
            continue
        coding: Element = {"code": code}
        system = context.tables.coding_system(component_of(rep, start + 2))
        if system:
            coding["system"] = system
        if component_of(rep, start + 1):
            coding["display"] = component_of(rep, start + 1)
        codings.append(coding)
    text = component_of(rep, 9) or component_of(rep, 2)
    concept: Element = {}
    if codings:
        concept["coding"] = codings
    if text:
        concept["text"] = text
    return concept or None


def xcn(rep: Repetition, context: Context) -> Element | None:
    """XCN -> a Practitioner (written beside the resource) and a Reference to it."""
    value = component_of(rep, 1)
    practitioner: Element = {"resourceType": "Practitioner"}
    name = xpn([rep[i] if i < len(rep) else [""] for i in (1, 2, 3, 4, 5)], context)
    if name:
        practitioner["name"] = [name]
    display = " ".join(
        p for p in (component_of(rep, 6), component_of(rep, 3), component_of(rep, 2)) if p
    )
    if not value:
        return {"display": display} if display else None
    authority = rep[8] if len(rep) > 8 else []
    identifier = {"system": identifier_system(authority, context, "PRN"), "value": value}
    practitioner["identifier"] = [identifier]
    criteria = f"identifier={identifier['system']}|{value}"
    context.side.append((practitioner, criteria))
    reference: Element = {"reference": f"Practitioner?{criteria}"}
    if display:
        reference["display"] = display
    return reference


def timestamp(rep: Repetition, context: Context) -> str | None:
    """TS/DTM -> FHIR dateTime; a time without offset gets MSH-7's, else the configured zone."""
    text = component_of(rep, 1).strip()
    if not text:
        return None
    match = TS.fullmatch(text)
    if match is None or not _valid(match):
        raise MappingError("102", f"{text[:40]!r} is not an HL7 date/time", context.location)
    year, month, day = match["y"], match["m"], match["d"]
    if match["H"] is None:
        return "-".join(p for p in (year, month, day) if p)
    moment = datetime(
        int(year),
        int(month or 1),
        int(day or 1),
        int(match["H"]),
        int(match["M"] or 0),
        int(match["S"] or 0),
        int((match["f"] or "0").ljust(6, "0")[:6]),
    )
    if match["z"]:
        sign = 1 if match["z"][0] == "+" else -1
        own = timedelta(hours=int(match["z"][1:3]), minutes=int(match["z"][3:5])) * sign
        return _iso(moment, own)
    if context.offset is not None:
        return _iso(moment, context.offset)
    return _iso(moment, context.timezone.utcoffset(moment) or timedelta(0))


def offset_of(text: str) -> timedelta | None:
    """The UTC offset a TS/DTM carries (MSH-7 `...-0500`), None when it has none."""
    match = TS.fullmatch(text.strip())
    if match is None or not match["z"]:
        return None
    zone = match["z"]
    hours, minutes = int(zone[1:3]), int(zone[3:5])
    if hours > 14 or minutes > 59:
        return None
    sign = 1 if zone[0] == "+" else -1
    return timedelta(hours=hours, minutes=minutes) * sign


def date(rep: Repetition, context: Context) -> str | None:
    """DT (or the date part of a DTM) -> FHIR date."""
    value = timestamp(rep, context)
    return value[:10] if value else None


def uid(rep: Repetition, context: Context) -> Element | None:
    """A DICOM UID (Study Instance UID in ZDS-1 / IPC-3) as a urn:dicom:uid identifier."""
    value = component_of(rep, 1)
    if not re.fullmatch(r"[0-9]+(\.[0-9]+)+", value):
        return None
    return {"system": "urn:dicom:uid", "value": f"urn:oid:{value}"}


def string(rep: Repetition, context: Context) -> str | None:
    return component_of(rep, 1) or None


def _valid(match: re.Match[str]) -> bool:
    try:
        datetime(int(match["y"]), int(match["m"] or 1), int(match["d"] or 1))
    except ValueError:
        return False
    hour, minute, second = (int(match[k] or 0) for k in ("H", "M", "S"))
    return hour < 24 and minute < 60 and second < 60


def _iso(moment: datetime, offset: timedelta) -> str:
    total = int(offset.total_seconds() // 60)
    sign = "+" if total >= 0 else "-"
    hours, minutes = divmod(abs(total), 60)
    text = moment.isoformat(timespec="milliseconds" if moment.microsecond else "seconds")
    return f"{text}{sign}{hours:02d}:{minutes:02d}"


Converter = Callable[[Repetition, Context], Any]
CONVERTERS: dict[str, Converter] = {
    "CX": cx,
    "EI": ei,
    "XPN": xpn,
    "XAD": xad,
    "XTN": xtn,
    "CWE": cwe,
    "CE": cwe,
    "XCN": xcn,
    "DTM": timestamp,
    "TS": timestamp,
    "DT": date,
    "ST": string,
    "UID": uid,
}
