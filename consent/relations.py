"""How the actor stands to a patient, read from the store: the facts of rules 1, 3, 6, 8.

Read per request (a Patient, the actor's PractitionerRoles, one Encounter search, a
RelatedPerson), never cached: a new Encounter or a changed generalPractitioner holds on
the next request.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

import orjson

from consent.consents import concept_codes
from consent.facts import Relationship
from fhir_server.repository import Repository

RELATIONSHIPS = Path(__file__).with_name("relationships.json")


@cache
def relationship_codes() -> dict[str, frozenset[str]]:
    raw = json.loads(RELATIONSHIPS.read_text())
    return {kind: frozenset(raw[kind]) for kind in ("representative", "heir")}


async def resource(repository: Repository, reference: str) -> dict[str, Any] | None:
    resource_type, _, resource_id = reference.partition("/")
    if not resource_type or not resource_id:
        return None
    stored = await repository.read(resource_type, resource_id)
    if stored is None or stored.raw is None:
        return None
    parsed: dict[str, Any] = orjson.loads(stored.raw)
    return parsed


async def organizations_of(repository: Repository, fhir_user: str) -> tuple[set[str], set[str]]:
    """The active PractitionerRoles of a Practitioner: their references and the
    Organizations they work for."""
    if not fhir_user.startswith("Practitioner/"):
        return set(), set()
    roles, organizations = set(), set()
    for role_id in await repository.matching_ids("PractitionerRole", [("practitioner", fhir_user)]):
        role = await resource(repository, f"PractitionerRole/{role_id}")
        if role is None or role.get("active") is False:
            continue
        roles.add(f"PractitionerRole/{role_id}")
        organization = role.get("organization", {}).get("reference")
        if isinstance(organization, str):
            organizations.add(organization)
    return roles, organizations


async def relationships(
    repository: Repository,
    fhir_user: str,
    roles: set[str],
    patient_id: str,
    patient: Mapping[str, Any] | None,
) -> frozenset[Relationship]:
    found: set[Relationship] = set()
    if fhir_user == f"Patient/{patient_id}":
        found.add(Relationship.SELF)
    if patient is not None:
        doctors = {g.get("reference") for g in patient.get("generalPractitioner", ())}
        if fhir_user in doctors or roles & doctors:
            found.add(Relationship.FAMILY_DOCTOR)
    if fhir_user.startswith(("Practitioner/", "PractitionerRole/")):
        criteria = [("patient", patient_id), ("status", "in-progress")]
        for who in {fhir_user, *roles}:
            if await repository.matching_ids("Encounter", [*criteria, ("participant", who)]):
                found.add(Relationship.CARE)
                break
    if fhir_user.startswith("RelatedPerson/"):
        found |= await _related_person(repository, fhir_user, patient_id)
    return frozenset(found)


async def _related_person(
    repository: Repository, fhir_user: str, patient_id: str
) -> set[Relationship]:
    person = await resource(repository, fhir_user)
    if person is None or person.get("active") is False:
        return set()
    if person.get("patient", {}).get("reference") != f"Patient/{patient_id}":
        return set()
    held = concept_codes(person.get("relationship", ()))
    tables = relationship_codes()
    found = set()
    if held & tables["representative"]:
        found.add(Relationship.REPRESENTATIVE)
    if held & tables["heir"]:
        found.add(Relationship.HEIR)
    return found
