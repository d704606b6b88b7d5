"""audit/event.py: the AuditEvent of one access, from the Access and what it touched."""

from __future__ import annotations

import base64
from dataclasses import dataclass

import pytest

from access.access import Access, Action
from access.context import Actor, Door, RequestContext
from access.errors import AccessError
from audit.event import (
    CLAIMS_NOTE,
    OVERRIDE_SYSTEM,
    OVERRIDES_NOTE,
    PURPOSE_SYSTEM,
    Learned,
    build,
    codes,
    learned_of,
    outcome_of,
)

USER = Actor("user", "dr-jonaitis")


@dataclass(frozen=True)
class Claims:
    """The attributes of smart.claims.Claims that the audit reads."""

    token_id: str
    client_id: str
    fhir_user: str | None = None


def event(access: Access, touched: list[str] | None = None, **context: object) -> dict[str, object]:
    request = RequestContext(access.door, actor=access.actor, **context)  # type: ignore[arg-type]
    return build(access, request, learned_of(access, touched or []), None, "host-1", 0.0)


def test_every_action_has_a_type_and_an_action_code() -> None:
    table = codes()
    for action in Action:
        row = table["actions"][str(action)]
        assert row["type"] in table["types"], action
        assert row["action"] in {"C", "R", "U", "D", "E"}, action


def test_a_fhir_read_follows_the_rest_pattern() -> None:
    access = Access(Door.FHIR, Action.READ, USER, frozenset({"Patient"}), "p1",
                    patients=frozenset({"p1"}), client_address="10.0.0.7",
                    purpose_of_use="ETREAT")  # fmt: skip
    built = event(access, ["Patient/p1"])
    assert built["type"] == codes()["types"]["rest"]
    assert built["subtype"] == [{"system": "http://hl7.org/fhir/restful-interaction",
                                 "code": "read"}]  # fmt: skip
    assert built["action"] == "R"
    assert built["outcome"] == "0"
    assert built["recorded"] == "1970-01-01T00:00:00.000Z"
    [who, server] = built["agent"]  # type: ignore[misc]
    assert who["requestor"] is True
    assert who["who"]["identifier"]["value"] == "dr-jonaitis"
    assert who["network"] == {"address": "10.0.0.7", "type": "2"}
    assert who["purposeOfUse"][0]["coding"][0]["code"] == "ETREAT"
    assert server["requestor"] is False
    # the patient once, as a patient entity, though it is also the resource read
    [entity] = built["entity"]  # type: ignore[misc]
    assert entity["what"] == {"reference": "Patient/p1"}
    assert entity["role"]["code"] == "1"


def test_the_token_is_named_by_its_jti_only() -> None:
    access = Access(Door.FHIR, Action.SEARCH_TYPE, USER, frozenset({"Observation"}))
    claims = Claims("jti-123", "viewer-app", "Practitioner/7")
    built = event(access, notes={CLAIMS_NOTE: claims})
    who = built["agent"][0]  # type: ignore[index]
    assert who["policy"] == ["jti-123"]
    assert who["who"]["reference"] == "Practitioner/7"
    apps = [
        a for a in built["agent"] if a["who"].get("identifier", {}).get("value") == "viewer-app"
    ]  # type: ignore[union-attr]
    assert len(apps) == 1
    assert str(built).count("jti-123") == 1  # in the policy, nowhere else


def test_a_search_carries_its_query_and_what_it_returned() -> None:
    access = Access(Door.FHIR, Action.SEARCH_TYPE, USER, frozenset({"Observation"}),
                    search=(("code", "8867-4"), ("subject", "Patient/p1")),
                    patients=frozenset({"p1"}))  # fmt: skip
    built = event(access, ["Observation/o1", "Observation/o2"])
    entities = built["entity"]
    assert isinstance(entities, list)
    references = [e["what"]["reference"] for e in entities if "what" in e]
    assert references == ["Patient/p1", "Observation/o1", "Observation/o2"]
    [query] = [e for e in entities if e["role"]["code"] == "24"]
    text = base64.b64decode(query["query"]).decode()
    assert text == "Observation?code=8867-4&subject=Patient/p1"


def test_dicom_uids_are_entities_with_their_dicom_identifier_types() -> None:
    access = Access(Door.DIMSE, Action.C_MOVE, Actor("dicom-ae", "VIEWER"),
                    studies=frozenset({"1.2.3"}), series=frozenset({"1.2.3.4"}),
                    instances=frozenset({"1.2.3.4.5"}))  # fmt: skip
    built = event(access)
    assert built["type"]["code"] == "110104"  # type: ignore[index]
    assert built["action"] == "R"
    names = {e["name"]: e["what"]["identifier"] for e in built["entity"]}  # type: ignore[union-attr]
    assert names["1.2.3"]["value"] == "urn:oid:1.2.3"
    assert names["1.2.3"]["type"]["coding"][0]["code"] == "110180"
    assert names["1.2.3.4"]["type"]["coding"][0]["code"] == "112002"
    assert names["1.2.3.4.5"]["type"]["text"] == "SOPInstanceUID"


