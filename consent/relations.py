"""How the actor stands to a patient: the facts of rules 1, 3, 6 and 8, from what the
Consent cache read (consent/cache.py), pure. The cache is dropped on every write of a
Patient, Encounter, PractitionerRole or RelatedPerson, so a new Encounter or a changed
generalPractitioner holds on the next request.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path

from consent.cache import ActorRecord, PatientRecord
from consent.consents import concept_codes
from consent.facts import Relationship

RELATIONSHIPS = Path(__file__).with_name("relationships.json")
CLINICIANS = ("Practitioner/", "PractitionerRole/")


@cache
def relationship_codes() -> dict[str, frozenset[str]]:
    raw = json.loads(RELATIONSHIPS.read_text())
    return {kind: frozenset(raw[kind]) for kind in ("representative", "heir")}


def relationships(
    fhir_user: str, actor: ActorRecord, patient_id: str, patient: PatientRecord
) -> frozenset[Relationship]:
    found: set[Relationship] = set()
    if fhir_user == f"Patient/{patient_id}":
        found.add(Relationship.SELF)
    if patient.resource is not None:
        doctors = {g.get("reference") for g in patient.resource.get("generalPractitioner", ())}
        if fhir_user in doctors or actor.roles & doctors:
            found.add(Relationship.FAMILY_DOCTOR)
    if fhir_user.startswith(CLINICIANS) and {fhir_user, *actor.roles} & patient.participants:
        found.add(Relationship.CARE)
    if fhir_user.startswith("RelatedPerson/"):
        found |= _related_person(actor, patient_id)
    return frozenset(found)


def _related_person(actor: ActorRecord, patient_id: str) -> set[Relationship]:
    person = actor.resource
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
