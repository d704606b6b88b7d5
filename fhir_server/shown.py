"""The FHIR door's items: stored resources with the patients whose compartment holds them.

Only built when a consent-show hook is registered (`exchange.showing`); the answer is
then assembled from the visible items, still splicing their stored bytes.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson

from access.errors import AccessError
from access.shown import Item, Shown
from fhir_server.exchange import FhirExchange, FhirResponse
from fhir_server.search.extract import index_rows
from fhir_server.search.keys import key
from fhir_server.search.parameters import patient_compartment


def item(resource_type: str, resource_id: str, raw: bytes | None, mode: str = "match") -> Item:
    return Item(resource_type, resource_id, raw, patients_of(resource_type, resource_id, raw), mode)


def patients_of(resource_type: str, resource_id: str, raw: bytes | None) -> frozenset[str]:
    """Patient compartment membership (CompartmentDefinition-patient), as search has it."""
    if resource_type == "Patient":
        return frozenset({resource_id})
    codes = patient_compartment().get(resource_type)
    if raw is None or not codes:
        return frozenset()
    prefixes = [key(code, "Patient/") for code in codes]
    found: set[str] = set()
    for row in index_rows(orjson.loads(raw)):
        for prefix in prefixes:
            if row["k"].startswith(prefix):
                found.add(row["k"][len(prefix) :])
    return frozenset(found)


def show(
    exchange: FhirExchange,
    items: list[Item],
    build: Callable[[Shown[FhirResponse]], FhirResponse],
) -> FhirResponse:
    """Hand the items to consent-show; the pipeline builds the answer afterwards. What
    is hidden is no longer touched, so audit records what was shown."""

    def built(shown: Shown[FhirResponse]) -> FhirResponse:
        if shown.changed:
            hidden = {i.reference for i in shown.hidden}
            exchange.touched[:] = [t for t in exchange.touched if t not in hidden]
        return build(shown)

    exchange.items = Shown(items, built)
    return FhirResponse(200)  # replaced by the built answer


def not_shown(reference: str) -> AccessError:
    # the same answer as for a record that does not exist: hiding must not reveal it
    return AccessError("MB-1002", f"{reference} is not known")
