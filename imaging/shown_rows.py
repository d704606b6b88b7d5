"""DICOM index rows as consent-show items, for every DICOM door (DICOMweb, DIMSE).

Only built when a consent-show hook is registered. Each row becomes one `Item` naming
its study and the FHIR Patient the upkeep linked that study to; a study not linked yet
has no patient (an empty set), like a FHIR resource outside every compartment. A study
row (QIDO-RS and C-FIND at study level) is the study's own document, read by the same
request, so its `patient` is taken from it; only series and instance rows (and study
rows not linked) have their studies read.
"""

from __future__ import annotations

from access.shown import Item
from imaging.index import DicomIndex
from imaging.index_query import Document

# a PATIENT-level C-FIND row is made of several study rows: their FHIR Patients
FHIR_PATIENTS = "_fhir_patients"


async def row_items(index: DicomIndex, rows: list[Document]) -> list[Item]:
    linked: dict[str, str] = {
        str(row["_id"]): str(row["patient"])
        for row in rows
        if FHIR_PATIENTS not in row and _is_study(row) and row.get("patient")
    }
    uids = sorted({_study(row) for row in rows if FHIR_PATIENTS not in row} - linked.keys())
    if uids:
        async for study in index.studies.find({"_id": {"$in": uids}}, {"patient": 1}):
            if study.get("patient"):
                linked[str(study["_id"])] = str(study["patient"])
    items = []
    for row in rows:
        if FHIR_PATIENTS in row:
            items.append(Item("Patient", "", None, frozenset(row[FHIR_PATIENTS])))
            continue
        uid = _study(row)
        patient = linked.get(uid)
        items.append(Item("ImagingStudy", uid, None, frozenset({patient} if patient else ())))
    return items


def _is_study(row: Document) -> bool:
    # series and instance rows name their study in `st`; a study row has no `st`
    return not row.get("st")


def _study(row: Document) -> str:
    # instance and series rows name their study in `st`; a study row is its own _id
    return str(row.get("st") or row["_id"])
