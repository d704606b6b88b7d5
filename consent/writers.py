"""Who may write a patient's Consents (rules 2 and 6), decided on facts like the reads.

A patient writes their own Consents from the adult age; below it their representatives
(RelatedPerson parent or guardian) write them. Clinicians and users the token does not
name may record a Consent the patient gave them (a signed form); the scopes decide
whether they may write at all. Pure: the hook gathers the facts.
"""

from __future__ import annotations

from consent.facts import LAY_TYPES, ActorFacts, Decision, PatientFacts, Policy, Relationship


def may_write(actor: ActorFacts, patient: PatientFacts, policy: Policy) -> Decision:
    if actor.fhir_user_type not in LAY_TYPES:
        return Decision(True, "writer-recorded", None, "recorded for the patient")
    minor = patient.age is not None and patient.age < policy.adult_age
    if Relationship.SELF in actor.relationships or actor.fhir_user == f"Patient/{patient.id}":
        if minor:
            return Decision(
                False, "6-minor-self", None,
                f"below the age of {policy.adult_age} a patient's representatives write "
                "their Consents",
            )  # fmt: skip
        return Decision(True, "2-self", None, "patients write their own Consents")
    if Relationship.REPRESENTATIVE in actor.relationships and minor:
        return Decision(True, "6-representative", None, "a minor's representative")
    return Decision(False, "6-not-representative", None, "only the patient or, for a minor, "
                    "their representative writes the patient's Consents")  # fmt: skip
