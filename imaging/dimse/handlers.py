"""The pynetdicom event handlers: each runs one pipeline pass on the loop, answers a status.

They run on pynetdicom's association threads. All MongoDB and object-store work is the
act of a pass handed to the server's loop by `LoopBridge` with a deadline below the DIMSE
timeout (a retrieve's pass reads and hands over its objects through `relay`); who may use
which service is the `dimse.ae-titles` authorize hook's decision, not the handlers'.
Every path ends in a DIMSE status (see `status.attempt`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.events import Event
from pynetdicom.presentation import build_context

from access.access import Action
from access.budget import Budget
from access.errors import AccessError
from imaging.dimse import query, relay, retrieve, worklist
from imaging.dimse.bridge import LoopBridge
from imaging.dimse.config import DimseConfig
from imaging.dimse.door import Deliver, DimseDoor, Identifier, Within, Work, stored_header
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
from imaging.dimse.tls import AGENT
from imaging.fhir_link import StudyLinker
from imaging.index import DicomIndex
from imaging.ingest import Ingestor, IngestOutcome, Oversize
from imaging.objectstore import ObjectStore
from imaging.shown_rows import row_items

log = logging.getLogger(__name__)
FindYield = tuple[int, Dataset | None]
Document = dict[str, Any]
# a C-MOVE refused before any selection is answered "move destination unknown" (A801)
# without associating with the destination: pynetdicom associates before it takes any
# other status, and a refused move must not reach out to its destination at all
REFUSED_MOVE = frozenset({"MB-4001", "MB-4003"})


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

    def _pass(
        self,
        action: Action,
        event: Event,
        work: Work[Any],
        rows: bool = False,
        deliver: Deliver | None = None,
        stored: Identifier | None = None,
    ) -> Coroutine[Any, Any, Any]:
        """One pipeline pass for the calling AE title with `work` as its act. The AE
        title's services are checked there, by the `dimse.ae-titles` authorize hook.
        A C-STORE's access names what its header says (`stored`)."""
        address = getattr(event.assoc.requestor, "address", None)
        peer = str(address) if address else None
        identifier: Identifier | None = None
        sop = None
        if action is Action.C_STORE:
            identifier = stored
            sop = str(getattr(event.request, "AffectedSOPInstanceUID", "") or "") or None
        elif action is not Action.C_ECHO:
            identifier = event.identifier
        index = self.archive.index
        describe = partial(row_items, index) if rows else None
        destination = None
        if action is Action.C_MOVE:
            title = str(event.move_destination).strip()[:16]  # an AE title is 16 at most
            known = self.config.peers.get(title)
            destination = (title, known.host if known is not None else None)
        return self.archive.door.run(
            action, calling_ae(event), work, peer,
            identifier=identifier, sop_instance=sop, describe=describe, deliver=deliver,
            agent=getattr(event.assoc, AGENT, None), destination=destination,
        )  # fmt: skip

    def _through(
        self,
        action: Action,
        event: Event,
        work: Work[Any],
        rows: bool = False,
        stored: Identifier | None = None,
    ) -> Any:
        """`work` on the loop, as the act of a pass; its result once the pass ended."""
        return self.bridge.run(self._pass(action, event, work, rows, stored=stored))

    # C-ECHO / C-STORE ------------------------------------------------------------------

    def on_echo(self, event: Event) -> int:
        with attempt("C-ECHO", NOT_AUTHORIZED) as answer:
            # a pass like every other service: hooks may refuse an AE even its echo
            answer.status = self._through(Action.C_ECHO, event, _echo)
        return answer.status

    def on_store(self, event: Event) -> int | Dataset:
        with attempt("C-STORE") as answer:
            # the Part 10 bytes exactly as received: no decoding, no transcoding
            data = part10(event)
            source = f"dimse:{calling_ae(event)}"
            outcome: IngestOutcome
            if isinstance(data, Oversize):
                # refused from what was kept of it: its header names it for the hooks
                ingestor = self.archive.ingestor
                outcome = self._through(
                    Action.C_STORE, event, lambda _: ingestor.refuse(data, source),
                    stored=stored_header(data.prefix),
                )  # fmt: skip
            else:
                issuer, study = self._issuer_to_note(event, data)
                outcome = self._through(
                    Action.C_STORE, event, lambda _: self._store(data, source, study, issuer),
                    stored=stored_header(data),
                )  # fmt: skip
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
        rows: list[Document] | None = None
        with attempt("C-FIND", UNABLE_TO_PROCESS) as answer:
            parsed = query.parse_identifier(
                event.identifier, _model(event), self.archive.budget.max_wildcard_chars
            )
            index = self.archive.index
            rows = self._through(
                Action.C_FIND, event, lambda within: query.find(index, parsed, within.restriction),
                rows=True,
            )  # fmt: skip
        if rows is None:
            yield answer.status, None
            return
        yield from _pending(
            event, rows, lambda row: query.response(row, parsed, self.config.ae_title)
        )

    def _worklist(self, event: Event) -> Iterator[FindYield]:
        if self.archive.worklist is None:
            yield NOT_AUTHORIZED, None
            return
        records: list[worklist.Record] | None = None
        with attempt("MWL C-FIND", UNABLE_TO_PROCESS) as answer:
            check_wildcards(event.identifier, self.archive.budget.max_wildcard_chars)
            parsed = worklist.parse_worklist(event.identifier)
            orders = self.archive.worklist
            # the FHIR search runs inside the MWL access, as its child (see worklist.py)
            records = self._through(
                Action.MWL, event, lambda within: orders.records(parsed, within)
            )
        if records is None:
            yield answer.status, None
            return
        yield from _pending(event, records, lambda record: worklist.response(record, parsed))

    # C-MOVE / C-GET --------------------------------------------------------------------

    def _retrieval(
        self, event: Event, action: Action, check: Callable[[], None] | None = None
    ) -> relay.Retrieval:
        """Start the retrieve's pass: it selects (after `check`), lets consent-show remove
        sub-operations, and reads and hands over each remaining object, all in its act."""
        handover = relay.Relay(self.bridge, patience=2 * self.config.dimse_timeout)
        index, identifier, model = self.archive.index, event.identifier, _model(event)

        async def select(within: Within) -> list[Document]:
            if check is not None:
                check()
            return await retrieve.instances_for(index, identifier, model, within.restriction)

        deliver = partial(relay.deliver, handover, self.archive.store)
        running = self._pass(action, event, select, rows=True, deliver=deliver)
        return relay.Retrieval(handover, self.bridge.submit(handover.around(running)))

    def _selected(
        self, retrieval: relay.Retrieval
    ) -> tuple[list[Document] | None, int, str | None]:
        """The rows to send, or (None, the refusal's status and catalog code)."""
        with attempt("retrieve", OUT_OF_RESOURCES_MATCHES) as answer:
            return retrieval.selected(), SUCCESS, None
        return None, answer.status, answer.code

    def on_move(self, event: Event) -> Iterator[Any]:
        destination = str(event.move_destination).strip()
        peer = self.config.peers.get(destination)

        def known() -> None:
            # inside the pass, so a move to an unknown destination is audited too
            if peer is None or peer.host is None or peer.port is None:
                raise AccessError("MB-4003", "move destination not in the peers table")

        retrieval = self._retrieval(event, Action.C_MOVE, known)
        try:
            rows, status, code = self._selected(retrieval)
            if code in REFUSED_MOVE or peer is None or peer.host is None or peer.port is None:
                yield None, None
                return
            # pynetdicom associates with the destination before it takes our status, so
            # even a failed selection offers a context the destination can accept
            contexts = retrieve.contexts_for(rows) if rows else [build_context(Verification)]
            yield peer.host, peer.port, {"contexts": contexts}
            if rows is None:
                yield 1
                yield status, None
                return
            yield len(rows)
            yield from retrieval.sub_operations(event)
        finally:
            retrieval.close()

    def on_get(self, event: Event) -> Iterator[Any]:
        retrieval = self._retrieval(event, Action.C_GET)
        try:
            rows, status, _ = self._selected(retrieval)
            if rows is None:
                yield 1
                yield status, None
                return
            yield len(rows)
            yield from retrieval.sub_operations(event)
        finally:
            retrieval.close()


async def _echo(_: Within) -> int:
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


__all__ = ["AccessError", "Archive", "Handlers"]
