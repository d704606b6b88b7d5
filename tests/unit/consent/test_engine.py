"""Every row of consent/rules.json, decided on facts that select it, and the property
that a record hidden by rule 2 reaches no one outside rule 3's overrides and rule 5's
permits."""

from __future__ import annotations

from dataclasses import replace
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from consent.engine import Facts, decide, hidden, table
from consent.facts import (
    ActorFacts,
    ConsentFacts,
    PatientFacts,
    Policy,
    RecordFacts,
    Relationship,
)

DOCTOR = "Practitioner/dr"
GP = "Practitioner/gp"
PARENT = "RelatedPerson/parent"
ADULT = PatientFacts("p", age=40)
CHILD = PatientFacts("p", age=12)
DEAD = PatientFacts("p", age=80, deceased=True)
LAB = RecordFacts("Observation", "o1", categories=frozenset({"laboratory"}), date=date(2025, 3, 1))
POLICY = Policy(unhideable_categories=frozenset({"notifiable"}))


def clinician(*relationships: Relationship, user: str = DOCTOR) -> ActorFacts:
    return ActorFacts(user, relationships=frozenset(relationships))


def deny(**criteria: object) -> ConsentFacts:
    return ConsentFacts("c", "patient-privacy", "deny", **criteria)  # type: ignore[arg-type]


def permit(**criteria: object) -> ConsentFacts:
    return ConsentFacts("c", "patient-privacy", "permit", **criteria)  # type: ignore[arg-type]


CARE = clinician(Relationship.CARE)
HIDE_LAB = deny(codes=frozenset({"laboratory"}))

# (row expected, permit, override, actor, purpose, patient, record, consents)
CASES = [
    ("7-research-refused", False, None, CARE, "HRESCH", ADULT, LAB,
     [ConsentFacts("r", "research", "deny")]),
    ("7-research", True, None, CARE, "HRESCH", ADULT, LAB, []),
    ("1-self", True, None, ActorFacts("Patient/p"), None, ADULT, LAB, [HIDE_LAB]),
    ("5-deny", False, None, CARE, "TREAT", ADULT, LAB, [deny(actors=frozenset({DOCTOR}))]),
    ("3-emergency", True, "BTG", CARE, "BTG", ADULT, LAB, [deny(actors=frozenset({DOCTOR}))]),
    ("8-heir", True, None, ActorFacts(PARENT, relationships=frozenset({Relationship.HEIR})),
     None, DEAD, LAB, []),
    ("8-deceased", False, None, ActorFacts(PARENT), None, DEAD, LAB, []),
    ("1-care", True, None, CARE, None, DEAD, LAB, []),
    ("5-permit", True, None, ActorFacts(PARENT), None, ADULT, LAB,
     [permit(actors=frozenset({PARENT}))]),
    ("5-permit", True, None, clinician(), None, ADULT, LAB,
     [HIDE_LAB, permit(actors=frozenset({DOCTOR}))]),
    ("6-representative-minor", True, None,
     ActorFacts(PARENT, relationships=frozenset({Relationship.REPRESENTATIVE})), None, CHILD,
     LAB, []),
    ("6-representative-adult", False, None,
     ActorFacts(PARENT, relationships=frozenset({Relationship.REPRESENTATIVE})), None, ADULT,
     LAB, []),
    ("2-hidden", False, None, CARE, "TREAT", ADULT, LAB, [HIDE_LAB]),
    ("3-family-doctor", True, "family-doctor", clinician(Relationship.FAMILY_DOCTOR), None,
     ADULT, LAB, [HIDE_LAB]),
    ("3-emergency", True, "ETREAT", CARE, "ETREAT", ADULT, LAB, [HIDE_LAB]),
    ("3-expertise", True, "HLEGAL", clinician(), "HLEGAL", ADULT, LAB, [HIDE_LAB]),
    ("2-hidden", False, None, ActorFacts(PARENT), "BTG", ADULT, LAB, [HIDE_LAB]),
    ("1-care", True, None, CARE, None, ADULT, LAB, []),
    ("1-care", True, None, clinician(Relationship.FAMILY_DOCTOR), None, ADULT, LAB, []),
    ("1-default", False, None, clinician(), None, ADULT, LAB, []),
    ("1-care", True, None, ActorFacts(DOCTOR, frozenset({"Organization/lab"})), None, ADULT,
     replace(LAB, organizations=frozenset({"Organization/lab"})), []),
    ("1-default", False, None, ActorFacts(DOCTOR, frozenset({"Organization/lab"})), None, ADULT,
     LAB, []),
    ("1-default", False, None, ActorFacts(None), None, ADULT, LAB, []),
    ("1-default", False, None, ActorFacts("Patient/other"), None, ADULT, LAB, []),
    ("3-emergency", True, "BTG", clinician(), "BTG", ADULT, LAB, []),
    ("3-expertise", True, "HLEGAL", clinician(), "HLEGAL", ADULT, LAB, []),
]  # fmt: skip


