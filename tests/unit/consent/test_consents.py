"""R4 Consent and record JSON -> the engine's facts."""

from __future__ import annotations

from datetime import date
from typing import Any

from consent.consents import consent_facts, unhideable_hidden
from consent.facts import ConsentFacts
from consent.records import patient_facts, record_facts

TODAY = date(2026, 12, 6)
PRIVACY = {
    "coding": [
        {"system": "http://terminology.hl7.org/CodeSystem/consentscope", "code": "patient-privacy"}
    ]
}


def consent(provision: dict[str, Any], status: str = "active", scope: Any = PRIVACY) -> Any:
    return {
        "resourceType": "Consent",
        "id": "c1",
        "status": status,
        "scope": scope,
        "patient": {"reference": "Patient/p"},
        "provision": provision,
    }


def test_a_hiding_provision_with_its_exceptions_and_named_people() -> None:
    facts = consent_facts(
        consent(
            {
                "type": "permit",
                "provision": [
                    {
                        "type": "deny",
                        "class": [{"system": "http://hl7.org/fhir/resource-types",
                                   "code": "Observation"}],
                        "code": [{"coding": [{"system": "http://x", "code": "mental"}]}],
                        "securityLabel": [{"code": "R"}],
                        "data": [{"meaning": "related",
                                  "reference": {"reference": "Organization/o"}}],
                        "dataPeriod": {"start": "2024", "end": "2025-06-30"},
                    },
                    {
                        "type": "permit",
                        "actor": [{"role": {"text": "friend"},
                                   "reference": {"reference": "RelatedPerson/r"}}],
                    },
                ],
            }
        ),
        TODAY,
    )  # fmt: skip
    assert facts == [
        ConsentFacts("c1", "patient-privacy", "permit", 0),
        ConsentFacts(
            "c1", "patient-privacy", "deny", 1,
            data=frozenset({"Organization/o"}),
            classes=frozenset({"Observation"}),
            codes=frozenset({"mental", "http://x|mental"}),
            security_labels=frozenset({"R"}),
            data_period=(date(2024, 1, 1), date(2025, 6, 30)),
        ),
        ConsentFacts(
            "c1", "patient-privacy", "permit", 1, actors=frozenset({"RelatedPerson/r"})
        ),
    ]  # fmt: skip


def test_only_active_consents_of_the_two_scopes_count() -> None:
    assert consent_facts(consent({"type": "deny"}, status="inactive"), TODAY) == []
    assert consent_facts(consent({"type": "deny"}, status="proposed"), TODAY) == []
    treatment = {"coding": [{"code": "treatment"}]}
    assert consent_facts(consent({"type": "deny"}, scope=treatment), TODAY) == []
    research = {"coding": [{"code": "research"}]}
    (fact,) = consent_facts(consent({"type": "deny"}, scope=research), TODAY)
    assert (fact.scope, fact.type) == ("research", "deny")


def test_a_provision_out_of_its_period_is_left_out() -> None:
    over = {"type": "deny", "period": {"end": "2026-01-01"}}
    begun = {"type": "deny", "period": {"start": "2026-01-01"}}
    assert consent_facts(consent(over), TODAY) == []
    assert len(consent_facts(consent(begun), TODAY)) == 1


def test_rule_4_names_the_categories_a_patient_may_not_hide() -> None:
    hides = consent(
        {"type": "deny", "code": [{"coding": [{"code": "notifiable"}, {"code": "mental"}]}]}
    )
    assert unhideable_hidden(hides, frozenset({"notifiable"})) == ["notifiable"]
    assert unhideable_hidden(hides, frozenset({"hiv"})) == []
    # naming a person who may not see it is no hiding from clinicians
    named = consent(
        {"type": "deny", "actor": [{"reference": {"reference": "Practitioner/x"}}],
         "code": [{"coding": [{"code": "notifiable"}]}]}
    )  # fmt: skip
    assert unhideable_hidden(named, frozenset({"notifiable"})) == []


def test_record_facts_of_an_observation() -> None:
    facts = record_facts(
        "Observation",
        "o",
        {
            "resourceType": "Observation",
            "category": [{"coding": [{"system": "http://c", "code": "laboratory"}]}],
            "meta": {"security": [{"system": "http://s", "code": "R"}]},
            "performer": [{"reference": "Organization/lab"}, {"reference": "Practitioner/x"}],
            "effectiveDateTime": "2025-03-01T10:00:00Z",
        },
    )
    assert facts.categories == {"laboratory", "http://c|laboratory"}
    assert facts.security_labels == {"R", "http://s|R"}
    assert facts.organizations == {"Organization/lab"}
    assert facts.date == date(2025, 3, 1)


def test_patient_facts_age_and_death() -> None:
    assert patient_facts("p", {"birthDate": "2010-12-07"}, TODAY).age == 15
    assert patient_facts("p", {"birthDate": "2010-12-06"}, TODAY).age == 16
    assert patient_facts("p", {"deceasedDateTime": "2026-01-01"}, TODAY).deceased
    assert not patient_facts("p", {"deceasedBoolean": False}, TODAY).deceased
    assert patient_facts("p", None, TODAY).age is None
