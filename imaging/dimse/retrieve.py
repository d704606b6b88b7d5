"""C-MOVE and C-GET: which instances an identifier names, and their stored bytes.

Only the unique keys of the level select (PS3.4 C.4.2.2.1: PatientID, the UIDs, lists
of UIDs); instances are sent as stored, in their own transfer syntax.
"""

from __future__ import annotations

import io
from typing import Any

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.presentation import PresentationContext, build_context

from access.errors import AccessError
from access.restriction import UNRESTRICTED, Restriction
from imaging.dimse.query import LEVELS, text_of
from imaging.index import DicomIndex
from imaging.index_query import Condition, IndexQuery, compile_query, find_rows
from imaging.uids import uid_list

Document = dict[str, Any]
UNIQUE_KEY = {
    "PATIENT": "PatientID",
    "STUDY": "StudyInstanceUID",
    "SERIES": "SeriesInstanceUID",
    "IMAGE": "SOPInstanceUID",
}
ROW_FIELD = {"StudyInstanceUID": "st", "SeriesInstanceUID": "se", "SOPInstanceUID": "_id"}
MAX_CONTEXTS = 128
PROJECTION = {"key": 1, "SOPClassUID": 1, "ts": 1, "st": 1, "se": 1}


async def instances_for(
    index: DicomIndex,
    identifier: Dataset,
    model: str,
    restriction: Restriction = UNRESTRICTED,
) -> list[Document]:
    """The instance rows (key, class, transfer syntax) the identifier selects, of those
    the access may see (the sub-operation counts are theirs)."""
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    allowed = LEVELS if model == "patient" else LEVELS[1:]
    if level not in allowed:
        raise AccessError("MB-4002", f"QueryRetrieveLevel {level[:16]!r} not valid here")
    own: list[Condition] = []
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
        element = identifier.get(keyword)
        value = text_of(identifier[keyword]) if element is not None else ""
        if value:
            uids = uid_list(value)
            own.append(Condition(ROW_FIELD[keyword], uids[0] if len(uids) == 1 else {"$in": uids}))
    patient = text_of(identifier["PatientID"]) if "PatientID" in identifier else ""
    needed = UNIQUE_KEY[level]
    if needed != "PatientID" and ROW_FIELD[needed] not in {c.field for c in own}:
        raise AccessError("MB-4002", f"{needed} is required at {level} level")
    if not patient and needed == "PatientID":
        raise AccessError("MB-4002", "PatientID is required at PATIENT level")
    study = (Condition("PatientID", patient),) if patient else ()
    query = IndexQuery("instance", study=study, instance=tuple(own))
    return await find_rows(index, compile_query(query, restriction), PROJECTION)


def decode(data: bytes) -> Dataset:
    """A stored Part 10 instance as a dataset, file meta kept so it is sent as stored."""
    return pydicom.dcmread(io.BytesIO(data))


def contexts_for(rows: list[Document]) -> list[PresentationContext]:
    """Storage contexts for a C-MOVE sub-association: each class with its stored syntaxes."""
    syntaxes: dict[str, list[str]] = {}
    for row in rows:
        wanted = syntaxes.setdefault(str(row.get("SOPClassUID", "")), [])
        ts = str(row.get("ts") or ExplicitVRLittleEndian)
        if ts not in wanted:
            wanted.append(ts)
    out: list[PresentationContext] = []
    for sop_class, stored in syntaxes.items():
        fallback = [ExplicitVRLittleEndian, ImplicitVRLittleEndian]
        compressed = [ts for ts in stored if UID(ts).is_compressed]
        if compressed:
            out.extend(build_context(sop_class, ts) for ts in compressed)
        plain = [ts for ts in stored if ts not in compressed]
        out.append(build_context(sop_class, [*dict.fromkeys([*plain, *fallback])]))
    return out[:MAX_CONTEXTS]
