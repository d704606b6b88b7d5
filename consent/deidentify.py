"""Rule 7: what a reader with purpose research sees of a record (docs/consent.md).

Pseudonymized, not anonymized: resource ids and references are kept so that a study can
link a patient's records, which is why the label is v3 ObservationValue `PSEUDED`
(pseudonymized), not `ANONYED`. Removed are the direct identifiers a Safe-Harbor-minded
reader expects: the person's name (replaced by a neutral placeholder), every
`identifier` (also a logical Reference's), telecom, address below the state, photo,
contacts, identifying extensions, the dates of birth and death below the year, the
display text of references to the patient, and free text that may repeat any of them
(the narrative, `note`). Clinical dates elsewhere stay: the study needs them.

Pure: a JSON document in, a new one out; the input is not changed.
"""

from __future__ import annotations

from typing import Any

Document = dict[str, Any]

OBSERVATION_VALUE = "http://terminology.hl7.org/CodeSystem/v3-ObservationValue"
PSEUDONYMIZED = {"system": OBSERVATION_VALUE, "code": "PSEUDED", "display": "pseudonymized"}
# HumanName.use "anonymous" (R4 name-use): a name that is not the person's
PLACEHOLDER_NAME = {"use": "anonymous", "family": "Anonymous"}

# the resources that describe a person: the patient and the people around them
PERSON_TYPES = frozenset({"Patient", "RelatedPerson", "Person"})
# removed from a person outright
PERSON_REMOVED = frozenset({"telecom", "photo", "contact"})
# kept of an Address: region and country, never where the person lives within it
ADDRESS_KEPT = frozenset({"use", "type", "state", "country"})
# dates of a person kept to the year
PERSON_YEAR_ONLY = ("birthDate", "deceasedDateTime")
# removed from any resource or element: identifiers and free text (Annotations)
REMOVED_EVERYWHERE = frozenset({"identifier", "note"})
# removed from a resource: its narrative (CodeableConcept.text stays: it is a code's text)
REMOVED_FROM_RESOURCES = frozenset({"text"})
# where a resource names its patient; the display of these references is removed
PATIENT_KEYS = frozenset({"subject", "patient", "beneficiary", "individual"})
# person extensions that identify (birth place, mother's maiden name, ...)
IDENTIFYING_EXTENSIONS = frozenset({
    "http://hl7.org/fhir/StructureDefinition/patient-birthPlace",
    "http://hl7.org/fhir/StructureDefinition/patient-mothersMaidenName",
    "http://hl7.org/fhir/StructureDefinition/patient-birthTime",
    "http://hl7.org/fhir/StructureDefinition/patient-nationality",
    "http://hl7.org/fhir/StructureDefinition/patient-citizenship",
    "http://hl7.org/fhir/StructureDefinition/humanname-own-name",
    "http://hl7.org/fhir/StructureDefinition/humanname-mothers-family",
})  # fmt: skip


def deidentified(resource: Document) -> Document:
    """The resource as research sees it, labelled PSEUDED in `meta.security`."""
    shown = _walk(resource, None)
    assert isinstance(shown, dict)
    meta = dict(shown.get("meta") or {})
    security = [label for label in meta.get("security") or [] if label != PSEUDONYMIZED]
    meta["security"] = [*security, PSEUDONYMIZED]
    shown["meta"] = meta
    return shown


def is_deidentified(resource: Document) -> bool:
    labels = (resource.get("meta") or {}).get("security") or []
    return any(
        label.get("system") == OBSERVATION_VALUE and label.get("code") == "PSEUDED"
        for label in labels
        if isinstance(label, dict)
    )


def _walk(value: Any, key: str | None) -> Any:
    if isinstance(value, list):
        return [_walk(element, key) for element in value]
    if not isinstance(value, dict):
        return value
    if value.get("resourceType") in PERSON_TYPES:
        value = _person(value)
    if _names_patient(value, key):
        value = {k: v for k, v in value.items() if k != "display"}
    if key == "extension" and value.get("url") in IDENTIFYING_EXTENSIONS:
        return None
    removed = REMOVED_EVERYWHERE
    if "resourceType" in value:
        removed = REMOVED_EVERYWHERE | REMOVED_FROM_RESOURCES
    shown: Document = {}
    for name, element in value.items():
        if name.removeprefix("_") in removed:
            continue
        walked = _walk(element, name)
        if isinstance(walked, list):
            walked = [e for e in walked if e is not None]
            if not walked:
                continue
        elif walked is None:
            continue
        shown[name] = walked
    return shown


def _names_patient(value: Document, key: str | None) -> bool:
    """A Reference to the patient: under a key that names the patient, or to a Patient."""
    if "display" not in value:
        return False
    reference = value.get("reference")
    to_patient = isinstance(reference, str) and (
        reference.startswith("Patient/") or "/Patient/" in reference
    )
    return to_patient or (key in PATIENT_KEYS and "resourceType" not in value)


def _person(person: Document) -> Document:
    shown = {k: v for k, v in person.items() if k not in PERSON_REMOVED}
    if "name" in shown:
        shown["name"] = [dict(PLACEHOLDER_NAME)]
    shown.pop("_name", None)
    addresses = shown.pop("address", None)
    if isinstance(addresses, list):
        kept = [
            {k: v for k, v in address.items() if k in ADDRESS_KEPT}
            for address in addresses
            if isinstance(address, dict)
        ]
        kept = [address for address in kept if set(address) - {"use", "type"}]
        if kept:
            shown["address"] = kept
    for name in PERSON_YEAR_ONLY:
        value = shown.get(name)
        if isinstance(value, str):
            shown[name] = value[:4]
        shown.pop(f"_{name}", None)
    return shown
