"""Header vs order: does a study's DICOM header name the patient its order names?

A study whose AccessionNumber matches an order belongs to the order's patient (the
order was placed for a known person; the modality only copied the worklist). What the
header says otherwise is recorded as a meta.tag on the ImagingStudy (RECONCILIATION
codes), for someone to look at, never as a second Patient.
"""

from __future__ import annotations

from typing import Any

from mappings.dicom.imagingstudy import human_name, patient_identifier


def mismatches(study: dict[str, Any], issuer: str | None, patient: dict[str, Any]) -> list[str]:
    """RECONCILIATION codes for `study` (an index row) against the order's Patient."""
    codes = []
    patient_id = str(study.get("PatientID") or "").strip()
    if patient_id and not _has_identifier(patient, patient_id, issuer):
        codes.append("patient-id-mismatch")
    if not _same_person(str(study.get("PatientName") or ""), patient):
        codes.append("patient-name-mismatch")
    return codes


def _has_identifier(patient: dict[str, Any], value: str, issuer: str | None) -> bool:
    """`value` is one of the patient's identifiers (of the issuer's system, when known)."""
    system = patient_identifier(value, issuer)["system"] if issuer else None
    for identifier in patient.get("identifier", []):
        if not isinstance(identifier, dict) or identifier.get("value") != value:
            continue
        if system is None or identifier.get("system") == system:
            return True
    return False


def _same_person(person_name: str, patient: dict[str, Any]) -> bool:
    """A header without a name agrees with anyone; otherwise the family and first given
    names of one of the PN's groups (alphabetic, ideographic, phonetic) must agree, case
    aside, with one of the patient's names (modalities often send upper case)."""
    groups = [human_name(group) for group in person_name.split("=")]
    named = [g for g in groups if g]
    if not named:
        return True
    recorded = [n for n in patient.get("name", []) if isinstance(n, dict)]
    if not recorded:
        return True  # the order's patient has no name to disagree with
    return any(_agree(header, name) for header in named for name in recorded)


def _agree(header: dict[str, Any], name: dict[str, Any]) -> bool:
    family, recorded_family = _fold(header.get("family")), _fold(name.get("family"))
    if family and recorded_family and family != recorded_family:
        return False
    given = _fold((header.get("given") or [""])[0])
    recorded_given = _fold((name.get("given") or [""])[0])
    if given and recorded_given and given != recorded_given:
        return False
    return bool(family or given) and bool(recorded_family or recorded_given)


def _fold(value: Any) -> str:
    return str(value or "").strip().casefold()
