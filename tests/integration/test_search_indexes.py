"""The common searches are answered from indexes, as explain() tells: nx-27017 names the
SQLite index (`USING INDEX`), MongoDB and SecantusDB an IXSCAN stage."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pymongo import AsyncMongoClient

from fhir_server.repository import Repository
from fhir_server.search.compile import compile_criterion
from fhir_server.search.nodes import RowQuery

COMMON = [
    ("Patient", "identifier", "urn:mrn|123"),
    ("Patient", "family", "simk"),
    ("ImagingStudy", "patient", "Patient/1"),
    ("ImagingStudy", "identifier", "urn:acc|A1"),
    ("ImagingStudy", "modality", "http://dicom.nema.org/resources/ontology/DCM|CT"),
    ("ImagingStudy", "started", "ge2024-01-01"),
    ("DiagnosticReport", "study", "ImagingStudy/1"),
    ("ServiceRequest", "patient.name", "simkus"),
]


async def test_common_queries_use_an_index(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str, store_kind: str
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    await repository.create({"resourceType": "Patient", "name": [{"family": "Šimkus"}]}, "seed")
    for resource_type, name, value in COMMON:
        clause = compile_criterion(resource_type, name, value)
        for alternative in clause.alternatives:
            if not isinstance(alternative, RowQuery):
                continue  # a chain runs row queries like these on the target type
            rows = repository.db[f"{resource_type}_idx"]
            query = alternative.as_filter()
            if store_kind == "isolated" and _conjunction(query):
                continue  # SecantusDB scans these (see the test below); MongoDB does not
            plan = await rows.find(query).explain()
            assert _index_used(plan), (resource_type, name, plan["queryPlanner"])
    page = await repository.db["Patient"].find({"_id": {"$in": ["seed", "b"]}}).explain()
    assert _index_used(page, "_id")
    found = await repository.search_engine().criteria_ids("Patient", [("family", "simk")])
    assert found == {"seed"}


async def test_candidates_are_checked_through_the_r_index(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str, store_kind: str
) -> None:
    if store_kind == "isolated":
        pytest.skip(
            "isolated store (SecantusDB 0.7.0b3): its planner answers a conjunction of two "
            "single-field indexed equalities with a COLLSCAN where MongoDB uses one of the "
            "indexes (docs/architecture.md, 'SecantusDB differences')"
        )
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    candidate = {"r": "x", "k": {"$in": ["modality\x1fDCM\x1fCT", "modality\x1fDCM\x1fMR"]}}
    plan = await repository.db["ImagingStudy_idx"].find(candidate).explain()
    assert _index_used(plan, "r"), plan["queryPlanner"]


def _index_used(plan: dict[str, Any], field: str | None = None) -> bool:
    """Whether the winning plan reads an index (on `field`, when given)."""
    winning = plan["queryPlanner"]["winningPlan"]
    if isinstance(winning, list):  # nx-27017: SQLite's EXPLAIN QUERY PLAN rows
        details = " ".join(step["detail"] for step in winning)
        if field is None or field == "_id":
            return "USING INDEX" in details
        return any(f"USING INDEX idx_{name}_{field}" in details for name in _tables(details))
    text = orjson.dumps(winning).decode()  # MongoDB's stage tree
    return '"IXSCAN"' in text and (field is None or f'"{field}":' in text)


def _conjunction(query: dict[str, Any]) -> bool:
    clauses = query.get("$and")
    return len(clauses if isinstance(clauses, list) else query) > 1


def _tables(details: str) -> list[str]:
    return [word for word in details.split() if word.endswith("_idx")]
