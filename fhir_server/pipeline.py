"""The ordered stages every request passes through, whatever door it came in by.

authenticate -> authorize -> consent-decide -> act -> consent-show -> audit, and
on-error when anything fails. Routes never call stages: the dispatcher does, so a new
route cannot skip authorization, consent or audit. Intervention hooks may abort the
request by raising `FhirError`; notification hooks (metrics, tracing) are logged and
never break a request.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum

from pymongo.errors import DuplicateKeyError

from fhir_server import store_errors
from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.exchange import FhirRequest, FhirResponse, Route

log = logging.getLogger(__name__)


class Stage(StrEnum):
    AUTHENTICATE = "authenticate"
    AUTHORIZE = "authorize"
    CONSENT_DECIDE = "consent-decide"
    ACT = "act"
    CONSENT_SHOW = "consent-show"
    AUDIT = "audit"
    ON_ERROR = "on-error"


BEFORE_ACT = (Stage.AUTHENTICATE, Stage.AUTHORIZE, Stage.CONSENT_DECIDE)


@dataclass(slots=True)
class Exchange:
    """One request on its way through the pipeline."""

    request: FhirRequest
    context: RequestContext
    route: Route | None = None
    response: FhirResponse | None = None
    error: FhirError | None = None
    touched: list[str] = field(default_factory=list)  # "Type/id" read or written, for audit


Hook = Callable[[Exchange], Awaitable[None]]
Act = Callable[[Exchange], Awaitable[FhirResponse]]
Render = Callable[[Exchange, FhirError], FhirResponse]
Prepare = Callable[[Exchange], None]


@dataclass(slots=True)
class _Registered:
    hook: Hook
    intervention: bool
    name: str


class Pipeline:
    """Runs `prepare` (parse the route), then the stages in order around `act`."""

    def __init__(
        self,
        prepare: Prepare,
        act: Act,
        render_error: Render,
        share_hooks_with: Pipeline | None = None,
    ) -> None:
        self._prepare = prepare
        self._act = act
        self._render_error = render_error
        # the doors (FHIR, DICOMweb, DIMSE) each parse and act in their own way, but share
        # one set of hooks: an authorization, consent or audit hook is registered once
        # and then applies to every door, including doors added later
        self._hooks: dict[Stage, list[_Registered]] = (
            share_hooks_with._hooks if share_hooks_with is not None else {s: [] for s in Stage}
        )

    def intervene(self, stage: Stage, hook: Hook, name: str | None = None) -> None:
        """Add a hook that may abort the request (raise FhirError) at `stage`."""
        if stage is Stage.ACT:
            raise ValueError("act is the router's; hook the stages around it")
        self._hooks[stage].append(_Registered(hook, True, name or hook.__qualname__))

    def notify(self, stage: Stage, hook: Hook, name: str | None = None) -> None:
        """Add a hook that observes `stage`; its failures are logged and ignored."""
        self._hooks[stage].append(_Registered(hook, False, name or hook.__qualname__))

    def hooks(self, stage: Stage) -> list[str]:
        return [registered.name for registered in self._hooks[stage]]

    async def handle(self, exchange: Exchange) -> FhirResponse:
        try:
            self._prepare(exchange)
            for stage in BEFORE_ACT:
                await self._run(stage, exchange)
            exchange.response = await self._act(exchange)
            await self._run(Stage.CONSENT_SHOW, exchange)
        except FhirError as error:
            await self._fail(exchange, error)
        except Exception as unexpected:
            if isinstance(unexpected, DuplicateKeyError) or store_errors.transient(unexpected):
                # a store conflict no write path turned into its answer is still a conflict
                await self._fail(exchange, FhirError("MB-1011"))
            elif store_errors.refused_query(unexpected):
                # what the store said may quote the search value: DEBUG only
                log.debug("store refused the query of %s: %s", exchange.context.request_id,
                          unexpected)  # fmt: skip
                await self._fail(exchange, FhirError("MB-1066"))
            else:
                # the type at ERROR, the traceback (which may quote patient data) at DEBUG only
                log.error(
                    "unexpected %s handling request %s",
                    type(unexpected).__name__,
                    exchange.context.request_id,
                )
                log.debug("traceback of request %s", exchange.context.request_id, exc_info=True)
                await self._fail(exchange, FhirError("MB-1000"))
        try:
            await self._run(Stage.AUDIT, exchange)
        except Exception as failure:
            # An access that cannot be audited is not answered with data.
            log.error(
                "audit failed (%s) for request %s",
                type(failure).__name__,
                exchange.context.request_id,
            )
            log.debug("audit traceback", exc_info=True)
            exchange.response = self._render_error(exchange, FhirError("MB-1000"))
        assert exchange.response is not None
        return exchange.response

    async def _fail(self, exchange: Exchange, error: FhirError) -> None:
        exchange.error = error
        exchange.response = self._render_error(exchange, error)
        try:
            await self._run(Stage.ON_ERROR, exchange)
        except Exception as failure:
            log.error(
                "on-error hook failed (%s) for request %s",
                type(failure).__name__,
                exchange.context.request_id,
            )

    async def _run(self, stage: Stage, exchange: Exchange) -> None:
        for registered in self._hooks[stage]:
            if registered.intervention:
                await registered.hook(exchange)
                continue
            try:
                await registered.hook(exchange)
            except Exception as failure:
                log.warning(
                    "notification hook %s failed at %s: %s",
                    registered.name,
                    stage,
                    type(failure).__name__,
                )
