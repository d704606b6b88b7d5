"""The DIMSE door of the one pipeline: every C-STORE, C-FIND, C-MOVE and C-GET passes
authenticate -> authorize -> consent -> act -> audit as the calling AE title.

Handlers never touch the archive except through `DimseDoor.run`, so an authorization,
consent or audit hook registered on `DimseDoor.pipeline` applies to every DIMSE service
as it does to REST and DICOMweb; a hook refuses with a AccessError, which `attempt`
turns into that error's DIMSE status (MB-4001 -> 0x0124).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from access.context import Actor, Door, RequestContext
from access.errors import AccessError
from fhir_server.errors import outcome
from fhir_server.exchange import FhirExchange, FhirPipeline, FhirRequest, FhirResponse, Route
from fhir_server.registry import Interaction

T = TypeVar("T")
WORK = "dimse.work"
RESULT = "dimse.result"


class DimseDoor:
    def __init__(self, share_hooks_with: FhirPipeline | None = None) -> None:
        self.pipeline = FhirPipeline(self._prepare, self._act, _render_error, share_hooks_with)

    async def run(
        self,
        service: str,
        calling_ae: str,
        work: Callable[[], Awaitable[T]],
        peer: str | None = None,
    ) -> T:
        """`work()` as the act of one pipeline pass; raises the AccessError of a refusal."""
        context = RequestContext(Door.DIMSE, actor=Actor("dicom-ae", calling_ae), peer=peer)
        context.notes[WORK] = work
        exchange = FhirExchange(FhirRequest("DIMSE", service), context)
        await self.pipeline.handle(exchange)
        if exchange.error is not None:
            raise exchange.error
        result: T = context.notes[RESULT]
        return result

    def _prepare(self, exchange: FhirExchange) -> None:
        exchange.route = Route(Interaction.OPERATION, None, None, None)

    async def _act(self, exchange: FhirExchange) -> FhirResponse:
        work: Callable[[], Awaitable[Any]] = exchange.context.notes[WORK]
        exchange.context.notes[RESULT] = await work()
        return FhirResponse(200)


def _render_error(exchange: FhirExchange, error: AccessError) -> FhirResponse:
    return FhirResponse.of(error.status, outcome(error))
