"""search-type: GET /{type}?params, POST /{type}/_search, compartment search
(/Patient/{id}/{type}) and Patient/{id}/$everything, answered as searchset Bundles."""

from __future__ import annotations

from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlencode

import orjson

from access.errors import AccessError
from access.shown import Shown
from fhir_server.bundle import bundle
from fhir_server.exchange import FhirExchange, FhirRequest, FhirResponse
from fhir_server.search.compile import compile_criterion
from fhir_server.search.engine import Engine
from fhir_server.search.keys import key
from fhir_server.search.nodes import Clause, exact
from fhir_server.search.page import Page, documents, run_page
from fhir_server.search.parameters import patient_compartment
from fhir_server.search.request import MAX_COUNT, SearchRequest, parse_search
from fhir_server.search.restriction import restriction_clauses
from fhir_server.search.shape import shape
from fhir_server.services import FhirServices
from fhir_server.shown import item, not_shown, show

FORM = "application/x-www-form-urlencoded"


async def search(exchange: FhirExchange, services: FhirServices) -> FhirResponse:
    route, request = exchange.route, exchange.request
    assert route is not None
    assert route.resource_type
    resource_type = route.resource_type
    patient = route.compartment
    search_request = parse_search(
        resource_type,
        _params(request),
        strict=_strict(request),
        base_url=request.base_url,
        budget=services.budget,
    )
    clauses = [
        compile_criterion(resource_type, name, value, request.base_url)
        for name, value in search_request.criteria
    ]
    path = resource_type
    clauses += access_clauses(exchange, resource_type)
    if patient is not None:
        clauses.append(compartment_clause(resource_type, patient))
        path = f"Patient/{patient}/{resource_type}"
    restriction = exchange.restriction
    engine = services.repository.search_engine().limited(
        lambda target: restriction_clauses(target, restriction)
    )
    page = await run_page(
        engine,
        search_request,
        clauses,
        search_request.summary != "count",
        restriction=exchange.restriction,
    )
    entries = _entries(request.base_url, resource_type, page, search_request)
    exchange.touched.extend(f"{resource_type}/{doc['_id']}" for doc in page.matches)
    exchange.touched.extend(f"{t}/{doc['_id']}" for t, doc in page.included)
    links = _links(f"{request.base_url}/{path}", search_request, page)
    if exchange.showing:
        items = [item(resource_type, doc["_id"], doc["raw"]) for doc in page.matches]
        items += [item(t, doc["_id"], doc["raw"], "include") for t, doc in page.included]
        counting = page.total is not None and (
            page.next_token is not None or page.previous_token is not None or not entries
        )
        if counting and exchange.hiding:
            # a total must not count what consent-show hides on any page: the hooks see
            # every match (only when a consent-show hook that hides is registered and a
            # total asked)
            items += [
                item(resource_type, doc["_id"], doc["raw"], "counted")
                for doc in await _other_matches(engine, search_request, clauses, page)
            ]
        every_match = not counting or exchange.hiding  # the items hold every match
        return show(
            exchange, items, lambda shown: _shown_page(shown, entries, links, page, every_match)
        )
    return FhirResponse(200, bundle("searchset", entries, links, page.total))


def _shown_page(
    shown: Shown[FhirResponse],
    entries: list[dict[str, Any]],
    links: list[tuple[str, str]],
    page: Page,
    every_match: bool,
) -> FhirResponse:
    """The page without what consent-show hid. Paging tokens come from the stored order,
    so next/previous still work; the total counts the visible matches of every page
    (when the items are only this page's, no hook hides: the total less what one hid)."""
    total = None
    if page.total is not None and every_match:
        total = sum(1 for shown_item in shown.visible if shown_item.mode != "include")
    elif page.total is not None:
        total = page.total - sum(1 for hidden in shown.hidden if hidden.mode == "match")
    kept = [entry for i, entry in enumerate(entries) if shown.visible_at(i)]
    return FhirResponse(200, bundle("searchset", kept, links, total))


async def _other_matches(
    engine: Engine, search_request: SearchRequest, clauses: list[Clause], page: Page
) -> list[dict[str, Any]]:
    """The matches not on `page`. The page's search already found their ids (its
    restriction included), so they are read by id, not matched a second time; only a
    search without clauses (every resource of the type) pages through them again."""
    on_page = {doc["_id"] for doc in page.matches}
    if page.ids is not None:
        return await documents(engine, search_request.resource_type, page.ids - on_page)
    return [
        doc
        for doc in await _all_matches(engine, search_request, clauses)
        if doc["_id"] not in on_page
    ]


async def _all_matches(
    engine: Engine, search_request: SearchRequest, clauses: list[Clause]
) -> list[dict[str, Any]]:
    request = replace(
        search_request, count=MAX_COUNT, page=None, total="none", summary=None,
        elements=(), includes=(),
    )  # fmt: skip
    found: list[dict[str, Any]] = []
    while True:
        page = await run_page(engine, request, clauses)
        found.extend(page.matches)
        if page.next_token is None:
            return found
        request = replace(request, page=page.next_token)


