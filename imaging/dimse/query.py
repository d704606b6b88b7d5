"""C-FIND over the DICOM index: a query identifier -> MongoDB filters per level -> datasets.

Matching follows PS3.4 C.2.2.2 through the same `condition` compiler QIDO-RS uses
(single value, `*`/`?` wildcards, date/time ranges, UID lists); an empty key is
universal matching and is returned. PATIENT level is computed from the study rows,
which carry the patient attributes; counts come from the study and series counters.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

from access.errors import AccessError
from access.restriction import UNRESTRICTED, Restriction
from imaging.dicomweb.dicom_json import vr_of
from imaging.dicomweb.qido import MAX_WILDCARD_CHARS, Match, condition
from imaging.index import DicomIndex
from imaging.index_query import (
    Condition,
    IndexQuery,
    Level,
    by_ids,
    compile_query,
    find_rows,
    split_in,
)
from imaging.parse import qido_attributes
from imaging.shown_rows import FHIR_PATIENTS

Document = dict[str, Any]
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
PATIENT_KEYS = ("PatientName", "PatientID", "IssuerOfPatientID", "PatientBirthDate", "PatientSex")
# each level's own UID is its collection's _id
OWN_ID = {"STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID", "IMAGE": "SOPInstanceUID"}
COMPUTED = {
    "NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries",
    "NumberOfPatientRelatedInstances", "NumberOfStudyRelatedSeries",
    "NumberOfStudyRelatedInstances", "NumberOfSeriesRelatedInstances", "ModalitiesInStudy",
}  # fmt: skip
SKIPPED = {"QueryRetrieveLevel", "SpecificCharacterSet", "RetrieveAETitle", "TimezoneOffsetFromUTC"}
MAX_MATCHES = 50_000
ROW_LEVEL: dict[str, Level] = {
    "PATIENT": "study", "STUDY": "study", "SERIES": "series", "IMAGE": "instance",
}  # fmt: skip
TEXT_VRS = frozenset({"AE", "CS", "DA", "DT", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UT"})


@dataclass(slots=True)
class FindQuery:
    """A parsed identifier: the level, its matching keys and the keys to return."""

    level: str
    matches: dict[str, list[Match]] = field(default_factory=dict)  # by attribute level
    returned: list[DataElement] = field(default_factory=list)
    max_wildcard_chars: int = MAX_WILDCARD_CHARS

    @property
    def wanted(self) -> set[str]:
        return {element.keyword for element in self.returned}


def attribute_level(keyword: str) -> str | None:
    """Which level's collection holds `keyword` (patient keys live on the study rows)."""
    if keyword in PATIENT_KEYS:
        return "PATIENT"
    if keyword == "ModalitiesInStudy":
        return "SERIES"
    attrs = qido_attributes()
    for level, name in (("STUDY", "study"), ("SERIES", "series"), ("IMAGE", "instance")):
        if keyword in attrs[name]:
            return level
    return None


def text_of(element: DataElement) -> str:
    """An identifier value as PS3.4 matching text (multiple values joined by backslash)."""
    value = element.value
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


def parse_identifier(
    identifier: Dataset, model: str, max_wildcard_chars: int = MAX_WILDCARD_CHARS
) -> FindQuery:
    """Read QueryRetrieveLevel and the keys; A900 when the level does not fit the model."""
    level = str(identifier.get("QueryRetrieveLevel", "")).strip().upper()
    allowed = LEVELS if model == "patient" else LEVELS[1:]
    if level not in allowed:
        raise AccessError("MB-4002", f"QueryRetrieveLevel {level[:16]!r} not valid here")
    query = FindQuery(level, max_wildcard_chars=max_wildcard_chars)
    for element in identifier:
        keyword = element.keyword
        if not keyword or keyword in SKIPPED:
            continue
        query.returned.append(element)
        if element.VR == "SQ" or keyword in COMPUTED - {"ModalitiesInStudy"}:
            continue
        value = text_of(element)
        where = attribute_level(keyword)
        if value and where is not None:
            query.matches.setdefault(where, []).append(Match(keyword, value))
    return query


def _conditions(matches: list[Match], level: str, max_wildcard_chars: int) -> Document:
    out: Document = {}
    for match in matches:
        if match.keyword == "ModalitiesInStudy":
            wanted = [v for v in match.value.split("\\") if v]
            out["Modality"] = wanted[0] if len(wanted) == 1 else {"$in": wanted}
            continue
        prefix = _prefix_range(match.value) if vr_of(match.keyword) in TEXT_VRS else None
        # the wildcard compiler also refuses an over-long value before the range is used
        field_name, cond = condition(match, False, max_wildcard_chars)
        if prefix:
            cond = prefix
        if field_name == OWN_ID.get(level):
            field_name = "_id"
        out[field_name] = cond
    return out


def _prefix_range(value: str) -> Document | None:
    """`ABC*` as the index range [ABC, ABD): same answer as the regex, without a scan."""
    stem = value[:-1]
    if not value.endswith("*") or not stem or any(c in stem for c in "*?\\"):
        return None
    return {"$gte": stem, "$lt": stem[:-1] + chr(ord(stem[-1]) + 1)}


async def find(
    index: DicomIndex, query: FindQuery, restriction: Restriction = UNRESTRICTED
) -> list[Document]:
    """The matching rows of the query level the access may see, each merged with its
    parents' attributes."""
    rows = await find_rows(
        index, compile_query(index_query(query), restriction), {"meta": 0}, split="st"
    )
    if query.level == "PATIENT":
        return _patients(rows)
    if query.level == "STUDY":
        return await _with_modalities(index, rows, "ModalitiesInStudy" in query.wanted)
    return await _with_parents(index, rows, query)


