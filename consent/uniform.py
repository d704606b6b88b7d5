"""A patient's decision that no record of theirs can change: made once per answer.

The engine reads a record's facts in two places only: the patient-privacy provisions
(`provision_matches`: named permits and denies, hidden records) and the `care`
predicate (the actor's organizations against the record's). A patient without
patient-privacy provisions gives a record's identity, categories, labels and date
nothing to match, and a record's organizations can only turn `care` on (some shared
with the actor) or off (none shared). Deciding with none of the actor's organizations
and with all of them therefore covers every record of the patient: when the two
decisions have the same effect, every record gets it, and consent-show need not parse
one (a search page and the matches its total counts: each record once per patient).
"""

from __future__ import annotations

from consent.engine import PRIVACY, decide
from consent.facts import ActorFacts, ConsentFacts, Decision, PatientFacts, Policy, RecordFacts

# a record no facts were read from: the engine reads its facts only where `uniform`
# has shown they cannot matter
_ANY_RECORD = RecordFacts("", "")


def uniform(
    actor: ActorFacts,
    purpose: str | None,
    patient: PatientFacts,
    consents: list[ConsentFacts],
    policy: Policy,
) -> Decision | None:
    """The decision every record of `patient` gets, or None when it depends on the
    record (the record's facts must then be read and decided one by one)."""
    if any(consent.scope == PRIVACY for consent in consents):
        return None
    unshared = decide(actor, purpose, patient, _ANY_RECORD, consents, policy)
    if not actor.organizations:
        return unshared
    shared = RecordFacts("", "", organizations=actor.organizations)
    other = decide(actor, purpose, patient, shared, consents, policy)
    return unshared if same_effect(unshared, other) else None


def same_effect(first: Decision, second: Decision) -> bool:
    """Whether consent-show does the same with both: show, hide or de-identify, and an
    override noted for audit with the same rule and reason. (A permit needs no rule: the
    rules "1-care" and "1-open" both show the record.)"""
    if (first.permit, first.deidentify, first.override) != (
        second.permit,
        second.deidentify,
        second.override,
    ):
        return False
    return first.override is None or (first.rule, first.reason) == (second.rule, second.reason)
