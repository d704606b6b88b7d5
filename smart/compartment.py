"""Whose compartment a stored record is in now: what a patient-context write by id is
checked against before it changes the record (the body it sends is checked by the
door's description of the access)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from fhir_server.repository import Repository
from fhir_server.shown import patients_of

# (resource type, id) -> the Patient ids whose compartment holds the current version;
# None when there is no current version (never written, or deleted)
CompartmentOf = Callable[[str, str], Awaitable[frozenset[str] | None]]


def current_compartment(repository: Repository) -> CompartmentOf:
    async def compartment_of(resource_type: str, resource_id: str) -> frozenset[str] | None:
        stored = await repository.read(resource_type, resource_id)
        if stored is None or stored.raw is None:
            return None
        return patients_of(resource_type, resource_id, stored.raw)

    return compartment_of
