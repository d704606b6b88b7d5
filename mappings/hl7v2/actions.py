"""The write actions a translated HL7 message asks of the store (writer.py applies them)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from mappings.hl7v2.datatypes import Element
from mappings.hl7v2.errors import MappingError

# Stands for the key of the report an OBR updates, in a Report's identifiers and criteria:
# which stored report that is (or a new one) is known only against the store (writer.py).
REPORT_KEY = "{{report}}"


@dataclass(slots=True)
class Upsert:
    """Create or merge into the resource matching `criteria`.

    mode "existing": the resource must exist (cancel, status change); only the
    elements in `only` are changed. mode "fill": create, or set only the elements the
    stored resource lacks (an order's PID where ADT is the source of demographics).
    An element whose value is None is removed (HL7 `""`).
    """

    resource: Element
    criteria: str
    location: str
    mode: Literal["upsert", "existing", "fill"] = "upsert"
    only: tuple[str, ...] = ()


@dataclass(slots=True)
class Merge:
    """ADT A40: `merged` is replaced by `surviving`; references to it are repointed."""

    surviving: str
    merged: str
    location: str


@dataclass(slots=True)
class Report:
    """One OBR's writes (Binary, Observations, DiagnosticReport, DocumentReference).

    Their identifiers hold REPORT_KEY: the writer finds the reports already stored on
    the order (`order`) with the same `code` and decides, per docs/hl7.md, whether this
    OBR is a new version of the newest of them (a correction, a final after a
    preliminary, an unchanged resend) or a new report (key `fresh`). The first report
    on an order keeps the order's number as its key, as before reports were numbered.
    """

    order: str  # criteria of every report on the order
    base: Element  # the order's number (filler, else placer) in its domain
    code: str  # OBR-4
    correction: bool  # OBR-25 C
    fresh: str  # key of a new report that is not the order's first
    actions: list[Upsert]
    # "ServiceRequest?filler" -> placer, accession criteria tried when it matches nothing
    fallbacks: dict[str, list[str]] = field(default_factory=dict)


Action = Upsert | Merge | Report


@dataclass(slots=True)
class Translation:
    event: str  # ADT^A01
    actions: list[Action] = field(default_factory=list)
    # data-type errors in fields that identify nothing, dropped: answered AA + ERR (W)
    warnings: list[MappingError] = field(default_factory=list)


def identifier_criteria(identifiers: list[Element], system: bool = True) -> str:
    values = [f"{i['system']}|{i['value']}" if system else i["value"] for i in identifiers]
    return "identifier=" + ",".join(values)
