"""Resolve the search criteria of conditional create, update, patch and delete."""

from __future__ import annotations

from fhir_server.errors import FhirError
from fhir_server.repository import Repository, Stored
from fhir_server.search.criteria import parse_criteria


async def resolve_one(
    repository: Repository, resource_type: str, params: list[tuple[str, str]], interaction: str
) -> Stored | None:
    """The single current resource matching the criteria; None for none, 412 for several."""
    ids = await repository.matching_ids(resource_type, params)
    if len(ids) > 1:
        raise FhirError(
            "MB-1012",
            f"conditional {interaction} criteria match {len(ids)} {resource_type} resources; "
            "make them more selective",
        )
    if not ids:
        return None
    stored = await repository.read(resource_type, ids[0])
    return stored if stored is not None and not stored.deleted else None


def criteria_params(criteria: str) -> list[tuple[str, str]]:
    return parse_criteria(criteria)
