"""`medbridge dicom import` in-process as accesses: each batch of files is one pass through
the pipeline every door shares (Action.IMPORT by the local operator), so an authorize hook
can refuse an import before anything is stored and an audit hook sees every one."""

from __future__ import annotations

from access.access import Access, Action
from access.context import Door, RequestContext, operator
from access.errors import AccessError
from access.pipeline import Exchange, Pipeline
from imaging.ingest import IngestOutcome
from imaging.services import Imaging
from imaging.sources import Source

SOURCE = "import"  # the ingest source recorded for the instances


class ImportDoor:
    def __init__(self, imaging: Imaging) -> None:
        self.imaging = imaging
        self.pipeline: Pipeline[list[Source], list[IngestOutcome]] = Pipeline(
            _describe, self._act, _refused, share_hooks_with=imaging.linker.router.pipeline
        )

    async def ingest(self, batch: list[Source]) -> list[IngestOutcome]:
        """One outcome per source, in order; all refused when a hook refuses the batch."""
        context = RequestContext(Door.INTERNAL, actor=operator())
        return await self.pipeline.handle(Exchange(list(batch), context))

    async def _act(
        self, exchange: Exchange[list[Source], list[IngestOutcome]]
    ) -> list[IngestOutcome]:
        items = [source.data or b"" for source in exchange.request]
        outcomes = await self.imaging.ingestor.ingest_many(items, SOURCE)
        exchange.touched.extend(f"study:{o.study}" for o in outcomes if o.ok and o.study)
        return outcomes


def _describe(exchange: Exchange[list[Source], list[IngestOutcome]]) -> None:
    context = exchange.context
    exchange.access = Access(
        Door.INTERNAL, Action.IMPORT, context.actor, request_id=context.request_id
    )


def _refused(
    exchange: Exchange[list[Source], list[IngestOutcome]], error: AccessError
) -> list[IngestOutcome]:
    """Every file of the batch failed with the refusal's catalog code and DIMSE status."""
    return [
        IngestOutcome(error.entry.dimse, code=error.code, reason=error.diagnostics)
        for _ in exchange.request
    ]
