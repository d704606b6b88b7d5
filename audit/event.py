"""One R4 AuditEvent for one access, built from the `Access` and what the pipeline learned.

IHE Basic Audit Log Patterns (BALP) for FHIR REST and DICOM PS3.15 A.5 for DICOM: the
codes are data (`codes.json`); this module only places them. The token is named by its
`jti` (BALP puts it in the user agent's `policy`), never in full.
"""

from __future__ import annotations

import base64
import json
import time
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any

from access.access import Access
from access.context import Actor, Door, RequestContext
from access.errors import AccessError

Document = dict[str, Any]
# smart/hooks.py CLAIMS_NOTE: the validated token's claims (audit may not import smart/,
# so the claims are read by attribute)
CLAIMS_NOTE = "smart.claims"
# consent/hooks.py OVERRIDES_NOTE: the rule-3 overrides the consent-show hook applied
OVERRIDES_NOTE = "consent.overrides"
OVERRIDE_SYSTEM = "urn:medbridge:consent-override"
# audit/patient_view.py note_shown_patients: the patients whose records were shown
SHOWN_PATIENTS_NOTE = "audit.shown-patients"
PURPOSE_SYSTEM = "http://terminology.hl7.org/CodeSystem/v3-ActReason"
TRIGGER_EVENT_SYSTEM = "http://terminology.hl7.org/CodeSystem/v2-0003"
ACTION_SYSTEM = "http://hl7.org/fhir/restful-interaction"
UID_SYSTEM = "urn:dicom:uid"
IP_ADDRESS = "2"  # AuditEvent.agent.network.type: IP address
# DICOM UIDs a door notes as touched: "study:<uid>" (imaging/import_door.py), and the
# instances a retrieve handed over with their series and study (imaging/dimse/door.py)
STUDY_PREFIX = "study:"
SERIES_PREFIX = "series:"
INSTANCE_PREFIX = "instance:"
# imaging/dimse/door.py DESTINATION_NOTE: a C-MOVE's move destination (AE title, host)
DESTINATION_NOTE = "audit.move-destination"
AE_SYSTEM = "urn:medbridge:actor:dicom-ae"


@cache
def codes() -> Document:
    loaded: Document = json.loads(
        (resources.files("audit") / "codes.json").read_text(encoding="utf-8")
    )
    return loaded


@dataclass(slots=True)
class Learned:
    """What an access and its children (bundle entries, an HL7 message's writes) touched."""

    references: list[str] = field(default_factory=list)  # Type/id, in order, no repeats
    patients: set[str] = field(default_factory=set)
    studies: set[str] = field(default_factory=set)
    series: set[str] = field(default_factory=set)
    instances: set[str] = field(default_factory=set)

    def add_reference(self, reference: str) -> None:
        if reference.startswith(STUDY_PREFIX):
            self.studies.add(reference.removeprefix(STUDY_PREFIX))
            return
        if reference.startswith(SERIES_PREFIX):
            self.series.add(reference.removeprefix(SERIES_PREFIX))
            return
        if reference.startswith(INSTANCE_PREFIX):
            self.instances.add(reference.removeprefix(INSTANCE_PREFIX))
            return
        # Type/id/_history/n -> Type/id: the entity is the resource
        reference = "/".join(reference.split("/")[:2])
        if reference not in self.references:
            self.references.append(reference)
        if reference.startswith("Patient/"):
            self.patients.add(reference.removeprefix("Patient/"))

    def merge(self, other: Learned) -> None:
        for reference in other.references:
            self.add_reference(reference)
        self.patients |= other.patients
        self.studies |= other.studies
        self.series |= other.series
        self.instances |= other.instances


def learned_of(access: Access | None, touched: list[str]) -> Learned:
    learned = Learned()
    for reference in touched:
        learned.add_reference(reference)
    if access is not None:
        if access.resource_id and len(access.resource_types) == 1:
            [resource_type] = access.resource_types
            learned.add_reference(f"{resource_type}/{access.resource_id}")
        learned.patients |= access.patients
        learned.studies |= access.studies
        learned.series |= access.series
        learned.instances |= access.instances
    return learned


def instant(epoch: float) -> str:
    """An R4 instant with milliseconds, in UTC."""
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))
    return f"{seconds}.{int(epoch * 1000) % 1000:03d}Z"


