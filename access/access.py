"""One typed description of every access, whatever door it came in by.

Each door's prepare step fills `Exchange.access` before any stage runs, from what it
parsed (a FHIR route, a DICOMweb path, a DIMSE request, an HL7 message header). Hooks
(authorization, consent, audit) read this and never parse a URL, a DICOM identifier or
an HL7 segment themselves.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from access.context import Actor, Door


class Action(StrEnum):
    """What an access does. FHIR interactions keep their restful-interaction codes."""

    # FHIR (http://hl7.org/fhir/restful-interaction)
    READ = "read"
    VREAD = "vread"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    HISTORY_INSTANCE = "history-instance"
    HISTORY_TYPE = "history-type"
    HISTORY_SYSTEM = "history-system"
    CREATE = "create"
    SEARCH_TYPE = "search-type"
    SEARCH_SYSTEM = "search-system"
    CAPABILITIES = "capabilities"
    BATCH = "batch"
    TRANSACTION = "transaction"
    OPERATION = "operation"
    # DICOMweb (PS3.18)
    STOW = "stow-rs"
    QIDO = "qido-rs"
    WADO = "wado-rs"
    # DIMSE (PS3.7) and the modality worklist (PS3.4 K)
    C_STORE = "c-store"
    C_FIND = "c-find"
    C_MOVE = "c-move"
    C_GET = "c-get"
    MWL = "mwl-find"
    C_ECHO = "c-echo"
    # HL7v2: one access per message, the event in `Access.event`
    HL7_EVENT = "hl7-event"
    # local commands of an operator
    IMPORT = "import"
    REPLAY = "replay"
    ADMIN = "admin"


READS = frozenset(
    {
        Action.READ,
        Action.VREAD,
        Action.HISTORY_INSTANCE,
        Action.HISTORY_TYPE,
        Action.HISTORY_SYSTEM,
        Action.SEARCH_TYPE,
        Action.SEARCH_SYSTEM,
        Action.OPERATION,
        Action.QIDO,
        Action.WADO,
        Action.C_FIND,
        Action.C_MOVE,
        Action.C_GET,
        Action.MWL,
    }
)


@dataclass(frozen=True, slots=True)
class Access:
    """Who does what to which records, why, and from where."""

    door: Door
    action: Action
    actor: Actor
    resource_types: frozenset[str] = frozenset()
    # FHIR id of the one resource acted on (read, update, Patient/x/$everything ...)
    resource_id: str | None = None
    # Patient ids the access concerns, when the request names them (compartment, patient=)
    patients: frozenset[str] = frozenset()
    # otherwise the query that selects them (FHIR search parameters, DICOM matching keys)
    patient_query: tuple[tuple[str, str], ...] = ()
    studies: frozenset[str] = frozenset()  # StudyInstanceUID
    series: frozenset[str] = frozenset()  # SeriesInstanceUID
    instances: frozenset[str] = frozenset()  # SOPInstanceUID
    event: str | None = None  # HL7 MSH-9 (ADT^A01), FHIR operation ($everything)
    purpose_of_use: str | None = None  # X-Purpose-Of-Use for the HTTP doors
    client_address: str | None = None
    parent: Access | None = None  # the batch/transaction a bundle entry belongs to
    request_id: str = ""
    # a search's own parameters, result parameters (_count, _include ...) left out, whether
    # or not it names its patients: a query-restricted SMART scope is checked against it
    search: tuple[tuple[str, str], ...] = ()

    @property
    def reads(self) -> bool:
        return self.action in READS
