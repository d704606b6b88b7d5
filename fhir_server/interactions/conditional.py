"""Resolve the search criteria of conditional create, update, patch and delete.

A conditional create (If-None-Exist, or the create branch of a conditional update)
claims its criteria in the same transaction as the write, so two racing requests with
the same criteria cannot both create: the loser re-resolves and finds the winner's
resource. This is what keeps HL7 upserts from making duplicate patients.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from urllib.parse import urlencode

from access.errors import AccessError
from fhir_server.repository import ClaimTaken, Repository, Stored
from fhir_server.search.criteria import parse_criteria

Write = Callable[[str], Awaitable[Stored]]


async def resolve_one(
    repository: Repository, resource_type: str, params: list[tuple[str, str]], interaction: str
) -> Stored | None:
    """The single current resource matching the criteria; None for none, 412 for several."""
    ids = await repository.matching_ids(resource_type, params)
    if len(ids) > 1:
        raise AccessError(
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


def claim_key(resource_type: str, params: list[tuple[str, str]]) -> str:
    """The criteria in a canonical form: same search, same key."""
    return f"{resource_type}?{urlencode(sorted(params))}"


async def create_unless_found(
    repository: Repository,
    resource_type: str,
    params: list[tuple[str, str]],
    interaction: str,
    write: Write,
) -> tuple[Stored, bool]:
    """The match, or what `write(claim)` creates; True when created."""
    key = claim_key(resource_type, params)
    for _ in range(2):
        existing = await resolve_one(repository, resource_type, params, interaction)
        if existing is not None:
            return existing, False
        try:
            return await write(key), True
        except ClaimTaken:
            winner = await resolve_one(repository, resource_type, params, interaction)
            if winner is not None:
                return winner, False
            # the claimed resource was deleted or no longer matches: the claim is stale
            await repository.release_claim(key)
    raise AccessError("MB-1011", f"conditional {interaction} raced another request; retry")
