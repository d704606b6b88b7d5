"""ORU^R01: one OBR group -> its Report (DiagnosticReport, Observations, documents).

Pure, like translate.py, which finds the OBR groups and the patient; the building blocks
(order-number domains, OBX documents and UIDs) are in reports.py.
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from dataclasses import dataclass, field

from mappings.hl7v2.actions import REPORT_KEY, Report, Upsert, identifier_criteria
from mappings.hl7v2.datatypes import CONVERTERS, V2_0203, Context, Element, cwe
from mappings.hl7v2.engine import build
from mappings.hl7v2.errors import MappingError
from mappings.hl7v2.message import Segment, component_of, segment_location
from mappings.hl7v2.reports import (
    DICOM_UID,
    Document,
    OrderNumbers,
    document,
    is_impression,
    report_tables,
    uid_kind,
)

UCUM = "http://unitsofmeasure.org"
VALUE_TYPES = frozenset({"NM", "SN", "CE", "CWE", "CNE"})
TEXT_TYPES = frozenset({"TX", "FT", "ST"})
COMPARATORS = frozenset({"<", "<=", ">=", ">"})
BINARY_NAMESPACE = uuid.UUID("0c8f4d6e-2b7a-4f1e-9d3c-5a6b7c8d9e0f")
DOC_STATUS = {"final": "final", "corrected": "amended", "amended": "amended",
              "appended": "amended", "cancelled": "entered-in-error"}  # fmt: skip


@dataclass(slots=True)
class _Parts:
    """What one OBR group's OBX segments carry, sorted by what becomes of them."""

    text: list[str] = field(default_factory=list)
    conclusion: list[str] = field(default_factory=list)
    uids: dict[str, list[str]] = field(default_factory=dict)  # study/series/instance
    documents: list[tuple[int, Segment, Document]] = field(default_factory=list)
    values: list[tuple[int, Segment]] = field(default_factory=list)


def _parts(group: list[Segment]) -> _Parts:
    parts = _Parts()
    for position, obx in enumerate((s for s in group if s.name == "OBX"), start=1):
        value_type = obx.value(2).upper()
        kind = uid_kind(obx) if value_type in TEXT_TYPES | {"UID", "ID", "IS"} else None
        if kind is not None:
            parts.uids.setdefault(kind, []).append(obx.value(5).strip())
        elif value_type in ("ED", "RP"):
            found = document(obx)
            if found is not None:
                parts.documents.append((position, obx, found))
        elif value_type in TEXT_TYPES:
            lines = [component_of(rep, 1) for rep in obx.field(5)]
            parts.text.extend(lines)
            if is_impression(obx):
                parts.conclusion.extend(lines)
        elif value_type in VALUE_TYPES and obx.field(5):
            parts.values.append((position, obx))
    return parts


def _imaging(obr: Segment, parts: _Parts) -> bool:
    """Whether OBR-18 is an imaging accession number (a lab's OBR-18 is not)."""
    section = obr.value(24).strip().upper()
    if section:
        return section in report_tables()["imaging-sections"]
    numeric = any(obx.value(2).upper() in ("NM", "SN") for _, obx in parts.values)
    return "study" in parts.uids or bool(parts.conclusion) or not numeric


