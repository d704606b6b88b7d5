"""A `Restriction` to some patients, compiled into the index queries of search and history.

An authorize or consent hook narrows an access with
`Exchange.narrow(Restriction(patients=...))`; the FHIR door then sees only resources in
the Patient compartment of an allowed patient. Membership is what the Patient
CompartmentDefinition says (`parameters.patient_compartment()`, a table generated from
it): a Patient by its id, another type by the reference rows of the parameters that
link it to its patient (`Observation.subject`, `ImagingStudy.patient`, ...). Types the
definition does not list (Organization, Practitioner, Endpoint ...) hold no patient data
and are not narrowed. Everything here is a query over the `<Type>_idx` rows, so totals,
`_summary=count` and paging count only what the access may see.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from access.restriction import Restriction
from fhir_server.registry import SERVED_TYPES
from fhir_server.search.engine import Engine
from fhir_server.search.keys import key
from fhir_server.search.nodes import Clause, exact
from fhir_server.search.parameters import patient_compartment

Document = dict[str, Any]


def holds_patient_data(resource_type: str) -> bool:
    """Whether resources of this type belong to a Patient compartment (are narrowed)."""
    return resource_type == "Patient" or resource_type in patient_compartment()


def patients_clause(resource_type: str, patients: frozenset[str]) -> Clause | None:
    """Membership of any allowed patient's compartment as one clause (its alternatives
    are OR-ed); None for a type that holds no patient data. No patients: a clause with
    no alternative, which matches nothing."""
    if resource_type == "Patient":
        return Clause(tuple(exact("c", key("_id", p)) for p in sorted(patients)))
    codes = patient_compartment().get(resource_type)
    if not codes:
        return None
    return Clause(
        tuple(exact("k", key(code, f"Patient/{p}")) for p in sorted(patients) for code in codes)
    )


def restriction_clauses(resource_type: str, restriction: Restriction) -> list[Clause]:
    """What a search of `resource_type` adds to its own clauses for this restriction."""
    patients = restriction.patients
    if patients is None:
        return []
    clause = patients_clause(resource_type, patients)
    return [] if clause is None else [clause]


async def visible_ids(
    engine: Engine, resource_type: str, ids: set[str], restriction: Restriction
) -> set[str]:
    """Those of `ids` the access may see: one indexed check per id for a few, one query
    per allowed key for many (`Engine.within`)."""
    clauses = restriction_clauses(resource_type, restriction)
    if not clauses or not ids:
        return ids
    return await engine.within(resource_type, clauses[0], ids)


@dataclass(frozen=True, slots=True)
class HistoryScope:
    """The versions a restricted history may list: every version of `resources` (found
    by the restriction's index query), and at system level the types that hold no
    patient data (`others`, a condition on the history documents)."""

    resources: tuple[tuple[str, str], ...]
    others: Document | None = None


async def history_scope(
    engine: Engine,
    resource_type: str | None,
    resource_id: str | None,
    restriction: Restriction,
) -> HistoryScope | None:
    """What a history at instance, type or system level may list; None when nothing is
    narrowed. A version is placed by its resource's current compartment (the index rows
    hold the current version): history lists a resource's versions exactly when search
    finds it."""
    if restriction.patients is None:
        return None
    types = [resource_type] if resource_type else list(SERVED_TYPES)
    narrowed = [t for t in types if holds_patient_data(t)]
    if not narrowed:
        return None
    resources: list[tuple[str, str]] = []
    for narrowed_type in narrowed:
        if resource_id is not None:
            ids = await visible_ids(engine, narrowed_type, {resource_id}, restriction)
        else:
            clauses = restriction_clauses(narrowed_type, restriction)
            ids = await engine.ids(narrowed_type, clauses) or set()
        resources.extend((narrowed_type, i) for i in sorted(ids))
    # types without patient data are shown whole
    others = {"t": {"$nin": narrowed}} if resource_type is None else None
    return HistoryScope(tuple(resources), others)
