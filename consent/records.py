"""A stored resource -> RecordFacts and PatientFacts: the fields the rules look at."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from consent.consents import codes, concept_codes, day
from consent.facts import PatientFacts, RecordFacts

# where a record says when it happened, first found wins (R4 element names)
DATE_ELEMENTS = (
    "effectiveDateTime", "effectivePeriod", "issued", "occurrenceDateTime", "performedDateTime",
    "performedPeriod", "started", "onsetDateTime", "recordedDate", "authoredOn", "date",
    "period", "created",
)  # fmt: skip
# elements naming the organization that ordered or performed a record
ORGANIZATION_ELEMENTS = ("performer", "requester", "serviceProvider", "custodian", "author")


def _references(value: object) -> list[str]:
    items = value if isinstance(value, list) else [value]
    found = []
    for item in items:
        if isinstance(item, Mapping):
            reference = item.get("reference")
            if isinstance(reference, Mapping):  # CodeableReference-like, performer.actor
                reference = reference.get("reference")
            if not isinstance(reference, str):
                actor = item.get("actor")
                if isinstance(actor, Mapping):
                    reference = actor.get("reference")
            if isinstance(reference, str):
                found.append(reference)
    return found


def record_facts(resource_type: str, resource_id: str, resource: Mapping[str, Any]) -> RecordFacts:
    category = resource.get("category", ())
    if isinstance(category, Mapping):  # 0..1 in a few resources (Communication ...: list)
        category = [category]
    organizations = {
        reference
        for element in ORGANIZATION_ELEMENTS
        for reference in _references(resource.get(element))
        if reference.startswith("Organization/")
    }
    return RecordFacts(
        resource_type,
        resource_id,
        categories=concept_codes(c for c in category if isinstance(c, Mapping)),
        security_labels=codes(resource.get("meta", {}).get("security", ())),
        organizations=frozenset(organizations),
        date=_date(resource),
    )


def _date(resource: Mapping[str, Any]) -> date | None:
    for element in DATE_ELEMENTS:
        value = resource.get(element)
        if isinstance(value, Mapping):
            value = value.get("start") or value.get("end")
        found = day(value)
        if found is not None:
            return found
    return None


def patient_facts(patient_id: str, patient: Mapping[str, Any] | None, today: date) -> PatientFacts:
    if patient is None:
        return PatientFacts(patient_id)
    deceased = bool(patient.get("deceasedBoolean")) or "deceasedDateTime" in patient
    born = day(patient.get("birthDate"))
    age = None
    if born is not None:
        age = today.year - born.year - ((today.month, today.day) < (born.month, born.day))
    return PatientFacts(patient_id, age, deceased)
