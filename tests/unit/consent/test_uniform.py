"""A patient's decision made once for all their records (consent/uniform.py) is the
decision the engine makes on each record: checked over generated actors, purposes,
patients, Consents and records."""

from __future__ import annotations

from datetime import date

from hypothesis import given, settings
from hypothesis import strategies as st

from consent.engine import decide
from consent.facts import (
    ActorFacts,
    ConsentFacts,
    PatientFacts,
    Policy,
    RecordFacts,
    Relationship,
)
from consent.uniform import same_effect, uniform

ORGANIZATIONS = ("Organization/a", "Organization/b")
USERS = ("Practitioner/dr", "PractitionerRole/r", "Patient/p", "RelatedPerson/rp", None)
PURPOSES = (None, "TREAT", "HRESCH", "ETREAT", "HLEGAL")
organizations = st.frozensets(st.sampled_from(ORGANIZATIONS))
actors = st.builds(
    ActorFacts,
    st.sampled_from(USERS),
    organizations,
    st.frozensets(st.sampled_from(list(Relationship))),
)
patients = st.builds(PatientFacts, st.just("p"), st.sampled_from((None, 10, 40, 90)), st.booleans())
consents = st.builds(
    ConsentFacts,
    st.just("c"),
    st.sampled_from(("patient-privacy", "research")),
    st.sampled_from(("permit", "deny")),
    st.integers(0, 2),
    st.frozensets(st.sampled_from(("Practitioner/dr", "Patient/p"))),
    st.frozensets(st.sampled_from(("Observation/o", *ORGANIZATIONS))),
    st.frozensets(st.sampled_from(("Observation", "Patient"))),
    st.frozensets(st.sampled_from(("laboratory", "notifiable"))),
)
records = st.builds(
    RecordFacts,
    st.sampled_from(("Observation", "Patient")),
    st.sampled_from(("o", "p")),
    st.frozensets(st.sampled_from(("laboratory", "notifiable", "vital-signs"))),
    st.frozensets(st.sampled_from(("R", "N"))),
    organizations,
    st.sampled_from((None, date(2020, 1, 1))),
)
policies = st.builds(
    Policy,
    unhideable_categories=st.just(frozenset({"notifiable"})),
    care_relationship_required=st.booleans(),
)


@settings(max_examples=400)
@given(actors, st.sampled_from(PURPOSES), patients, st.lists(consents, max_size=3),
       st.lists(records, min_size=1, max_size=4), policies)  # fmt: skip
def test_a_decision_for_every_record_is_each_record_s_decision(
    actor: ActorFacts,
    purpose: str | None,
    patient: PatientFacts,
    provisions: list[ConsentFacts],
    shown: list[RecordFacts],
    policy: Policy,
) -> None:
    found = uniform(actor, purpose, patient, provisions, policy)
    if found is None:
        return
    for record in shown:
        assert same_effect(found, decide(actor, purpose, patient, record, provisions, policy))


def test_privacy_provisions_make_each_record_decided_on_its_own() -> None:
    hide = ConsentFacts("c", "patient-privacy", "deny", codes=frozenset({"laboratory"}))
    doctor = ActorFacts("Practitioner/dr", relationships=frozenset({Relationship.CARE}))
    assert uniform(doctor, None, PatientFacts("p", 40), [hide], Policy()) is None


def test_a_clinician_of_an_organization_is_decided_once_where_organizations_cannot_matter() -> None:
    # the benchmark's user: a Practitioner of an organization, where care is not required
    # (organizations can turn `care` on, but "1-open" shows the record either way)
    doctor = ActorFacts("Practitioner/dr", frozenset({"Organization/a"}))
    open_site = Policy(care_relationship_required=False)
    decided = uniform(doctor, None, PatientFacts("p", 40), [], open_site)
    assert decided is not None
    assert decided.permit
    # where care is required, whether the record came from the organization decides
    assert uniform(doctor, None, PatientFacts("p", 40), [], Policy()) is None
    # a research refusal is about the patient, not a record
    refusal = ConsentFacts("c", "research", "deny")
    research = uniform(doctor, "HRESCH", PatientFacts("p", 40), [refusal], Policy())
    assert research is not None
    assert not research.permit
