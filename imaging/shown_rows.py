"""DICOM index rows as consent-show items, for every DICOM door (DICOMweb, DIMSE).

Only built when a consent-show hook is registered. Each row becomes one `Item` naming
its study and the FHIR Patient the upkeep linked that study to; a study not linked yet
has no patient (an empty set), like a FHIR resource outside every compartment.
"""

from __future__ import annotations

from access.shown import Item
from imaging.index import DicomIndex
from imaging.index_query import Document

# a PATIENT-level C-FIND row is made of several study rows: their FHIR Patients
FHIR_PATIENTS = "_fhir_patients"


async def row_items(index: DicomIndex, rows: list[Document]) -> list[Item]:
    uids = sorted({_study(row) for row in rows if FHIR_PATIENTS not in row})
    linked: dict[str, str] = {}
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


def _study(row: Document) -> str:
    # instance and series rows name their study in `st`; a study row is its own _id
    return str(row.get("st") or row["_id"])
