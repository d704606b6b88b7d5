"""What a patient, or a minor's representative, sees of the access log (docs/audit.md).

An AuditEvent is one record per access, so an access that touched several patients (a
clinician's search listing ten Patients) is one event naming all of them. A lay reader
(a user whose `fhirUser` is a Patient or RelatedPerson) is shown such an event too -
they have a right to know that their record was opened - but only what is about the
patients they read for: their token's patient context and, for a Patient, themselves.
The other patients, the records, DICOM UIDs and the query of an event that names anyone
else are removed (which record belonged to whom is not in the event), and so are the
network address and token id of the staff who made the access (security data, not the
patient's). A masked event is labelled REDACTED (`meta.security`).

Registered as a consent-show hook that runs before `consent.show`: each AuditEvent item
is narrowed to the reader's patients, so the consent engine decides it as the reader's
own record instead of refusing it for the other patients it no longer shows.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import orjson

from access.pipeline import Exchange
from access.shown import Item
from audit.event import SHOWN_PATIENTS_NOTE
from fhir_server.exchange import FhirResponse

Document = dict[str, Any]
CLAIMS_NOTE = "smart.claims"  # smart/hooks.py: the validated token's claims
LAY_TYPES = ("Patient/", "RelatedPerson/")  # consent/facts.py LAY_TYPES
AUDIT_TYPE = "AuditEvent"
PATIENT_ROLE = "1"
REDACTED = {"system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
            "code": "REDACTED", "display": "redacted"}  # fmt: skip


async def note_shown_patients(exchange: Exchange[Any, Any]) -> None:
    """Consent-show, after the hooks that hide: the patients whose records this access
    showed, for its AuditEvent (audit/event.py), so a read of an Observation names its
    patient and appears in that patient's access log."""
    items = exchange.items
    if items is None:
        return
    found = {p for item in items.visible if item.mode != "counted" for p in item.patients}
    if found:
        exchange.context.notes.setdefault(SHOWN_PATIENTS_NOTE, set()).update(found)


def readers_patients(exchange: Exchange[Any, Any]) -> frozenset[str] | None:
    """The Patient ids a lay reader reads for; None when the reader is not lay."""
    context = exchange.context
    if context.actor.kind != "user":
        return None
    claims = context.notes.get(CLAIMS_NOTE)
    fhir_user = getattr(claims, "fhir_user", None) or context.actor.display
    if not isinstance(fhir_user, str) or not fhir_user.startswith(LAY_TYPES):
        return None
    patients = {context.patient} if context.patient else set()
    if fhir_user.startswith("Patient/"):
        patients.add(fhir_user.removeprefix("Patient/"))
    return frozenset(patients)


def lay_reader(exchange: Exchange[Any, Any]) -> bool:
    """`wants_items` of the patient-view hook: only a lay reader's answers are masked."""
    return readers_patients(exchange) is not None


async def show_to_patient(exchange: Exchange[Any, Any]) -> None:
    """Consent-show: a lay reader's AuditEvents are masked to their own patients."""
    items = exchange.items
    if items is None or not any(item.resource_type == AUDIT_TYPE for item in items.all):
        return
    allowed = readers_patients(exchange)
    if allowed is None:
        return
    narrowed = [_narrowed(item, allowed) for item in items.all]
    exchange.items = items.reshaped(narrowed, lambda answer: _masked_answer(answer, allowed))


def _narrowed(item: Item, allowed: frozenset[str]) -> Item:
    if item.resource_type != AUDIT_TYPE or item.raw is None:
        return item
    mine = item.patients & allowed
    # an event of nobody the reader reads for keeps its patients: consent refuses it
    patients = mine if mine else item.patients
    raw = orjson.dumps(masked(orjson.loads(item.raw), allowed))
    return Item(item.resource_type, item.resource_id, raw, patients, item.mode)


def _masked_answer(answer: Any, allowed: frozenset[str]) -> Any:
    if not isinstance(answer, FhirResponse) or not answer.body:
        return answer
    document = orjson.loads(answer.body)
    if not isinstance(document, dict):
        return answer
    if document.get("resourceType") == AUDIT_TYPE:
        answer.body = orjson.dumps(masked(document, allowed))
    elif document.get("resourceType") == "Bundle":
        for entry in document.get("entry") or []:
            resource = entry.get("resource") if isinstance(entry, dict) else None
            if isinstance(resource, dict) and resource.get("resourceType") == AUDIT_TYPE:
                entry["resource"] = masked(resource, allowed)
        answer.body = orjson.dumps(document)
    return answer


def named_patients(event: Document) -> set[str]:
    """The Patient ids an event names: patient entities and Patient agents."""
    found = {
        reference.removeprefix("Patient/")
        for reference in _references(event.get("entity"), "what")
        if reference.startswith("Patient/")
    }
    found |= {
        reference.removeprefix("Patient/")
        for reference in _references(event.get("agent"), "who")
        if reference.startswith("Patient/")
    }
    return found


def masked(event: Document, allowed: frozenset[str]) -> Document:
    """The event as a lay reader for `allowed` patients may see it."""
    shown = dict(event)
    agents = []
    for agent in event.get("agent") or []:
        kept = {k: v for k, v in agent.items() if k not in ("network", "policy")}
        reference = (agent.get("who") or {}).get("reference")
        patient = reference.removeprefix("Patient/") if isinstance(reference, str) else None
        if patient is not None and patient != reference and patient not in allowed:
            kept["who"] = {"display": "another patient"}
        agents.append(kept)
    if agents:
        shown["agent"] = agents
    others = named_patients(event) - allowed
    if others:
        entities = [
            entity
            for entity in event.get("entity") or []
            if (entity.get("role") or {}).get("code") == PATIENT_ROLE
            and str((entity.get("what") or {}).get("reference", "")).removeprefix("Patient/")
            in allowed
        ]
        if entities:
            shown["entity"] = entities
        else:
            shown.pop("entity", None)
    meta = dict(shown.get("meta") or {})
    meta["security"] = [*(meta.get("security") or []), REDACTED]
    shown["meta"] = meta
    return shown


def _references(elements: object, name: str) -> Iterable[str]:
    for element in elements if isinstance(elements, list) else []:
        value = element.get(name) if isinstance(element, dict) else None
        reference = value.get("reference") if isinstance(value, dict) else None
        if isinstance(reference, str):
            yield reference
