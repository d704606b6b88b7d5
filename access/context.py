"""Who is asking, why, and what the pipeline learned about the request on the way."""

from __future__ import annotations

import getpass
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from access.access import Access


class Door(StrEnum):
    """The protocol a request came in by; each answers errors in its own protocol."""

    FHIR = "fhir"
    HL7V2 = "hl7v2"
    DICOMWEB = "dicomweb"
    DIMSE = "dimse"
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class Actor:
    """The authenticated party: a SMART user or client, an MLLP peer, a DICOM AE title."""

    kind: str  # anonymous | user | client | system | hl7-peer | dicom-ae | operator
    identifier: str
    display: str | None = None


ANONYMOUS = Actor("anonymous", "anonymous")
SYSTEM = Actor("system", "medbridge")


def operator() -> Actor:
    """The local operator running a command (`dicom import`, `hl7 replay`): the OS user."""
    return Actor("operator", getpass.getuser())


@dataclass(slots=True)
class RequestContext:
    door: Door
    actor: Actor = ANONYMOUS
    scopes: frozenset[str] = frozenset()
    patient: str | None = None  # patient context of a patient-facing token
    purpose_of_use: str | None = None
    peer: str | None = None  # network address, for audit
    request_id: str = field(default_factory=lambda: uuid.uuid4().hex)
    notes: dict[str, Any] = field(default_factory=dict)  # what stages tell later stages
    # the one access of an HL7 message or a command, parent of the FHIR accesses it makes
    access: Access | None = None
    # the HTTP Authorization header as sent (RFC 7235 "credentials": scheme and token);
    # the authenticate hook reads it. Out of repr, so no log line or traceback shows it
    credentials: str | None = field(default=None, repr=False)