def outcome_of(error: AccessError | None) -> tuple[str, str | None]:
    """AuditEvent.outcome: 0 success, 4 minor failure (the request was refused or wrong),
    8 serious failure (the server failed); and the catalog code with its text."""
    if error is None:
        return "0", None
    severity = "8" if error.status >= 500 else "4"
    return severity, f"{error.code}: {error.entry.text}"


def build(
    access: Access | None,
    context: RequestContext,
    learned: Learned,
    error: AccessError | None,
    source: str,
    recorded: float,
) -> Document:
    """The AuditEvent (without id, meta and chain) of one access."""
    table = codes()
    action_name = str(access.action) if access is not None else "admin"
    row = table["actions"][action_name]
    event: Document = {
        "resourceType": "AuditEvent",
        "type": table["types"][row["type"]],
        "subtype": _subtype(access, action_name),
        "action": row["action"],
        "recorded": instant(recorded),
    }
    outcome, description = outcome_of(error)
    event["outcome"] = outcome
    if description is not None:
        event["outcomeDesc"] = description
    purpose = (access.purpose_of_use if access is not None else None) or context.purpose_of_use
    alert = table["security_alert"]
    purposes: list[str] = []
    if purpose is not None and purpose in alert["purposes"]:
        # break-the-glass: flagged for the security officer, and why on the event itself
        event["subtype"].append(alert["coding"])
        purposes.append(purpose)
    overrides = overrides_of(context)
    for rule in sorted({o["rule"] for o in overrides}):
        event["subtype"].append(_override_coding(rule))
    purposes += sorted({o.get("purpose") or "" for o in overrides} - {"", *purposes})
    if purposes:
        event["purposeOfEvent"] = [
            {"coding": [{"system": PURPOSE_SYSTEM, "code": code}]} for code in purposes
        ]
    event["agent"] = _agents(access, context, purpose)
    event["source"] = {
        "site": str(context.door),
        "observer": {"display": source},
        "type": [table["source_type"]],
    }
    shown = context.notes.get(SHOWN_PATIENTS_NOTE)
    if isinstance(shown, set) and not shown <= learned.patients:
        # an Observation read names its patient: the patient's access log finds it
        learned = Learned(learned.references, learned.patients | shown, learned.studies,
                          learned.series, learned.instances)  # fmt: skip
    entities = _entities(access, learned, overrides)
    if entities:
        event["entity"] = entities
    return event


def _subtype(access: Access | None, action_name: str) -> list[Document]:
    if access is not None and access.door is Door.FHIR:
        return [{"system": ACTION_SYSTEM, "code": action_name}]
    if access is not None and access.door is Door.HL7V2 and access.event:
        # ADT^A08 -> the trigger event A08 (HL7 table 0003)
        trigger = access.event.partition("^")[2] or access.event
        return [{"system": TRIGGER_EVENT_SYSTEM, "code": trigger, "display": access.event}]
    subtype: Document = {"system": ACTION_SYSTEM if action_name in _REST else _LOCAL,
                         "code": action_name}  # fmt: skip
    if access is not None and access.event:
        subtype["display"] = access.event[:200]
    return [subtype]


# the DICOM, HL7 and command actions are not restful interactions: named in a system of
# this server's (docs/audit.md)
_LOCAL = "urn:medbridge:access-action"
_REST = frozenset({"read", "vread", "update", "patch", "delete", "create", "search-type",
                   "search-system", "capabilities", "batch", "transaction", "operation",
                   "history-instance", "history-type", "history-system"})  # fmt: skip


