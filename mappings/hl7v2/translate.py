"""Message -> FHIR write actions, per message type; pure, so testable without a socket.

Resources refer to each other with conditional references (`Patient?identifier=s|v`),
which the writer resolves to the ids it stored. A reference that also carries an
`identifier` is optional: when nothing matches, it stays a logical reference (a report
that arrives before its order or its images still names them).
"""

from __future__ import annotations

import base64
import hashlib
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, tzinfo
from typing import Literal

from mappings.hl7v2.datatypes import CONVERTERS, V2_0203, Context, Element, cwe, offset_of
from mappings.hl7v2.engine import build
from mappings.hl7v2.errors import MappingError
from mappings.hl7v2.message import (
    Repetition,
    Segment,
    V2Message,
    component_of,
    segment_location,
)
from mappings.hl7v2.reports import (
    DICOM_UID,
    Document,
    OrderNumbers,
    document,
    is_impression,
    order_numbers,
    report_tables,
    uid_kind,
)
from mappings.hl7v2.tables import Tables, default_tables

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"
UCUM = "http://unitsofmeasure.org"
VALUE_TYPES = frozenset({"NM", "SN", "CE", "CWE", "CNE"})
TEXT_TYPES = frozenset({"TX", "FT", "ST"})
COMPARATORS = frozenset({"<", "<=", ">=", ">"})
# Stands for the key of the report an OBR updates, in a Report's identifiers and criteria:
# which stored report that is (or a new one) is known only against the store (writer.py).
REPORT_KEY = "{{report}}"
BINARY_NAMESPACE = uuid.UUID("0c8f4d6e-2b7a-4f1e-9d3c-5a6b7c8d9e0f")
DOC_STATUS = {"final": "final", "corrected": "amended", "amended": "amended",
              "appended": "amended", "cancelled": "entered-in-error"}  # fmt: skip


@dataclass(slots=True)
class Upsert:
    """Create or merge into the resource matching `criteria`.

    mode "existing": the resource must exist (cancel, status change); only the
    elements in `only` are changed. mode "fill": create, or set only the elements the
    stored resource lacks (an order's PID where ADT is the source of demographics).
    An element whose value is None is removed (HL7 `""`).
    """

    resource: Element
    criteria: str
    location: str
    mode: Literal["upsert", "existing", "fill"] = "upsert"
    only: tuple[str, ...] = ()


@dataclass(slots=True)
class Merge:
    """ADT A40: `merged` is replaced by `surviving`; references to it are repointed."""

    surviving: str
    merged: str
    location: str


@dataclass(slots=True)
class Report:
    """One OBR's writes (Binary, Observations, DiagnosticReport, DocumentReference).

    Their identifiers hold REPORT_KEY: the writer finds the reports already stored on
    the order (`order`) with the same `code` and decides, per docs/hl7.md, whether this
    OBR is a new version of the newest of them (a correction, a final after a
    preliminary, an unchanged resend) or a new report (key `fresh`). The first report
    on an order keeps the order's number as its key, as before reports were numbered.
    """

    order: str  # criteria of every report on the order
    base: Element  # the order's number (filler, else placer) in its domain
    code: str  # OBR-4
    correction: bool  # OBR-25 C
    fresh: str  # key of a new report that is not the order's first
    actions: list[Upsert]
    # "ServiceRequest?filler" -> placer, accession criteria tried when it matches nothing
    fallbacks: dict[str, list[str]] = field(default_factory=dict)


Action = Upsert | Merge | Report


@dataclass(slots=True)
class Translation:
    event: str  # ADT^A01
    actions: list[Action] = field(default_factory=list)
    # data-type errors in fields that identify nothing, dropped: answered AA + ERR (W)
    warnings: list[MappingError] = field(default_factory=list)


def translate(
    message: V2Message,
    tables: Tables | None = None,
    timezone: tzinfo = UTC,
    adt_demographics: bool = True,
) -> Translation:
    """The write actions for `message`; MappingError (AE/AR) for what cannot be applied.

    `adt_demographics`: only ADT messages change a stored Patient's values; the PID of
    other messages (orders, results) creates the Patient or fills what it lacks.
    """
    header = message.header
    sender = "-".join(p for p in (header.sending_application, header.sending_facility) if p)
    context = Context(tables or default_tables(), sender or "unknown", timezone)
    msh = message.segments[0]
    context.offset = offset_of(msh.value(7))
    handlers = SUPPORTED.get(header.message_type)
    if handlers is None:
        raise MappingError(
            "200", f"message type {header.message_type!r} is not accepted", "MSH^1^9", reject=True
        )
    handler = handlers.get(header.trigger_event)
    if handler is None:
        raise MappingError(
            "201",
            f"event {header.message_type}^{header.trigger_event} is not accepted",
            "MSH^1^9^1^2",
            reject=True,
        )
    translation = Translation(f"{header.message_type}^{header.trigger_event}")
    handler(message, context, translation)
    translation.warnings = context.warnings
    if adt_demographics and header.message_type != "ADT":
        for action in translation.actions:
            if isinstance(action, Upsert) and action.resource["resourceType"] == "Patient":
                action.mode = "fill"
    return translation


