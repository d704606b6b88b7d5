"""The ordered stages every request passes through, whatever door it came in by.

authenticate -> authorize -> consent-decide -> act -> post-commit -> consent-show ->
audit, and on-error when anything fails. post-commit runs once the act (and with it the
unit of work) has committed, for notification hooks only: what was written stays
written, so nothing there may refuse. Routes never call stages: the dispatcher does, so a new
route cannot skip authorization, consent or audit. Intervention hooks may abort the
request by raising `AccessError`; notification hooks (metrics, tracing) are logged and
never break a request.

The pipeline knows no protocol: each door brings its own request and response types
(`Exchange[RequestT, ResponseT]`), its own `prepare` (parse), `act` and error rendering.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from enum import StrEnum
from functools import partial
from typing import Any, Generic, TypeVar

from access.access import Access
from access.context import RequestContext
from access.errors import AccessError
from access.restriction import UNRESTRICTED, Restriction
from access.shown import Shown
from access.unit import current_unit

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

log = logging.getLogger(__name__)


class Stage(StrEnum):
    AUTHENTICATE = "authenticate"
    AUTHORIZE = "authorize"
    CONSENT_DECIDE = "consent-decide"
    ACT = "act"
    POST_COMMIT = "post-commit"
    CONSENT_SHOW = "consent-show"
    AUDIT = "audit"
    ON_ERROR = "on-error"


BEFORE_ACT = (Stage.AUTHENTICATE, Stage.AUTHORIZE, Stage.CONSENT_DECIDE)


@dataclass(slots=True)
class Exchange(Generic[RequestT, ResponseT]):
    """One request on its way through the pipeline."""

    request: RequestT
    context: RequestContext
    # the door's own parse of the request (a FHIR `Route`); hooks read `access` instead
    route: Any = None
    response: ResponseT | None = None
    # what this access is, filled by the door's prepare step before any stage runs
    access: Access | None = None
    # the access this one is part of (the batch of a bundle entry), for prepare to link
    parent: Access | None = None
    # set before act: a consent-show hook will read this exchange's items, so the act
    # describes what it would show as `items` and the answer is built after
    # consent-show, from what remains
    showing: bool = False
    # set with `showing` when one of those hooks may hide items: a search with a total
    # then also describes the matches of its other pages (items of mode `counted`), so
    # the total counts only what stays visible. A hook that only reads them (audit's
    # shown patients) costs the search no second read
    hiding: bool = False
    items: Shown[ResponseT] | None = None
    # what this access may see: authorize and consent-decide hooks narrow it (`narrow`),
    # the act compiles it into its one store query, so paging and counts stay right
    restriction: Restriction = UNRESTRICTED
    error: AccessError | None = None
    touched: list[str] = field(default_factory=list)  # "Type/id" read or written, for audit

    def narrow(self, restriction: Restriction) -> None:
        """Limit what this access may see further; a hook can never widen it."""
        self.restriction = self.restriction.narrowed(restriction)


# hooks are shared by every door, so they see an exchange of any request type
Hook = Callable[[Exchange[Any, Any]], Awaitable[None]]
Act = Callable[[Exchange[RequestT, ResponseT]], Awaitable[ResponseT]]
Render = Callable[[Exchange[RequestT, ResponseT], AccessError], ResponseT]
Prepare = Callable[[Exchange[RequestT, ResponseT]], None]
# whether a consent-show hook needs this exchange's items (`Exchange.showing`)
Wants = Callable[[Exchange[Any, Any]], bool]
# what an unexpected exception means, when a lower layer knows (a store conflict is a
# 409): the pipeline knows no store, so the door tells it
Explain = Callable[[Exception], AccessError | None]


def always(exchange: Exchange[Any, Any]) -> bool:
    return True


def never(exchange: Exchange[Any, Any]) -> bool:
    return False


@dataclass(slots=True)
class _Registered:
    hook: Hook
    intervention: bool
    name: str
    order: int
    # consent-show only: describing the answer as items costs (a search reads every
    # match for its total, DICOMweb reads the rows' patients), so it is done only when
    # a hook that reads items will act on this exchange
    wants_items: Wants = always
    # whether it may hide items (consent-show), or only reads them
    hides: bool = True


class Pipeline(Generic[RequestT, ResponseT]):
    """Runs `prepare` (parse the route), then the stages in order around `act`."""

    def __init__(
        self,
        prepare: Prepare[RequestT, ResponseT],
        act: Act[RequestT, ResponseT],
        render_error: Render[RequestT, ResponseT],
        share_hooks_with: Pipeline[Any, Any] | None = None,
        explain: Explain | None = None,
    ) -> None:
        self._prepare = prepare
        self._explain = explain
        self._act = act
        self._render_error = render_error
        # the doors (FHIR, DICOMweb, DIMSE) each parse and act in their own way, but share
        # one set of hooks: an authorization, consent or audit hook is registered once
        # and then applies to every door, including doors added later
        self._hooks: dict[Stage, list[_Registered]] = (
            share_hooks_with._hooks if share_hooks_with is not None else {s: [] for s in Stage}
        )

    def intervene(
        self,
        stage: Stage,
        hook: Hook,
        name: str | None = None,
        *,
        order: int = 0,
        wants_items: Wants = always,
        hides: bool = True,
    ) -> None:
        """Add a hook that may abort the request (raise AccessError) at `stage`.

        Hooks of a stage run by ascending `order`, ties in registration order. A
        consent-show hook's `wants_items` tells, after authorization, whether it will
        read this exchange's items; the act describes them only if one does. `hides`
        False: it never hides an item (`Exchange.hiding`)."""
        if stage is Stage.ACT:
            raise ValueError("act is the router's; hook the stages around it")
        if stage is Stage.POST_COMMIT:
            raise ValueError("post-commit comes after the commit: notify, not intervene")
        registered = _Registered(hook, True, name or hook.__qualname__, order, wants_items, hides)
        self._add(stage, registered)

    def notify(
        self,
        stage: Stage,
        hook: Hook,
        name: str | None = None,
        *,
        order: int = 0,
        wants_items: Wants = always,
        hides: bool = True,
    ) -> None:
        """Add a hook that observes `stage`; its failures are logged and ignored."""
        if stage is Stage.ACT:
            raise ValueError("act is the router's; hook the stages around it")
        registered = _Registered(hook, False, name or hook.__qualname__, order, wants_items, hides)
        self._add(stage, registered)

    def _add(self, stage: Stage, registered: _Registered) -> None:
        hooks = self._hooks[stage]
        hooks.append(registered)
        # stable sort: equal orders keep their registration order
        hooks.sort(key=lambda r: r.order)

    def has_hooks(self, stage: Stage) -> bool:
        return bool(self._hooks[stage])

    def hooks(self, stage: Stage) -> list[str]:
        """The names of the hooks of `stage`, in the order they run."""
        return [registered.name for registered in self._hooks[stage]]

    async def handle(self, exchange: Exchange[RequestT, ResponseT]) -> ResponseT:
        # an access inside a unit of work (a transaction Bundle's entry) notifies once the
        # unit commits and is audited once it ends, outside its store transaction
        unit = current_unit()
        try:
            self._prepare(exchange)
            if exchange.access is None:
                # a door that does not describe its accesses would blind every hook
                raise RuntimeError("the door's prepare step did not describe the access")
            for stage in BEFORE_ACT:
                await self._run(stage, exchange)
            wanting = [r for r in self._hooks[Stage.CONSENT_SHOW] if r.wants_items(exchange)]
            exchange.showing = bool(wanting)
            exchange.hiding = any(registered.hides for registered in wanting)
            exchange.response = await self._act(exchange)
            if unit is None:
                await self._run(Stage.POST_COMMIT, exchange)
            else:
                unit.post_commit.append(partial(self._run, Stage.POST_COMMIT, exchange))
            await self._run(Stage.CONSENT_SHOW, exchange)
            if exchange.items is not None:
                exchange.response = await exchange.items.built()
        except AccessError as error:
            await self._fail(exchange, error)
        except Exception as unexpected:
            known = self._explain(unexpected) if self._explain is not None else None
            if known is not None:
                await self._fail(exchange, known)
            else:
                # the type at ERROR, the traceback (which may quote patient data) at DEBUG
                log.error(
                    "unexpected %s handling request %s",
                    type(unexpected).__name__,
                    exchange.context.request_id,
                )
                log.debug("traceback of request %s", exchange.context.request_id, exc_info=True)
                await self._fail(exchange, AccessError("MB-1000"))
        if unit is not None:
            unit.audit.append(partial(self._run, Stage.AUDIT, exchange))
            assert exchange.response is not None
            return exchange.response
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
            # an audit hook that knows why (its store is unavailable: MB-1090) says so
            known = failure if isinstance(failure, AccessError) else AccessError("MB-1000")
            # a door that answers from `error` (DIMSE statuses) fails the access too
            exchange.error = known
            exchange.response = self._render_error(exchange, known)
        assert exchange.response is not None
        return exchange.response

    async def _fail(self, exchange: Exchange[RequestT, ResponseT], error: AccessError) -> None:
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

    async def _run(self, stage: Stage, exchange: Exchange[Any, Any]) -> None:
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