def report(
    group: list[Segment],
    orc: Segment | None,
    context: Context,
    subject: Element,
    numbers: OrderNumbers,
    fresh: str,
) -> Report:
    obr = group[0]
    segments = {"OBR": obr, **({"ORC": orc} if orc is not None else {})}
    report = build("DiagnosticReport", segments, context)
    filler = numbers.rescope(report["identifier"][0]) if "identifier" in report else None
    placer_field = (orc.field(2) if orc is not None else []) or obr.field(2)
    placer = CONVERTERS["EI"](placer_field[0], context) if placer_field else None
    placer = numbers.rescope(placer) if placer is not None else None
    base = filler or placer
    if base is None:
        raise MappingError("101", "OBR-3 filler order number is required", segment_location(obr, 3))
    report["identifier"] = [base, {"system": base["system"], "value": REPORT_KEY}]
    report.setdefault("status", "unknown")
    report["subject"] = subject
    parts = _parts(group)
    accession = obr.value(18).strip()
    orders = [i for i in (filler, placer) if i is not None]
    if accession:
        orders.append({"system": numbers.system, "value": accession})
    based_on = [(i, numbers.criteria(i)) for i in orders]
    if based_on:
        report["basedOn"] = [_optional("ServiceRequest", *based_on[0])]
    studies = [_optional("ImagingStudy", *_uid_key(uid)) for uid in parts.uids.get("study", [])]
    if _imaging(obr, parts) and accession:
        # searchable by accession, so a study that arrives later can find its report
        acsn = {"coding": [{"system": V2_0203, "code": "ACSN"}]}
        report["identifier"].append({"type": acsn, "value": accession})
        if not studies:
            studies = [_optional("ImagingStudy", *_accession_key(accession))]
    if studies:
        report["imagingStudy"] = studies
    for kind in ("series", "instance"):
        report["identifier"].extend(_uid_key(uid)[0] for uid in parts.uids.get(kind, []))
    actions: list[Upsert] = []
    observations = _observations(group, parts, base, context, subject, numbers)
    if observations:
        report["result"] = [{"reference": f"Observation?{u.criteria}"} for u in observations]
    forms = _forms(parts, actions)
    if parts.text:
        data = base64.b64encode("\n".join(parts.text).encode()).decode()
        forms.insert(0, {"contentType": "text/plain; charset=utf-8", "data": data})
    if forms:
        report["presentedForm"] = forms
    if parts.conclusion:
        report["conclusion"] = "\n".join(parts.conclusion)
    actions.extend(observations)
    criteria = f"identifier={base['system']}|{REPORT_KEY}"
    actions.append(Upsert(report, criteria, segment_location(obr, 3)))
    actions.extend(_document_references(report, parts, base, criteria, context))
    code = report["code"].get("coding", [{}])[0].get("code", report["code"].get("text", ""))
    return Report(
        order=numbers.criteria(base),
        base=base,
        code=str(code),
        correction=obr.value(25).strip().upper() == "C",
        fresh=f"{base['value']}^{fresh}",
        actions=actions,
        fallbacks={f"ServiceRequest?{c}": [f"ServiceRequest?{o}" for _, o in based_on[1:]]
                   for _, c in based_on[:1]},
    )  # fmt: skip


def _uid_key(uid: str) -> tuple[Element, str]:
    identifier = {"system": DICOM_UID, "value": f"urn:oid:{uid}"}
    return identifier, f"identifier={DICOM_UID}|urn:oid:{uid}"


def _accession_key(accession: str) -> tuple[Element, str]:
    return {"value": accession}, f"identifier={accession}"


def _optional(resource_type: str, identifier: Element, criteria: str) -> Element:
    logical = {k: v for k, v in identifier.items() if k in ("system", "value", "type")}
    return {"reference": f"{resource_type}?{criteria}", "type": resource_type,
            "identifier": logical}  # fmt: skip


def _observations(
    group: list[Segment],
    parts: _Parts,
    base: Element,
    context: Context,
    subject: Element,
    numbers: OrderNumbers,
) -> list[Upsert]:
    upserts = []
    for position, obx in parts.values:
        value_type = obx.value(2).upper()
        observation = build("Observation", {"OBX": obx, "OBR": group[0]}, context)
        observation.setdefault("status", "unknown")
        context.location = segment_location(obx, 5)
        observation.update(_value(value_type, obx, context))
        identifier = {"system": base["system"], "value": f"{REPORT_KEY}-obx{position}"}
        observation["identifier"] = [identifier]
        observation["subject"] = subject
        criteria = numbers.criteria(identifier)  # also those stored before order domains
        upserts.append(Upsert(observation, criteria, segment_location(group[0], 3)))
    return upserts


