"""The DIMSE door of the one pipeline: every C-ECHO, C-STORE, C-FIND, MWL, C-MOVE and
C-GET passes authenticate -> authorize -> consent -> act -> audit as the calling AE title.

Handlers never touch the archive except through `DimseDoor.run`, so an authorization,
consent or audit hook registered on `DimseDoor.pipeline` applies to every DIMSE service
as it does to REST and DICOMweb; a hook refuses with a AccessError, which `attempt`
turns into that error's DIMSE status (MB-4001 -> 0x0124).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

from pydicom.datadict import tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from access.access import Access, Action
from access.context import Actor, Door, RequestContext
from access.errors import AccessError
from access.restriction import Restriction
from access.shown import Item, Shown
from fhir_server import store_errors
from fhir_server.errors import outcome
from fhir_server.exchange import FhirExchange, FhirPipeline, FhirRequest, FhirResponse, Route
from fhir_server.registry import Interaction
from imaging.scan import plain_value, scan

T = TypeVar("T")
WORK = "dimse.work"
RESULT = "dimse.result"
DESCRIBE = "dimse.describe"
DELIVER = "dimse.deliver"
# audit/event.py DESTINATION_NOTE: a C-MOVE's destination, an agent of its AuditEvent
DESTINATION_NOTE = "audit.move-destination"
# the rows of a C-FIND or a C-MOVE/C-GET selection as consent-show items
Describe = Callable[[list[Any]], Awaitable[list[Item]]]
# what the act does with the rows consent-show left (C-MOVE/C-GET: read and hand over
# each object), inside the same pass
Deliver = Callable[[list[Any]], Awaitable[Any]]
IMAGING_TYPES = frozenset({"ImagingStudy"})
UID_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
# identifier keys that select patients rather than studies
PATIENT_KEYS = ("PatientID", "IssuerOfPatientID", "PatientName", "PatientBirthDate")
# what an access is described from: a C-FIND/C-MOVE/C-GET identifier, or the keyword ->
# value header of a C-STORE's instance (`stored_header`)
Identifier = Dataset | Mapping[str, str]


@dataclass(frozen=True, slots=True)
class Within:
    """What the act of one pass works under: its access (the parent of whatever it asks
    another door, such as the worklist's FHIR search), its context, and the restriction
    the hooks left it to compile into its query."""

    access: Access
    context: RequestContext
    restriction: Restriction


Work = Callable[[Within], Awaitable[T]]


class DimseDoor:
    def __init__(self, share_hooks_with: FhirPipeline | None = None) -> None:
        self.pipeline = FhirPipeline(
            self._prepare, self._act, _render_error, share_hooks_with,
            explain=store_errors.as_access_error,
        )  # fmt: skip

    async def run(
        self,
        action: Action,
        calling_ae: str,
        work: Work[Any],
        peer: str | None = None,
        *,
        identifier: Identifier | None = None,
        sop_instance: str | None = None,
        describe: Describe | None = None,
        deliver: Deliver | None = None,
        agent: str | None = None,
        destination: tuple[str, str | None] | None = None,
    ) -> Any:
        """`work(within)` as the act of one pipeline pass; raises the AccessError of a
        refusal. `work` compiles `within.restriction` (what the hooks left) into its query.

        `identifier` (C-FIND/C-MOVE/C-GET) and `sop_instance` (C-STORE's Affected SOP
        Instance UID) say what the access concerns, for the hooks. With `describe`, `work`
        returns rows, which a registered consent-show hook decides on: the result is then
        the rows it left (C-FIND pendings and sub-operation counts are theirs). With
        `deliver`, the rows left are handed to it still inside the pass (before audit),
        and the result is what it returns: a retrieve reads its objects there. `agent`:
        the TLS client certificate that authenticated the AE title (the actor's display);
        `destination`: a C-MOVE's move destination (AE title, host), for its AuditEvent."""
        actor = Actor("dicom-ae", calling_ae, agent)
        context = RequestContext(Door.DIMSE, actor=actor, peer=peer)
        context.notes[WORK] = work
        context.notes[DESCRIBE] = describe
        context.notes[DELIVER] = deliver
        if destination is not None:
            context.notes[DESTINATION_NOTE] = destination
        exchange = FhirExchange(FhirRequest("DIMSE", action.value), context)
        exchange.access = dimse_access(action, context, identifier, sop_instance)
        await self.pipeline.handle(exchange)
        if exchange.error is not None:
            raise exchange.error
        return context.notes[RESULT]

    def _prepare(self, exchange: FhirExchange) -> None:
        # the access was described by `run`, from the DIMSE request, before any stage
        exchange.route = Route(Interaction.OPERATION, None, None, None)

    async def _act(self, exchange: FhirExchange) -> FhirResponse:
        notes = exchange.context.notes
        work: Work[Any] = notes[WORK]
        assert exchange.access is not None  # described by `run` before any stage
        result = await work(Within(exchange.access, exchange.context, exchange.restriction))
        describe: Describe | None = notes[DESCRIBE]
        deliver: Deliver | None = notes[DELIVER]
        if exchange.showing and describe is not None:
            rows = list(result)
            exchange.items = Shown(await describe(rows), partial(_kept, exchange, rows, deliver))
            return FhirResponse(204)
        notes[RESULT] = await _delivered(exchange, deliver, result)
        return FhirResponse(200)


async def _kept(
    exchange: FhirExchange, rows: list[Any], deliver: Deliver | None, shown: Shown[FhirResponse]
) -> FhirResponse:
    """The answer from the rows consent-show left; a retrieve reads only their objects."""
    kept = [row for n, row in enumerate(rows) if shown.visible_at(n)]
    exchange.context.notes[RESULT] = await _delivered(exchange, deliver, kept)
    return FhirResponse(200)


async def _delivered(exchange: FhirExchange, deliver: Deliver | None, rows: Any) -> Any:
    """What `deliver` returns for `rows` (a retrieve: how many objects it handed to the
    association); each instance handed over is touched, so the retrieve's AuditEvent lists
    the instances sent (a refused sub-operation is the peer's, after the audit)."""
    if deliver is None:
        return rows
    handed = await deliver(rows)
    if isinstance(handed, int) and isinstance(rows, list):
        for row in rows[:handed]:
            if isinstance(row, dict) and row.get("_id"):
                exchange.touched.append(f"instance:{row['_id']}")
            if isinstance(row, dict) and row.get("se"):
                exchange.touched.append(f"series:{row['se']}")
            if isinstance(row, dict) and row.get("st"):
                exchange.touched.append(f"study:{row['st']}")
    return handed


def _render_error(exchange: FhirExchange, error: AccessError) -> FhirResponse:
    return FhirResponse.of(error.status, outcome(error))


# what a C-STORE's access names of the instance it carries (its patient by PatientID and
# issuer, never by name): framed from the header alone, on the association's thread
STORED_TAGS = {
    int(tag_for_keyword(k) or 0): k for k in (*UID_KEYS, "PatientID", "IssuerOfPatientID")
}
# they all lie in the first few dozen elements: framing stops after the last of them
LAST_STORED_TAG = max(STORED_TAGS)


def stored_header(data: bytes) -> dict[str, str] | None:
    """The identifying header of a Part 10 instance (keyword -> value), framed in its
    bytes up to its last identifying element without decoding or inflating anything
    (imaging/scan.py: a deflated instance must be inflated under the ingest's cap, never
    here); None when it cannot be framed so (deflated, big endian or malformed): the
    access then names its SOP Instance UID only, and the ingest answers. It runs on the
    association's thread for every C-STORE, before the ingest parses the whole instance:
    no pydicom Dataset, and no element after the last one it needs."""
    found = scan(data, until=LAST_STORED_TAG)
    if found is None:
        return None
    header: dict[str, str] = {}
    for tag, keyword in STORED_TAGS.items():
        element = found.elements.get(tag)
        value = plain_value(data, element, found.codec) if element is not None else None
        if isinstance(value, str) and value:
            header[keyword] = value
    return header


def dimse_access(
    action: Action, context: RequestContext, identifier: Identifier | None, sop: str | None
) -> Access:
    """The UIDs an identifier names (UID list matching allowed) and its patient keys."""
    found: dict[str, frozenset[str]] = {}
    query: list[tuple[str, str]] = []
    if identifier is not None:
        for keyword in UID_KEYS:
            found[keyword] = frozenset(_values(identifier, keyword))
        query = [(k, v) for k in PATIENT_KEYS for v in _values(identifier, k)]
    instances = found.get("SOPInstanceUID", frozenset()) | ({sop} if sop else frozenset())
    return Access(
        door=context.door,
        action=action,
        actor=context.actor,
        resource_types=IMAGING_TYPES,
        patient_query=tuple(query),
        studies=found.get("StudyInstanceUID", frozenset()),
        series=found.get("SeriesInstanceUID", frozenset()),
        instances=instances,
        client_address=context.peer,
        request_id=context.request_id,
    )


def _values(identifier: Identifier, keyword: str) -> list[str]:
    value = identifier.get(keyword)
    if value is None:
        return []
    values = list(value) if isinstance(value, MultiValue) else str(value).split("\\")
    return [str(v).strip() for v in values if str(v).strip()]