async def everything(exchange: FhirExchange, services: FhirServices) -> FhirResponse:
    """Patient/{id}/$everything: the patient and every resource in its compartment."""
    route, request = exchange.route, exchange.request
    assert route is not None
    if route.resource_type != "Patient" or route.resource_id is None:
        raise AccessError("MB-1013", "$everything is defined on Patient/{id}")
    patient_id = route.resource_id
    allowed = exchange.restriction.patients
    if allowed is not None and patient_id not in allowed:
        # outside the restriction: the same answer as for a patient that does not exist
        raise not_shown(f"Patient/{patient_id}")
    engine = services.repository.search_engine()
    entries: list[dict[str, Any]] = []
    found: list[tuple[str, dict[str, Any]]] = []  # beside entries, for consent-show
    # the compartment table lists Patient itself (by `link`): read it once, first. Not
    # AuditEvent: who opened the record is not the record (every $everything would grow
    # by its own audit), and a Patient no record names must look unnamed (a header-made
    # Patient is retired by this test); the access log is `AuditEvent?patient=` (docs/audit.md)
    members = patient_compartment().keys() - {"Patient", "AuditEvent"}
    for resource_type in ("Patient", *sorted(members)):
        clause = compartment_clause(resource_type, patient_id)
        page = await run_page(
            engine, SearchRequest(resource_type, count=MAX_COUNT, total="none"), [clause]
        )
        entries.extend(_entries(request.base_url, resource_type, page, None))
        found.extend((resource_type, doc) for doc in page.matches)
        exchange.touched.extend(f"{resource_type}/{doc['_id']}" for doc in page.matches)
    if not entries or not entries[0]["fullUrl"].endswith(f"/Patient/{patient_id}"):
        raise AccessError("MB-1002", f"Patient/{patient_id} is not known")
    links = [("self", f"{request.base_url}/Patient/{patient_id}/$everything")]
    if exchange.showing:
        items = [item(t, doc["_id"], doc["raw"]) for t, doc in found]

        def build(shown: Shown[FhirResponse]) -> FhirResponse:
            if not shown.visible_at(0):  # the Patient itself
                raise not_shown(f"Patient/{patient_id}")
            kept = [entry for i, entry in enumerate(entries) if shown.visible_at(i)]
            return FhirResponse(200, bundle("searchset", kept, links, len(kept)))

        return show(exchange, items, build)
    return FhirResponse(200, bundle("searchset", entries, links, len(entries)))


def access_clauses(exchange: FhirExchange, resource_type: str) -> list[Clause]:
    """The access's restriction (the allowed patients' compartments) compiled into the
    query, so totals and paging stay right (types holding no patient data are not
    narrowed); per-resource consent runs afterwards, at consent-show."""
    return restriction_clauses(resource_type, exchange.restriction)


def compartment_clause(resource_type: str, patient_id: str) -> Clause:
    """Membership of the Patient compartment (CompartmentDefinition-patient) as a clause."""
    if resource_type == "Patient":
        return Clause((exact("c", key("_id", patient_id), cost=0),))
    codes = patient_compartment().get(resource_type)
    if not codes:
        raise AccessError(
            "MB-1016", f"{resource_type} is not in the Patient compartment", expression="type"
        )
    reference = f"Patient/{patient_id}"
    return Clause(tuple(exact("k", key(code, reference)) for code in codes))


def _params(request: FhirRequest) -> list[tuple[str, str]]:
    params = list(request.query)
    if request.method.upper() == "POST" and request.body:
        content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
        if content_type != FORM:
            raise AccessError("MB-1014", f"POST _search takes {FORM}")
        params += parse_qsl(request.body.decode("utf-8", "replace"), keep_blank_values=True)
    return params


def _strict(request: FhirRequest) -> bool:
    prefer = (request.header("prefer") or "").lower().replace(" ", "")
    return "handling=strict" in prefer


def _entries(
    base_url: str, resource_type: str, page: Page, request: SearchRequest | None
) -> list[dict[str, Any]]:
    summary = request.summary if request else None
    elements = request.elements if request else ()
    entries: list[dict[str, Any]] = [
        {
            "fullUrl": f"{base_url}/{resource_type}/{doc['_id']}",
            "resource": shape(doc["raw"], summary, elements),
            "search": {"mode": "match"},
        }
        for doc in page.matches
    ]
    entries.extend(
        {
            "fullUrl": f"{base_url}/{included_type}/{doc['_id']}",
            "resource": orjson.Fragment(doc["raw"]),
            "search": {"mode": "include"},
        }
        for included_type, doc in page.included
    )
    return entries


def _links(url: str, request: SearchRequest, page: Page) -> list[tuple[str, str]]:
    applied = list(request.applied)
    if not any(name == "_count" for name, _ in applied):
        applied.append(("_count", str(request.count)))
    current = [*applied, ("_page", request.page)] if request.page else applied
    links = [("self", f"{url}?{urlencode(current)}")]
    if page.next_token:
        links.append(("next", f"{url}?{urlencode([*applied, ('_page', page.next_token)])}"))
    if page.previous_token:
        links.append(("previous", f"{url}?{urlencode([*applied, ('_page', page.previous_token)])}"))
    return links
