from __future__ import annotations

from typing import Any

from portal.access_log import openings

PURPOSE = "http://terminology.hl7.org/CodeSystem/v3-ActReason"


def event(recorded: str, who: str, purpose: str | None = None) -> dict[str, Any]:
    resource: dict[str, Any] = {
        "resourceType": "AuditEvent", "recorded": recorded,
        "subtype": [{"code": "read"}],
        "agent": [{"type": {"coding": [{"code": "humanuser", "display": "human user"}]},
                   "who": {"reference": who}, "requestor": True}],
        "entity": [{"what": {"reference": "Patient/p1"}}],
    }  # fmt: skip
    if purpose:
        resource["purposeOfEvent"] = [{"coding": [{"system": PURPOSE, "code": purpose}]}]
        if purpose == "BTG":
            resource["subtype"].append({"code": "110113"})
    return {"resource": resource}


def test_overrides_come_first_and_marked_then_the_newest() -> None:
    bundle = {"entry": [
        event("2026-01-01T10:00:00Z", "Practitioner/a"),
        event("2026-01-01T09:00:00Z", "Practitioner/b", "BTG"),
        event("2026-01-01T11:00:00Z", "Practitioner/c"),
        event("2026-01-01T08:00:00Z", "Practitioner/d", "ETREAT"),
    ]}  # fmt: skip
    rows = openings(bundle)
    assert [r.who for r in rows] == ["Practitioner/b", "Practitioner/d", "Practitioner/c",
                                     "Practitioner/a"]  # fmt: skip
    assert [r.override for r in rows] == [True, True, False, False]
    assert rows[0].purposes == ("BTG",)
    assert rows[0].role == "human user"
    assert rows[0].what == ("Patient/p1",)


def test_an_event_without_agents_or_entities_still_makes_a_row() -> None:
    (row,) = openings({"entry": [{"resource": {"resourceType": "AuditEvent"}}]})
    assert (row.who, row.what, row.override) == ("", (), False)