@pytest.mark.parametrize(
    ("rule", "permitted", "override", "actor", "purpose", "patient", "record", "consents"),
    CASES,
    ids=[f"{case[0]}-{n}" for n, case in enumerate(CASES)],
)
def test_rule(
    rule: str,
    permitted: bool,
    override: str | None,
    actor: ActorFacts,
    purpose: str | None,
    patient: PatientFacts,
    record: RecordFacts,
    consents: list[ConsentFacts],
) -> None:
    decision = decide(actor, purpose, patient, record, consents, POLICY)
    assert (decision.rule, decision.permit, decision.override) == (rule, permitted, override)


def test_every_row_of_the_table_is_exercised() -> None:
    rows = {row.rule for row in (*table().base, *table().overrides)}
    assert rows - {case[0] for case in CASES} == {"1-open"}  # tested below


def test_care_relationship_not_required_opens_rule_1_to_clinicians_and_unnamed_users() -> None:
    open_site = replace(POLICY, care_relationship_required=False)
    for actor in (clinician(), ActorFacts(None)):
        assert decide(actor, None, ADULT, LAB, [], open_site).rule == "1-open"
    # but not to lay people, and not past a hiding
    assert not decide(ActorFacts("Patient/other"), None, ADULT, LAB, [], open_site).permit
    assert decide(clinician(), None, ADULT, LAB, [HIDE_LAB], open_site).rule == "2-hidden"


def test_research_is_de_identified() -> None:
    assert decide(CARE, "HRESCH", ADULT, LAB, [], POLICY).deidentify
    assert not decide(CARE, None, ADULT, LAB, [], POLICY).deidentify


@pytest.mark.parametrize(
    ("provision", "hides"),
    [
        (deny(), True),  # everything
        (deny(data=frozenset({"Observation/o1"})), True),
        (deny(data=frozenset({"Observation/o2"})), False),
        (deny(classes=frozenset({"Observation"})), True),
        (deny(classes=frozenset({"Condition"})), False),
        (deny(codes=frozenset({"imaging"})), False),
        (deny(data=frozenset({"Organization/lab"})), True),  # records from one organization
        (deny(data=frozenset({"Organization/other"})), False),
        (deny(security_labels=frozenset({"R"})), True),
        (deny(security_labels=frozenset({"V"})), False),
        (deny(data_period=(date(2025, 1, 1), date(2025, 12, 31))), True),
        (deny(data_period=(date(2026, 1, 1), None)), False),
        (deny(data_period=(None, date(2024, 12, 31))), False),
    ],
)
def test_what_a_deny_provision_hides(provision: ConsentFacts, hides: bool) -> None:
    record = replace(
        LAB, organizations=frozenset({"Organization/lab"}), security_labels=frozenset({"R"})
    )
    decision = decide(CARE, None, ADULT, record, [provision], POLICY)
    assert (decision.rule == "2-hidden") is hides