def identifier_criteria(identifiers: list[Element], system: bool = True) -> str:
    values = [f"{i['system']}|{i['value']}" if system else i["value"] for i in identifiers]
    return "identifier=" + ",".join(values)


# patients and encounters --------------------------------------------------------------


def _patient(message: V2Message, context: Context, translation: Translation) -> Element:
    """Upsert the PID patient (with its practitioners); return a reference to it."""
    pid = message.first("PID")
    if pid is None:
        raise MappingError("100", "the message has no PID segment", "PID")
    segments = {"PID": pid}
    pd1 = message.first("PD1")
    if pd1 is not None:
        segments["PD1"] = pd1
    patient = build("Patient", segments, context)
    patient["identifier"] = _sender_issued(pid.field(3), message, context) or patient["identifier"]
    criteria = identifier_criteria(patient["identifier"])
    _side(context, translation)
    translation.actions.append(Upsert(patient, criteria, segment_location(pid, 3)))
    return {"reference": f"Patient?{criteria}"}


def _encounter(
    message: V2Message, context: Context, translation: Translation, status: str
) -> Element | None:
    pv1 = message.first("PV1")
    if pv1 is None:
        return None
    segments = {"PV1": pv1}
    evn = message.first("EVN")
    if evn is not None:
        segments["EVN"] = evn
    encounter = build("Encounter", segments, context)
    if "identifier" not in encounter:
        if status == "":
            return None  # an order without a visit number names no encounter
        # Without PV1-19 the message itself identifies the visit, so a resend is no new one.
        system = context.tables.unassigned_system.format(sender=context.sender, kind="message")
        encounter["identifier"] = [{"system": system, "value": message.header.control_id}]
    elif status == "":
        status = "in-progress"
    encounter["status"] = status
    if "class" in encounter:
        encounter["class"]["system"] = ACT_CODE
    else:
        encounter["class"] = {"system": NULL_FLAVOR, "code": "UNK"}
    encounter["subject"] = _patient_reference(translation)
    _side(context, translation)
    criteria = identifier_criteria(encounter["identifier"])
    translation.actions.append(Upsert(encounter, criteria, segment_location(pv1, 19)))
    return {"reference": f"Encounter?{criteria}"}


def _sender_issued(
    repetitions: list[Repetition], message: V2Message, context: Context
) -> list[Element]:
    """Patient identifiers (CX) with the sender's default assigning authority where CX-4
    names none (tables `senders`); empty when the sender has no default authority."""
    header = message.header
    issuer = context.tables.sender_issuer(header.sending_application, header.sending_facility)
    if issuer is None:
        return []
    identifiers = []
    for rep in repetitions:
        identifier = CONVERTERS["CX"](rep, context)
        if identifier is None:
            continue
        if not (len(rep) > 3 and any(rep[3])):
            identifier["system"] = context.tables.system_for(issuer, "", "", context.sender, "")
        identifiers.append(identifier)
    return identifiers


def _patient_reference(translation: Translation) -> Element:
    for action in translation.actions:
        if isinstance(action, Upsert) and action.resource["resourceType"] == "Patient":
            return {"reference": f"Patient?{action.criteria}"}
    raise AssertionError("patient is translated first")


def _side(context: Context, translation: Translation) -> None:
    """Practitioners met in XCN fields are written before the resource naming them."""
    for resource, criteria in context.side:
        translation.actions.insert(
            len(translation.actions), Upsert(resource, criteria, context.location)
        )
    context.side.clear()


def adt_patient(message: V2Message, context: Context, translation: Translation) -> None:
    _patient(message, context, translation)


def adt_visit(status: str) -> Handler:
    def handle(message: V2Message, context: Context, translation: Translation) -> None:
        _patient(message, context, translation)
        _encounter(message, context, translation, status)

    return handle