def _agents(access: Access | None, context: RequestContext, purpose: str | None) -> list[Document]:
    table = codes()
    actor: Actor = access.actor if access is not None else context.actor
    claims = context.notes.get(CLAIMS_NOTE)
    who: Document = {"identifier": {"system": f"urn:medbridge:actor:{actor.kind}",
                                    "value": actor.identifier}}  # fmt: skip
    fhir_user = getattr(claims, "fhir_user", None)
    if isinstance(fhir_user, str) and fhir_user:
        who["reference"] = fhir_user
    if actor.display:
        who["display"] = actor.display
    agent_type = table["agent_types"].get(actor.kind, table["agent_types"]["anonymous"])
    requestor: Document = {"type": {"coding": [agent_type]}, "who": who, "requestor": True}
    address = (access.client_address if access is not None else None) or context.peer
    if address:
        requestor["network"] = {"address": address[:200], "type": IP_ADDRESS}
    if purpose:
        requestor["purposeOfUse"] = [{"coding": [{"system": PURPOSE_SYSTEM, "code": purpose}]}]
    token_id = getattr(claims, "token_id", None)
    if isinstance(token_id, str) and token_id:
        requestor["policy"] = [token_id]
    agents = [requestor]
    client_id = getattr(claims, "client_id", None)
    if isinstance(client_id, str) and client_id and client_id != actor.identifier:
        agents.append({
            "type": {"coding": [table["application_agent_type"]]},
            "who": {"identifier": {"system": "urn:medbridge:client", "value": client_id}},
            "requestor": False,
        })  # fmt: skip
    destination = context.notes.get(DESTINATION_NOTE)
    if isinstance(destination, tuple) and destination and destination[0]:
        # a C-MOVE sends to a third party: PS3.15 A.5.3.2 names it the Destination, and
        # this server the Source of the instances
        title, host = destination[0], destination[1] if len(destination) > 1 else None
        moved: Document = {"type": {"coding": [table["server_agent_type"]]},
                           "who": {"identifier": {"system": AE_SYSTEM, "value": title}},
                           "requestor": False}  # fmt: skip
        if host:
            moved["network"] = {"address": str(host)[:200], "type": IP_ADDRESS}
        agents.append(moved)
        agents.append({"type": {"coding": [table["source_agent_type"]]},
                       "who": {"display": "MedBridge"}, "requestor": False})  # fmt: skip
        return agents
    agents.append({
        "type": {"coding": [table["server_agent_type"]]},
        "who": {"display": "MedBridge"},
        "requestor": False,
    })  # fmt: skip
    return agents


def overrides_of(context: RequestContext) -> list[dict[str, str]]:
    """The consent overrides (rule 3) noted for this access and its children (a bundle's
    entries share their parent's context), each with rule, purpose and record."""
    noted = context.notes.get(OVERRIDES_NOTE) or []
    return [o for o in noted if isinstance(o, dict) and isinstance(o.get("rule"), str)]


def _override_coding(rule: str) -> Document:
    display = codes()["consent_overrides"].get(rule, "consent override")
    return {"system": OVERRIDE_SYSTEM, "code": rule, "display": display}


def _entities(
    access: Access | None, learned: Learned, overrides: list[dict[str, str]] | None = None
) -> list[Document]:
    table = codes()
    types, roles = table["entity_types"], table["entity_roles"]
    # which record was shown only because of which override: said on its entity
    lifted: dict[str, set[str]] = {}
    for override in overrides or []:
        record = "/".join(str(override.get("record", "")).split("/")[:2])
        lifted.setdefault(record, set()).add(override["rule"])
    entities: list[Document] = []
    for patient in sorted(learned.patients):
        entities.append({"what": {"reference": f"Patient/{patient}"}, "type": types["person"],
                         "role": roles["patient"]})  # fmt: skip
    for reference in learned.references:
        if (
            reference.startswith("Patient/")
            and reference.removeprefix("Patient/") in learned.patients
        ):
            continue
        entity: Document = {"what": {"reference": reference}, "type": types["system-object"],
                            "role": roles["domain-resource"]}  # fmt: skip
        if reference in lifted:
            entity["detail"] = [{"type": OVERRIDE_SYSTEM, "valueString": rule}
                                for rule in sorted(lifted[reference])]  # fmt: skip
        entities.append(entity)
    for kind, uids in (("study", learned.studies), ("series", learned.series),
                       ("instance", learned.instances)):  # fmt: skip
        for uid in sorted(uids):
            identifier = {"type": table["dicom_identifiers"][kind], "system": UID_SYSTEM,
                          "value": f"urn:oid:{uid}"}  # fmt: skip
            entities.append({"what": {"identifier": identifier}, "type": types["system-object"],
                             "role": roles["report"], "name": uid})  # fmt: skip
    query = _query(access)
    if query is not None:
        entities.append({"type": types["system-object"], "role": roles["query"],
                         "query": base64.b64encode(query.encode()).decode("ascii")})  # fmt: skip
    return entities


def _query(access: Access | None) -> str | None:
    """The query of a search, as the client's parameters (BALP: entity.query, base64)."""
    if access is None:
        return None
    pairs = access.search or access.patient_query
    if not pairs and access.action not in _SEARCHES:
        return None
    text = "&".join(f"{name}={value}" for name, value in pairs)
    if access.door is Door.FHIR and len(access.resource_types) == 1:
        [resource_type] = access.resource_types
        return f"{resource_type}?{text}"
    return text if pairs else None


_SEARCHES = frozenset({"search-type", "search-system", "qido-rs", "c-find", "mwl-find"})