def test_a_nested_permit_is_an_exception_to_its_deny() -> None:
    hide_all = deny()
    except_lab = replace(permit(codes=frozenset({"laboratory"})), depth=1)
    assert decide(CARE, None, ADULT, LAB, [hide_all, except_lab], POLICY).rule == "1-care"
    imaging = replace(LAB, categories=frozenset({"imaging"}))
    assert decide(CARE, None, ADULT, imaging, [hide_all, except_lab], POLICY).rule == "2-hidden"


def test_rule_4_unhideable_categories_stay_visible() -> None:
    notifiable = replace(LAB, categories=frozenset({"laboratory", "notifiable"}))
    decision = decide(CARE, None, ADULT, notifiable, [HIDE_LAB], POLICY)
    assert decision.permit
    assert decision.rule == "1-care"


# the property --------------------------------------------------------------------------

USERS = [DOCTOR, GP, PARENT, "Patient/p", "Patient/other", None]
actors = st.builds(
    ActorFacts,
    st.sampled_from(USERS),
    st.just(frozenset[str]()),
    st.frozensets(st.sampled_from(list(Relationship))),
)
purposes = st.sampled_from([None, "TREAT", "ETREAT", "BTG", "HRESCH", "HLEGAL", "HPAYMT"])
patients = st.builds(
    PatientFacts, st.just("p"), st.one_of(st.none(), st.integers(0, 99)), st.booleans()
)
categories = st.frozensets(st.sampled_from(["laboratory", "imaging", "notifiable"]))
records = st.builds(
    RecordFacts,
    st.sampled_from(["Observation", "Condition", "ImagingStudy"]),
    st.sampled_from(["o1", "o2"]),
    categories,
    st.frozensets(st.sampled_from(["R", "V"])),
    st.frozensets(st.sampled_from(["Organization/a", "Organization/b"])),
    st.one_of(st.none(), st.dates(date(2020, 1, 1), date(2026, 12, 31))),
)
provisions = st.builds(
    ConsentFacts,
    st.just("c"),
    st.sampled_from(["patient-privacy", "research"]),
    st.sampled_from(["permit", "deny"]),
    st.integers(0, 2),
    st.frozensets(st.sampled_from([u for u in USERS if u])),
    st.frozensets(st.sampled_from(["Observation/o1", "Organization/a"])),
    st.frozensets(st.sampled_from(["Observation", "Condition"])),
    categories,
    st.frozensets(st.sampled_from(["R", "V"])),
    st.one_of(st.none(), st.tuples(st.none() | st.dates(), st.none() | st.dates())),
)


@given(actors, purposes, patients, records, st.lists(provisions, max_size=4), st.booleans())
def test_a_hidden_record_reaches_no_one_outside_the_overrides_and_permits(
    actor: ActorFacts,
    purpose: str | None,
    patient: PatientFacts,
    record: RecordFacts,
    consents: list[ConsentFacts],
    care_required: bool,
) -> None:
    policy = replace(POLICY, care_relationship_required=care_required)
    facts = Facts(actor, purpose, patient, record, tuple(consents), policy)
    decision = decide(actor, purpose, patient, record, consents, policy)
    if not hidden(facts) or not decision.permit:
        return
    is_self = actor.fhir_user == "Patient/p" or Relationship.SELF in actor.relationships
    permitted_by_name = actor.fhir_user is not None and any(
        actor.fhir_user in c.actors and c.type == "permit" for c in consents
    )
    # who still sees it, and only because the fact that lets them holds
    allowed = {
        "1-self": is_self,
        "3-emergency": purpose in policy.emergency_purposes,
        "3-family-doctor": Relationship.FAMILY_DOCTOR in actor.relationships,
        "3-expertise": purpose == policy.expertise_purpose,
        "5-permit": permitted_by_name,
        "7-research": purpose in policy.research_purposes and decision.deidentify,
        "6-representative-minor": patient.age is not None and patient.age < policy.adult_age,
        "8-heir": patient.deceased and Relationship.HEIR in actor.relationships,
    }
    assert allowed.get(decision.rule, False), decision
