"""Who may write a patient's Consents (rules 2 and 6)."""

from __future__ import annotations

import pytest

from consent.facts import ActorFacts, PatientFacts, Policy, Relationship
from consent.writers import may_write

ADULT = PatientFacts("p", age=16)
MINOR = PatientFacts("p", age=15)
MOTHER = ActorFacts("RelatedPerson/m", relationships=frozenset({Relationship.REPRESENTATIVE}))


@pytest.mark.parametrize(
    ("actor", "patient", "rule", "permitted"),
    [
        (ActorFacts("Patient/p"), ADULT, "2-self", True),
        (ActorFacts("Patient/p"), MINOR, "6-minor-self", False),
        (MOTHER, MINOR, "6-representative", True),
        (MOTHER, ADULT, "6-not-representative", False),
        (ActorFacts("RelatedPerson/friend"), MINOR, "6-not-representative", False),
        (ActorFacts("Patient/other"), ADULT, "6-not-representative", False),
        (ActorFacts("Practitioner/1"), MINOR, "writer-recorded", True),
        (ActorFacts(None), ADULT, "writer-recorded", True),
    ],
)
def test_may_write(actor: ActorFacts, patient: PatientFacts, rule: str, permitted: bool) -> None:
    decision = may_write(actor, patient, Policy())
    assert (decision.rule, decision.permit) == (rule, permitted)
