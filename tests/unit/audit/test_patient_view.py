"""audit/patient_view.py: what a patient or a minor's representative sees of an event."""

from __future__ import annotations

from typing import Any

from audit.patient_view import masked, named_patients

Event = dict[str, Any]


def patient(patient_id: str) -> Event:
    return {"what": {"reference": f"Patient/{patient_id}"}, "role": {"code": "1"}}


def record(reference: str) -> Event:
    return {"what": {"reference": reference}, "role": {"code": "4"}}


def staff_search(*patients: str) -> Event:
    return {
        "resourceType": "AuditEvent",
        "id": "0000000000000007",
        "agent": [
            {"who": {"reference": "Practitioner/dr", "identifier": {"value": "dr-1"}},
             "requestor": True, "network": {"address": "10.9.9.9", "type": "2"},
             "policy": ["jti-staff"], "purposeOfUse": [{"coding": [{"code": "TREAT"}]}]},
            {"who": {"display": "MedBridge"}, "requestor": False},
        ],
        "entity": [
            *(patient(p) for p in patients),
            *(record(f"Observation/of-{p}") for p in patients),
            {"what": {"identifier": {"value": "urn:oid:1.2.3"}}, "name": "1.2.3",
             "role": {"code": "3"}},
            {"role": {"code": "24"}, "query": "T2JzZXJ2YXRpb24/Y29kZT14"},
        ],
    }  # fmt: skip


def test_an_event_of_the_readers_patient_alone_keeps_what_was_opened() -> None:
    shown = masked(staff_search("a"), frozenset({"a"}))
    assert shown["entity"] == staff_search("a")["entity"]
    # who, when and why stay; the staff's address and token id do not
    [who, _] = shown["agent"]
    assert who["who"]["reference"] == "Practitioner/dr"
    assert who["purposeOfUse"] == [{"coding": [{"code": "TREAT"}]}]
    assert "network" not in who
    assert "policy" not in who
    assert shown["meta"]["security"][0]["code"] == "REDACTED"


def test_an_event_naming_other_patients_shows_only_the_readers_patient() -> None:
    event = staff_search("a", "b")
    shown = masked(event, frozenset({"a"}))
    assert shown["entity"] == [patient("a")]
    text = str(shown)
    assert "Patient/b" not in text
    assert "of-b" not in text
    assert "1.2.3" not in text  # which study belonged to whom is not in the event
    assert "query" not in text
    assert shown["id"] == event["id"]
    assert event["entity"][1] == patient("b")  # the stored event is not changed


def test_another_patient_as_agent_is_not_named() -> None:
    event = staff_search("a")
    event["agent"][0]["who"] = {"reference": "Patient/b", "identifier": {"value": "bob"}}
    shown = masked(event, frozenset({"a"}))
    assert shown["agent"][0]["who"] == {"display": "another patient"}
    assert "entity" in shown
    assert named_patients(shown) == {"a"}


def test_a_representative_reads_for_the_minor() -> None:
    shown = masked(staff_search("minor", "other"), frozenset({"minor"}))
    assert named_patients(shown) == {"minor"}
    # read for nobody the event names: nothing of what was opened is left
    assert "entity" not in masked(staff_search("x"), frozenset())