def index_query(query: FindQuery) -> IndexQuery:
    """The identifier as the index's query description. PATIENT level is read from the
    study rows; keys of a level below the returned one select only for studies (the
    series keys), as the index keeps no instance attributes above their level."""
    cap = query.max_wildcard_chars
    study_keys = query.matches.get("PATIENT", []) + query.matches.get("STUDY", [])
    level = ROW_LEVEL[query.level]
    study = _conditions(study_keys, "STUDY", cap)
    series = _conditions(query.matches.get("SERIES", []), "SERIES", cap)
    image = _conditions(query.matches.get("IMAGE", []), "IMAGE", cap)
    if level != "instance":
        image = {}
    return IndexQuery(
        level,
        study=tuple(Condition(k, v) for k, v in study.items()),
        series=tuple(Condition(k, v) for k, v in series.items()),
        instance=tuple(Condition(k, v) for k, v in image.items()),
        limit=MAX_MATCHES,
    )


def _patients(studies: list[Document]) -> list[Document]:
    patients: dict[str, Document] = {}
    for study in studies:
        row = patients.setdefault(
            study.get("pk", ""),
            {k: study[k] for k in (*PATIENT_KEYS, "SpecificCharacterSet") if k in study},
        )
        if study.get("patient"):
            # for consent-show: the FHIR Patients this row stands for
            row.setdefault(FHIR_PATIENTS, []).append(str(study["patient"]))
        row["NumberOfPatientRelatedStudies"] = row.get("NumberOfPatientRelatedStudies", 0) + 1
        row["NumberOfPatientRelatedSeries"] = row.get("NumberOfPatientRelatedSeries", 0) + int(
            study.get("ns", 0)
        )
        row["NumberOfPatientRelatedInstances"] = row.get(
            "NumberOfPatientRelatedInstances", 0
        ) + int(study.get("ni", 0))
    return list(patients.values())


async def _with_modalities(
    index: DicomIndex, studies: list[Document], wanted: bool
) -> list[Document]:
    # the study row keeps ModalitiesInStudy (`mods`, kept up to date by the ingest); the
    # series are read only for rows without it, and only when the peer asked for the key
    ids = [study["_id"] for study in studies if "mods" not in study]
    modalities: dict[str, set[str]] = {
        study["_id"]: {m for m in str(study["mods"]).split("\\") if m}
        for study in studies
        if "mods" in study
    }
    if ids and wanted:
        found = await split_in(index.series, {"st": {"$in": ids}}, "st", {"st": 1, "Modality": 1})
        for series in found:
            if series.get("Modality"):
                modalities.setdefault(series["st"], set()).add(str(series["Modality"]))
    for study in studies:
        study["StudyInstanceUID"] = study["_id"]
        study["ModalitiesInStudy"] = sorted(modalities.get(study["_id"], set()))
        study["NumberOfStudyRelatedSeries"] = study.get("ns", 0)
        study["NumberOfStudyRelatedInstances"] = study.get("ni", 0)
    return studies


async def _with_parents(
    index: DicomIndex, rows: list[Document], query: FindQuery
) -> list[Document]:
    """Parent rows are read only when the peer asked for one of their attributes."""
    level, levels = query.level, {attribute_level(k) for k in query.wanted - set(OWN_ID.values())}
    studies: dict[str, Document] = {}
    if rows and levels & {"PATIENT", "STUDY"}:
        study_ids = sorted({row["st"] for row in rows})
        studies = await by_ids(index.studies, study_ids)
    series: dict[str, Document] = {}
    if rows and level == "IMAGE" and "SERIES" in levels:
        series_ids = sorted({row["se"] for row in rows})
        series = await by_ids(index.series, series_ids)
    merged = []
    for row in rows:
        out = dict(studies.get(row["st"], {}))
        out["StudyInstanceUID"] = row["st"]
        if level == "SERIES":
            out.update(row)
            out["SeriesInstanceUID"] = row["_id"]
            out["NumberOfSeriesRelatedInstances"] = row.get("n", 0)
        else:
            out.update(series.get(row["se"], {}))
            out.update(row)
            out["SeriesInstanceUID"], out["SOPInstanceUID"] = row["se"], row["_id"]
        merged.append(out)
    return merged


def response(row: Document, query: FindQuery, retrieve_ae: str) -> Dataset:
    """One pending response: every requested key, with the row's value or empty."""
    answer = Dataset()
    answer.SpecificCharacterSet = "ISO_IR 192"  # values are stored as text; send UTF-8
    answer.QueryRetrieveLevel = query.level
    for element in query.returned:
        value = row.get(element.keyword)
        if value is None or element.VR == "SQ":
            answer.add(DataElement(element.tag, element.VR, [] if element.VR == "SQ" else None))
        else:
            answer.add(DataElement(element.tag, element.VR, _value(value, element.VR)))
    if query.level != "PATIENT":
        answer.RetrieveAETitle = retrieve_ae
    return answer


def _value(value: Any, vr: str) -> Any:
    if isinstance(value, list):
        return [str(v) for v in value]
    if vr in ("IS", "DS"):
        return str(value)
    if vr in ("US", "UL", "SS", "SL"):
        return int(value)
    return value