def adt_merge(message: V2Message, context: Context, translation: Translation) -> None:
    _patient(message, context, translation)
    surviving = _patient_reference(translation)["reference"].partition("?")[2]
    mrg = message.first("MRG")
    if mrg is None:
        raise MappingError("100", "ADT^A40 needs an MRG segment", "MRG")
    converter = CONVERTERS["CX"]
    merged = _sender_issued(mrg.field(1), message, context) or [
        i for i in (converter(rep, context) for rep in mrg.field(1)) if i is not None
    ]
    if not merged:
        raise MappingError("101", "MRG-1 prior patient identifier is required", "MRG^1^1")
    translation.actions.append(
        Merge(surviving, identifier_criteria(merged), segment_location(mrg, 1))
    )


# orders -----------------------------------------------------------------------------


def order(message: V2Message, context: Context, translation: Translation) -> None:
    """ORM^O01 / OMI^O23: one ServiceRequest per ORC group."""
    subject = _patient(message, context, translation)
    encounter = _encounter(message, context, translation, "")
    groups = list(message.groups("ORC", stop=frozenset({"ORC"})))
    if not groups:
        raise MappingError("100", "the order message has no ORC segment", "ORC")
    numbers = order_numbers(message.header, context)
    for group in groups:
        _order_group(group, context, translation, subject, encounter, numbers)


def _order_group(
    group: list[Segment],
    context: Context,
    translation: Translation,
    subject: Element,
    encounter: Element | None,
    numbers: OrderNumbers,
) -> None:
    orc = group[0]
    segments = _first_of_each(group)
    control = orc.value(1).upper()
    action = context.tables.code("order-control", control)
    if action is None:
        raise MappingError(
            "103", f"order control {control[:8]!r} is not handled", segment_location(orc, 1)
        )
    request = build("ServiceRequest", segments, context)
    if "identifier" in request:  # numbers without a namespace: the sender's order domain
        request["identifier"] = [numbers.rescope(i) for i in request["identifier"]]
    keys = [i for i in request.get("identifier", []) if _type_code(i) in ("PLAC", "FILL")]
    if not keys:
        raise MappingError(
            "101", "ORC-2 or ORC-3 order number is required", segment_location(orc, 2)
        )
    criteria = numbers.criteria(keys[0])
    order_status = orc.value(5).upper()
    status = context.tables.code("order-status", order_status) or context.tables.code(
        "order-control-status", control
    )
    if action == "status" and not order_status:
        raise MappingError("101", "ORC-5 order status is required", segment_location(orc, 5))
    if action in ("cancel", "status"):
        change = {"resourceType": "ServiceRequest", "status": status or "active"}
        translation.actions.append(
            Upsert(change, criteria, segment_location(orc, 2), "existing", ("status",))
        )
        return
    request.update({"status": status or "active", "intent": "order", "subject": subject})
    if encounter is not None:
        request["encounter"] = encounter
    _side(context, translation)
    translation.actions.append(Upsert(request, criteria, segment_location(orc, 2)))


def _first_of_each(group: list[Segment]) -> dict[str, Segment]:
    segments: dict[str, Segment] = {}
    for segment in group:
        segments.setdefault(segment.name, segment)
    return segments


def _type_code(identifier: Element) -> str:
    codings = identifier.get("type", {}).get("coding", [{}])
    return str(codings[0].get("code", ""))


# results ----------------------------------------------------------------------------


def result(message: V2Message, context: Context, translation: Translation) -> None:
    """ORU^R01: a DiagnosticReport per OBR, Observations for numeric and coded OBX."""
    subject = _patient(message, context, translation)
    numbers = order_numbers(message.header, context)
    orc: Segment | None = None
    found = False
    for group in message.groups("OBR", stop=frozenset({"OBR", "ORC"})):
        preceding = group[0].index - 2
        if preceding >= 0 and message.segments[preceding].name == "ORC":
            orc = message.segments[preceding]
        fresh = f"{message.header.control_id}.{group[0].value(1) or group[0].index}"
        translation.actions.append(_report(group, orc, context, subject, numbers, fresh))
        found = True
    if not found:
        raise MappingError("100", "the result message has no OBR segment", "OBR")


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


def _report(
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


Handler = Callable[[V2Message, Context, Translation], None]
SUPPORTED: dict[str, dict[str, Handler]] = {
    "ADT": {
        "A01": adt_visit("in-progress"),
        "A04": adt_visit("arrived"),
        "A08": adt_patient,
        "A28": adt_patient,
        "A31": adt_patient,
        "A40": adt_merge,
    },
    "ORM": {"O01": order},
    "OMI": {"O23": order},
    "ORU": {"R01": result},
}