def test_an_hl7_message_names_its_trigger_event() -> None:
    access = Access(Door.HL7V2, Action.HL7_EVENT, Actor("hl7-peer", "RIS^HOSP"), event="ADT^A08")
    built = event(access)
    assert built["type"]["code"] == "110110"  # type: ignore[index]
    assert built["subtype"] == [{"system": "http://terminology.hl7.org/CodeSystem/v2-0003",
                                 "code": "A08", "display": "ADT^A08"}]  # fmt: skip


def test_children_fold_into_one_learned_set() -> None:
    parent = Learned()
    parent.merge(learned_of(None, ["Patient/p1/_history/2", "Encounter/e1"]))
    parent.merge(learned_of(None, ["Patient/p1", "study:1.2.3"]))
    assert parent.references == ["Patient/p1", "Encounter/e1"]
    assert parent.patients == {"p1"}
    assert parent.studies == {"1.2.3"}


@pytest.mark.parametrize(
    ("code", "expected"),
    [(None, "0"), ("MB-1002", "4"), ("MB-4001", "4"), ("MB-1000", "8"), ("MB-1090", "8")],
)
def test_outcomes_follow_the_catalog_status(code: str | None, expected: str) -> None:
    error = AccessError(code) if code is not None else None
    outcome, description = outcome_of(error)
    assert outcome == expected
    assert (description is None) == (code is None)
    if code is not None:
        assert description is not None
        assert description.startswith(code)


def test_break_the_glass_is_flagged_as_a_security_alert() -> None:
    access = Access(Door.FHIR, Action.READ, USER, frozenset({"Observation"}), "o1",
                    purpose_of_use="BTG")  # fmt: skip
    built = event(access)
    subtypes = built["subtype"]
    assert isinstance(subtypes, list)
    assert {"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "110113",
            "display": "Security Alert"} in subtypes  # fmt: skip
    reason = {"system": "http://terminology.hl7.org/CodeSystem/v3-ActReason", "code": "BTG"}
    assert built["purposeOfEvent"] == [{"coding": [reason]}]
    treated = event(Access(Door.FHIR, Action.READ, USER, purpose_of_use="TREAT"))
    assert "purposeOfEvent" not in treated
    assert len(treated["subtype"]) == 1  # type: ignore[arg-type]


def _override(rule: str, purpose: str, record: str) -> dict[str, str]:
    return {"rule": rule, "override": purpose or "family-doctor", "purpose": purpose,
            "patient": "Patient/p1", "record": record, "reason": "r"}  # fmt: skip


def test_a_consent_override_is_said_on_the_event_and_on_the_record_it_lifted() -> None:
    access = Access(Door.FHIR, Action.SEARCH_TYPE, USER, frozenset({"Observation"}),
                    patients=frozenset({"p1"}), purpose_of_use="ETREAT")  # fmt: skip
    notes = {OVERRIDES_NOTE: [_override("3-emergency", "ETREAT", "Observation/o1"),
                              _override("3-family-doctor", "", "Observation/o1"),
                              _override("3-emergency", "ETREAT", "Observation/o2")]}  # fmt: skip
    built = event(access, ["Observation/o1", "Observation/o2", "Observation/o3"], notes=notes)
    overrides = [s for s in built["subtype"] if s["system"] == OVERRIDE_SYSTEM]  # type: ignore[union-attr]
    assert [s["code"] for s in overrides] == ["3-emergency", "3-family-doctor"]
    assert all(s["display"].startswith("consent override") for s in overrides)
    assert built["purposeOfEvent"] == [{"coding": [{"system": PURPOSE_SYSTEM, "code": "ETREAT"}]}]
    details = {e["what"]["reference"]: e.get("detail") for e in built["entity"]  # type: ignore[union-attr]
               if "what" in e}  # fmt: skip
    assert details["Observation/o1"] == [
        {"type": OVERRIDE_SYSTEM, "valueString": "3-emergency"},
        {"type": OVERRIDE_SYSTEM, "valueString": "3-family-doctor"},
    ]
    assert details["Observation/o2"] == [{"type": OVERRIDE_SYSTEM, "valueString": "3-emergency"}]
    assert details["Observation/o3"] is None


def test_a_break_the_glass_override_names_its_purpose_once() -> None:
    access = Access(Door.FHIR, Action.READ, USER, frozenset({"Observation"}), "o1",
                    purpose_of_use="BTG")  # fmt: skip
    notes = {OVERRIDES_NOTE: [_override("3-emergency", "BTG", "Observation/o1")]}
    built = event(access, notes=notes)
    codes_ = [s["code"] for s in built["subtype"]]  # type: ignore[union-attr]
    assert codes_ == ["read", "110113", "3-emergency"]
    assert built["purposeOfEvent"] == [{"coding": [{"system": PURPOSE_SYSTEM, "code": "BTG"}]}]


def test_no_override_no_marker() -> None:
    access = Access(Door.FHIR, Action.READ, USER, frozenset({"Observation"}), "o1")
    built = event(access, notes={OVERRIDES_NOTE: []})
    assert [s["code"] for s in built["subtype"]] == ["read"]  # type: ignore[union-attr]
    assert "purposeOfEvent" not in built
