"""history at instance, type and system level, with `_since`, `_count` and paging."""

from __future__ import annotations

from urllib.parse import urlencode

from access.errors import AccessError
from access.shown import Shown
from fhir_server.bundle import bundle, history_entry
from fhir_server.exchange import FhirExchange, FhirResponse
from fhir_server.repository import Stored, now_ms
from fhir_server.search.dates import date_range
from fhir_server.search.restriction import history_scope
from fhir_server.services import FhirServices
from fhir_server.shown import item, show

DEFAULT_COUNT = 20
MAX_COUNT = 1000


async def history(exchange: FhirExchange, services: FhirServices) -> FhirResponse:
    route, request = exchange.route, exchange.request
    assert route is not None
    count = _int_param(request.param("_count"), "_count", DEFAULT_COUNT)
    count = max(0, min(count, MAX_COUNT))
    offset = _int_param(request.param("_getpagesoffset"), "_getpagesoffset", 0)
    since = _instant_param(request.param("_since"), "_since")
    # `_until` pins the first page's moment so later pages do not shift under writes
    until = _int_param(request.param("_until"), "_until", now_ms() + 1)
    versions, total = await _versions(exchange, services, since, count + offset, until)
    page = versions[offset:]
    base = request.base_url
    path = "/".join(p for p in (route.resource_type, route.resource_id, "_history") if p)
    common = [(k, v) for k, v in request.query if k not in ("_getpagesoffset", "_until")]
    common += [("_until", str(until)), ("_count", str(count))]
    links = [("self", f"{base}/{path}?{urlencode([*common, ('_getpagesoffset', str(offset))])}")]
    if offset + count < total:
        next_query = urlencode([*common, ("_getpagesoffset", str(offset + count))])
        links.append(("next", f"{base}/{path}?{next_query}"))
    if offset > 0:
        previous_query = urlencode([*common, ("_getpagesoffset", str(max(0, offset - count)))])
        links.append(("previous", f"{base}/{path}?{previous_query}"))
    entries = [history_entry(base, stored) for stored in page]
    exchange.touched.extend(f"{s.resource_type}/{s.id}" for s in page)
    if exchange.showing:
        items = [item(s.resource_type, s.id, s.raw, "version") for s in page]

        def build(shown: Shown[FhirResponse]) -> FhirResponse:
            kept = [e for i, e in enumerate(entries) if shown.visible_at(i)]
            # offsets count stored versions, so the paging links stay right; a total
            # could count versions hidden on other pages: given only for a single page
            single = offset == 0 and offset + count >= total
            shown_total = len(kept) if single else None
            return FhirResponse(200, bundle("history", kept, links, shown_total))

        return show(exchange, items, build)
    return FhirResponse(200, bundle("history", entries, links, total))


async def _versions(
    exchange: FhirExchange, services: FhirServices, since: int | None, count: int, until: int
) -> tuple[list[Stored], int]:
    """The newest `count` versions and how many in all. A restriction is part of the
    query (the resources it allows, by primary key), so totals and offsets count only
    what the access may see."""
    route, repository = exchange.route, services.repository
    assert route is not None
    scope = await history_scope(
        repository.search_engine(), route.resource_type, route.resource_id, exchange.restriction
    )
    if scope is None:
        return await repository.history(
            route.resource_type, route.resource_id, since, count, before_ms=until
        )
    versions, total = await repository.history_of(list(scope.resources), since, count, until)
    if scope.others is not None:
        more, more_total = await repository.history(
            None, None, since, count, before_ms=until, narrowed=scope.others
        )
        newest = sorted(
            [*versions, *more], key=lambda s: (s.last_updated_ms, s.version), reverse=True
        )
        versions, total = newest[:count], total + more_total
    return versions, total


def _int_param(value: str | None, name: str, default: int) -> int:
    if value is None or value == "":
        return default
    if not value.isdigit():
        raise AccessError("MB-1016", f"{name} must be a non-negative integer", expression=name)
    return int(value)


def _instant_param(value: str | None, name: str) -> int | None:
    if value is None:
        return None
    bounds = date_range(value.replace(" ", "+"))
    if bounds is None:
        raise AccessError("MB-1016", f"{name} must be a FHIR instant", expression=name)
    return bounds[0]
