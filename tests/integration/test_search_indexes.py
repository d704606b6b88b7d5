"""The common searches are answered from indexes: nx-27017's explain() names the index."""

from __future__ import annotations

from typing import Any

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
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str
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
            plan = await rows.find(alternative.as_filter()).explain()
            details = " ".join(step["detail"] for step in plan["queryPlanner"]["winningPlan"])
            assert "USING INDEX" in details, (resource_type, name, details)
    # candidates are checked one by one through the `r` index, and pages by `_id`
    candidate = {"r": "x", "k": {"$in": ["modality\x1fDCM\x1fCT", "modality\x1fDCM\x1fMR"]}}
    plan = await repository.db["ImagingStudy_idx"].find(candidate).explain()
    assert "USING INDEX idx_ImagingStudy_idx_r" in plan["queryPlanner"]["winningPlan"][0]["detail"]
    page = await repository.db["Patient"].find({"_id": {"$in": ["seed", "b"]}}).explain()
    assert "USING INDEX" in page["queryPlanner"]["winningPlan"][0]["detail"]
    found = await repository.search_engine().criteria_ids("Patient", [("family", "simk")])
    assert found == {"seed"}
