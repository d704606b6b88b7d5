"""The pynetdicom event handlers: each checks the peer, hops into the loop, answers a status.

They run on pynetdicom's association threads. All MongoDB and object-store work is a
coroutine handed to the server's loop by `LoopBridge` with a deadline below the DIMSE
timeout; every path ends in a DIMSE status (see `status.attempt`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any, TypeVar

from pydicom.dataset import Dataset
from pynetdicom.events import Event
from pynetdicom.presentation import build_context

from access.access import Action
from access.budget import Budget
from access.context import Actor, Door, RequestContext
from access.errors import AccessError
from access.restriction import Restriction
from imaging.dimse import query, retrieve, worklist
from imaging.dimse.bridge import LoopBridge
from imaging.dimse.config import DimseConfig
from imaging.dimse.door import DimseDoor
from imaging.dimse.matching import check_wildcards
from imaging.dimse.part10 import part10
from imaging.dimse.sop_classes import PATIENT_ROOT, ModalityWorklistFind, Verification
from imaging.dimse.status import (
    CANCEL,
    NOT_AUTHORIZED,
    OUT_OF_RESOURCES_MATCHES,
    PENDING,
    SUCCESS,
    UNABLE_TO_PROCESS,
    attempt,
)
from imaging.fhir_link import StudyLinker
from imaging.index import DicomIndex
from imaging.ingest import Ingestor, IngestOutcome
from imaging.objectstore import ObjectStore
from imaging.shown_rows import row_items

log = logging.getLogger(__name__)
WORKLIST_SCOPES = frozenset({"system/ServiceRequest.rs", "system/Patient.rs"})
FindYield = tuple[int, Dataset | None]
T = TypeVar("T")


@dataclass(slots=True)
class Archive:
    """What the handlers work on: the one ingest path, the index, the objects, FHIR."""

    ingestor: Ingestor
    index: DicomIndex
    store: ObjectStore
    worklist: worklist.Worklist | None = None
    linker: StudyLinker | None = None
    door: DimseDoor = field(default_factory=DimseDoor)  # the pipeline every service passes
    budget: Budget = field(default_factory=Budget)  # wildcard lengths and other caps


def calling_ae(event: Event) -> str:
    return str(event.assoc.requestor.ae_title).strip()


def _model(event: Event) -> str:
    return "patient" if str(event.request.AffectedSOPClassUID) in PATIENT_ROOT else "study"


class Handlers:
    def __init__(self, config: DimseConfig, bridge: LoopBridge, archive: Archive) -> None:
        self.config = config
        self.bridge = bridge
        self.archive = archive

    def _through(
        self,
        action: Action,
        event: Event,
        work: Callable[[Restriction], Awaitable[T]],
        rows: bool = False,
    ) -> T:
        """`work` on the loop, as the act of a pipeline pass for the calling AE title."""
        address = getattr(event.assoc.requestor, "address", None)
        peer = str(address) if address else None
        identifier, sop = None, None
        if action is Action.C_STORE:
            sop = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "") or None
        elif action is not Action.C_ECHO:
            identifier = event.identifier
        index = self.archive.index
        describe = partial(row_items, index) if rows else None
        run = self.archive.door.run(
            action, calling_ae(event), work, peer,
            identifier=identifier, sop_instance=sop, describe=describe,
        )  # fmt: skip
        return self.bridge.run(run)

    def _allowed(self, event: Event, service: str) -> bool:
        if self.config.allows(calling_ae(event), service):
            return True
        log.info("DIMSE %s refused (MB-4001): calling AE without that service", service)
        return False

    # C-ECHO / C-STORE ------------------------------------------------------------------

    def on_echo(self, event: Event) -> int:
        if not self._allowed(event, "echo"):
            return NOT_AUTHORIZED
        with attempt("C-ECHO", NOT_AUTHORIZED) as answer:
            # a pass like every other service: hooks may refuse an AE even its echo
            answer.status = self._through(Action.C_ECHO, event, _echo)
        return answer.status

    def on_store(self, event: Event) -> int | Dataset:
        if not self._allowed(event, "store"):
            return NOT_AUTHORIZED
        with attempt("C-STORE") as answer:
            # the Part 10 bytes exactly as received: no decoding, no transcoding
            data = part10(event)
            source = f"dimse:{calling_ae(event)}"
            issuer, study = self._issuer_to_note(event, data)
            outcome = self._through(
                Action.C_STORE, event, lambda _: self._store(data, source, study, issuer)
            )
            answer.status = outcome.status
            if not outcome.ok:
                log.info("C-STORE failed: %s", outcome.code)
                return _status(outcome.status, outcome.reason)
        return answer.status

    def _issuer_to_note(self, event: Event, data: bytes) -> tuple[str | None, str | None]:
        """The calling AE's issuer and the study it must be noted for (imaging.issuers);
        the header is read here, on the association's thread, and only for such AEs."""
        issuer = self.config.issuer(calling_ae(event))
        linker = self.archive.linker
        if linker is None or issuer is None:
            return None, None
        return issuer, linker.issuers.study_to_note(data, issuer)

    async def _store(
        self, data: bytes, source: str, study: str | None, issuer: str | None
    ) -> IngestOutcome:
        """Note the issuer first, so the ImagingStudy upkeep never meets the study
        without it; then the one ingest path."""
        if study and issuer and self.archive.linker is not None:
            await self.archive.linker.issuers.note(study, issuer)
        return await self.archive.ingestor.ingest(data, source)

    def on_released(self, event: Event) -> None:
        """After an association: let the ImagingStudy upkeep catch up on what arrived."""
        if self.archive.linker is not None:
            linker = self.archive.linker
            self.bridge.loop.call_soon_threadsafe(linker.schedule)

    # C-FIND ----------------------------------------------------------------------------

    def on_find(self, event: Event) -> Iterator[FindYield]:
        if str(event.request.AffectedSOPClassUID) == ModalityWorklistFind:
            yield from self._worklist(event)
            return
        if not self._allowed(event, "find"):
            yield NOT_AUTHORIZED, None
            return
        rows: list[dict[str, Any]] | None = None
        with attempt("C-FIND", UNABLE_TO_PROCESS) as answer:
            parsed = query.parse_identifier(
                event.identifier, _model(event), self.archive.budget.max_wildcard_chars
            )
            index = self.archive.index
            rows = self._through(
                Action.C_FIND, event, lambda seen: query.find(index, parsed, seen), rows=True
            )
        if rows is None:
            yield answer.status, None
            return
        yield from _pending(
            event, rows, lambda row: query.response(row, parsed, self.config.ae_title)
        )

    def _worklist(self, event: Event) -> Iterator[FindYield]:
        if not self._allowed(event, "worklist") or self.archive.worklist is None:
            yield NOT_AUTHORIZED, None
            return
        records: list[worklist.Record] | None = None
        with attempt("MWL C-FIND", UNABLE_TO_PROCESS) as answer:
            check_wildcards(event.identifier, self.archive.budget.max_wildcard_chars)
            parsed = worklist.parse_worklist(event.identifier)
            context = worklist_context(calling_ae(event))
            orders = self.archive.worklist
            records = self._through(Action.MWL, event, lambda _: orders.records(parsed, context))
        if records is None:
            yield answer.status, None
            return
        yield from _pending(event, records, lambda record: worklist.response(record, parsed))

    # C-MOVE / C-GET --------------------------------------------------------------------

    def _rows(self, event: Event) -> tuple[list[dict[str, Any]] | None, int]:
        with attempt("retrieve", OUT_OF_RESOURCES_MATCHES) as answer:
            index, identifier, model = self.archive.index, event.identifier, _model(event)
            action = Action.C_MOVE if getattr(event, "move_destination", None) else Action.C_GET
            rows = self._through(
                action,
                event,
                lambda seen: retrieve.instances_for(index, identifier, model, seen),
                rows=True,
            )
            return rows, SUCCESS
        return None, answer.status

    def _datasets(self, event: Event, rows: list[dict[str, Any]]) -> Iterator[FindYield]:
        for row in rows:
            if event.is_cancelled:
                yield CANCEL, None
                return
            dataset: Dataset | None = None
            with attempt("retrieve read"):
                data = self.bridge.run(self.archive.store.get(str(row["key"])))
                dataset = retrieve.decode(data)
            if dataset is None:
                # counted as a failed sub-operation; the others go on
                failed = Dataset()
                failed.SOPInstanceUID = str(row["_id"])
                yield PENDING, failed
                continue
            yield PENDING, dataset

    def on_move(self, event: Event) -> Iterator[Any]:
        destination = str(event.move_destination).strip()
        peer = self.config.peers.get(destination)
        if not self._allowed(event, "move"):
            yield None, None
            return
        if peer is None or peer.host is None or peer.port is None:
            log.info("C-MOVE refused (MB-4003): destination not in the peers table")
            yield None, None
            return
        rows, status = self._rows(event)
        # pynetdicom associates with the destination before it takes our status, so even
        # a refused move offers a context the destination can accept
        contexts = retrieve.contexts_for(rows) if rows else [build_context(Verification)]
        yield peer.host, peer.port, {"contexts": contexts}
        if rows is None:
            yield 1
            yield status, None
            return
        yield len(rows)
        yield from self._datasets(event, rows)

    def on_get(self, event: Event) -> Iterator[Any]:
        if not self._allowed(event, "get"):
            yield 1
            yield NOT_AUTHORIZED, None
            return
        rows, status = self._rows(event)
        if rows is None:
            yield 1
            yield status, None
            return
        yield len(rows)
        yield from self._datasets(event, rows)


async def _echo(_: Restriction) -> int:
    return SUCCESS


def _pending(
    event: Event, items: list[Any], render: Callable[[Any], Dataset]
) -> Iterator[FindYield]:
    """Pending responses until done or cancelled; a response that cannot be built ends
    the search with a failure status instead of an exception in pynetdicom."""
    for item in items:
        if event.is_cancelled:
            yield CANCEL, None
            return
        identifier: Dataset | None = None
        with attempt("C-FIND response", UNABLE_TO_PROCESS) as failed:
            identifier = render(item)
        if identifier is None:
            yield failed.status, None
            return
        yield PENDING, identifier
    yield SUCCESS, None


def _status(status: int, reason: str | None) -> Dataset:
    """A C-STORE failure with its reason in ErrorComment (no patient data in it)."""
    answer = Dataset()
    answer.Status = status
    if reason:
        answer.ErrorComment = reason[:64]
    return answer


def worklist_context(ae_title: str) -> RequestContext:
    return RequestContext(Door.DIMSE, actor=Actor("dicom-ae", ae_title), scopes=WORKLIST_SCOPES)


__all__ = ["AccessError", "Archive", "Handlers", "worklist_context"]
