"""`medbridge dicom pending [--retry]` with no server running, as one access of the local
operator (Action.ADMIN, the operation's name as its event) through the pipeline every
door shares: an authorize hook refuses it before the upkeep rows are read or unparked,
and an audit hook sees it, as when the running server's `/admin` route runs it."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from access.access import Access, Action
from access.context import Door, RequestContext, operator
from access.errors import AccessError
from access.pipeline import Exchange, Pipeline
from imaging import upkeep
from imaging.fhir_link import StudyLinker

Payload = dict[str, Any]
OPERATIONS: dict[str, Callable[[StudyLinker, Payload], Awaitable[Payload]]] = {
    "dicom/pending": upkeep.pending,
    "dicom/retry": upkeep.retry,
}


@dataclass(frozen=True, slots=True)
class Call:
    name: str
    payload: Payload


class UpkeepDoor:
    def __init__(self, linker: StudyLinker) -> None:
        self.linker = linker
        self.pipeline: Pipeline[Call, Payload] = Pipeline(
            _describe, self._act, _refused, share_hooks_with=linker.router.pipeline
        )

    async def run(self, name: str, payload: Payload) -> Payload:
        """The operation's answer; a refusal is `{"error": ..., "code": "MB-..."}`."""
        context = RequestContext(Door.INTERNAL, actor=operator())
        return await self.pipeline.handle(Exchange(Call(name, payload), context))

    async def _act(self, exchange: Exchange[Call, Payload]) -> Payload:
        call = exchange.request
        try:
            return await OPERATIONS[call.name](self.linker, call.payload)
        except (KeyError, ValueError) as error:
            raise AccessError("MB-1004", str(error)) from error


def _describe(exchange: Exchange[Call, Payload]) -> None:
    context = exchange.context
    exchange.access = Access(
        Door.INTERNAL, Action.ADMIN, context.actor, event=exchange.request.name,
        request_id=context.request_id,
    )  # fmt: skip


def _refused(exchange: Exchange[Call, Payload], error: AccessError) -> Payload:
    return {"error": error.diagnostics, "code": error.code}


def refusal(answer: Payload) -> str | None:
    """The refusal an answer carries (`code: diagnostics`), None for a real answer."""
    if "code" in answer and "error" in answer:
        return f"{answer['code']}: {answer['error']}"
    return None
