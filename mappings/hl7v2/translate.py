"""Message -> FHIR write actions, per message type; pure, so testable without a socket.

Resources refer to each other with conditional references (`Patient?identifier=s|v`),
which the writer resolves to the ids it stored. A reference that also carries an
`identifier` is optional: when nothing matches, it stays a logical reference (a report
that arrives before its order or its images still names them). ORU report groups are
built in report_translate.py.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, tzinfo

from mappings.hl7v2.actions import (
    REPORT_KEY,
    Action,
    Merge,
    Report,
    Translation,
    Upsert,
    identifier_criteria,
)
from mappings.hl7v2.datatypes import CONVERTERS, Context, Element, offset_of
from mappings.hl7v2.engine import build
from mappings.hl7v2.errors import MappingError
from mappings.hl7v2.message import Repetition, Segment, V2Message, segment_location
from mappings.hl7v2.report_translate import report
from mappings.hl7v2.reports import OrderNumbers, order_numbers
from mappings.hl7v2.tables import Tables, default_tables

__all__ = ["REPORT_KEY", "Action", "Merge", "Report", "Translation", "Upsert", "translate"]

ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
NULL_FLAVOR = "http://terminology.hl7.org/CodeSystem/v3-NullFlavor"


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
        translation.actions.append(report(group, orc, context, subject, numbers, fresh))
        found = True
    if not found:
        raise MappingError("100", "the result message has no OBR segment", "OBR")


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