def _forms(parts: _Parts, actions: list[Upsert]) -> list[Element]:
    """Each ED document becomes a Binary (its id is its content's hash: a resend or an
    unchanged correction adds no copy) and a presentedForm attachment pointing at it."""
    forms = []
    for _, obx, found in parts.documents:
        attachment: Element = {"contentType": found.content_type}
        if found.data is not None:
            digest = hashlib.sha256(found.data).hexdigest()
            binary_id = str(uuid.uuid5(BINARY_NAMESPACE, digest))
            binary = {"resourceType": "Binary", "contentType": found.content_type,
                      "data": base64.b64encode(found.data).decode()}  # fmt: skip
            actions.append(Upsert(binary, f"_id={binary_id}", segment_location(obx, 5)))
            attachment["url"] = f"Binary/{binary_id}"
            attachment["size"] = len(found.data)
            # Attachment.hash is SHA-1 by the FHIR definition: an integrity check, no secret
            sha1 = hashlib.sha1(found.data, usedforsecurity=False)
            attachment["hash"] = base64.b64encode(sha1.digest()).decode()
        else:
            attachment["url"] = found.url
        if found.title:
            attachment["title"] = found.title
        forms.append(attachment)
    return forms


def _document_references(
    report: Element, parts: _Parts, base: Element, report_criteria: str, context: Context
) -> list[Upsert]:
    """A DocumentReference per document, so a portal lists the PDF beside the report."""
    attachments = [f for f in report.get("presentedForm", []) if "url" in f]
    upserts = []
    for (position, obx, _), attachment in zip(parts.documents, attachments, strict=True):
        identifier = {"system": base["system"], "value": f"{REPORT_KEY}-doc{position}"}
        related = [*report.get("basedOn", []), {"reference": f"DiagnosticReport?{report_criteria}"}]
        reference: Element = {
            "resourceType": "DocumentReference",
            "identifier": [identifier],
            "status": "current",
            "docStatus": DOC_STATUS.get(report["status"], "preliminary"),
            "subject": report["subject"],
            "content": [{"attachment": attachment}],
            "context": {"related": related},
        }
        code = obx.field(3)
        concept = cwe(code[0], context) if code else None
        reference["type"] = concept or report["code"]
        if "T" in str(report.get("effectiveDateTime", "")):
            reference["date"] = report["effectiveDateTime"]
        upserts.append(
            Upsert(reference, identifier_criteria([identifier]), segment_location(obx, 5))
        )
    return upserts


def _value(value_type: str, obx: Segment, context: Context) -> Element:
    rep = obx.field(5)[0]
    if value_type in ("CE", "CWE", "CNE"):
        concept = cwe(rep, context)
        return {"valueCodeableConcept": concept} if concept else {}
    comparator = ""
    number = component_of(rep, 1)
    if value_type == "SN":
        comparator, number = component_of(rep, 1), component_of(rep, 2)
        if component_of(rep, 3):
            return {"valueString": "".join(component_of(rep, n) for n in (1, 2, 3, 4))}
    quantity: Element = {"value": _number(number, context)}
    if comparator in COMPARATORS:
        quantity["comparator"] = comparator
    units = obx.field(6)
    if units:
        unit = units[0]
        quantity["unit"] = component_of(unit, 2) or component_of(unit, 1)
        if component_of(unit, 3).upper() == "UCUM":
            quantity.update({"system": UCUM, "code": component_of(unit, 1)})
    return {"valueQuantity": quantity}


def _number(text: str, context: Context) -> int | float:
    try:
        value = float(text.strip())
    except ValueError:
        raise MappingError("102", f"{text[:40]!r} is not a number", context.location) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise MappingError("102", "not a finite number", context.location)
    return int(value) if value.is_integer() and "." not in text else value
