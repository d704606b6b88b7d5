"""The engine's inputs: small frozen facts extracted from FHIR resources beforehand, so
the decision itself reads no store and parses no JSON."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from enum import StrEnum


class Relationship(StrEnum):
    """How an actor stands to the patient (issue 15, rules 1, 3, 6, 8)."""

    SELF = "self"  # the actor's fhirUser is the Patient
    FAMILY_DOCTOR = "family-doctor"  # named in Patient.generalPractitioner
    CARE = "care"  # ordering/performing organization, active Encounter participant
    REPRESENTATIVE = "representative"  # RelatedPerson parent or guardian
    HEIR = "heir"  # RelatedPerson heir, spouse, parent or child


# fhirUser resource types of clinicians and of lay people (SMART App Launch, fhirUser)
CLINICIAN_TYPES = frozenset({"Practitioner", "PractitionerRole"})
LAY_TYPES = frozenset({"Patient", "RelatedPerson"})


@dataclass(frozen=True, slots=True)
class ActorFacts:
    fhir_user: str | None  # "Practitioner/1", None for a user the token does not name
    organizations: frozenset[str] = frozenset()  # "Organization/x" the actor works for
    relationships: frozenset[Relationship] = frozenset()

    @property
    def fhir_user_type(self) -> str | None:
        return None if self.fhir_user is None else self.fhir_user.partition("/")[0]


@dataclass(frozen=True, slots=True)
class PatientFacts:
    id: str
    age: int | None = None  # whole years; None when Patient.birthDate is unknown
    deceased: bool = False


@dataclass(frozen=True, slots=True)
class RecordFacts:
    resource_type: str
    resource_id: str
    # category codes as "system|code" and bare "code", so a table entry may name either
    categories: frozenset[str] = frozenset()
    security_labels: frozenset[str] = frozenset()  # meta.security, "system|code" and "code"
    organizations: frozenset[str] = frozenset()  # "Organization/x" that ordered/performed it
    date: date | None = None  # the clinically relevant date (effective, issued, recorded)

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.resource_id}"


@dataclass(frozen=True, slots=True)
class ConsentFacts:
    """One provision of an active Consent, flattened; `depth` 0 is Consent.provision,
    nested exceptions deeper: the deepest provision matching a record decides."""

    consent_id: str
    scope: str  # "patient-privacy" | "research"
    type: str  # "permit" | "deny"
    depth: int = 0
    actors: frozenset[str] = frozenset()  # provision.actor.reference: "Practitioner/1"
    data: frozenset[str] = frozenset()  # provision.data.reference: a record or Organization
    classes: frozenset[str] = frozenset()  # provision.class codes: resource types
    codes: frozenset[str] = frozenset()  # provision.code: categories ("system|code", "code")
    security_labels: frozenset[str] = frozenset()
    data_period: tuple[date | None, date | None] | None = None  # provision.dataPeriod


@dataclass(frozen=True, slots=True)
class Policy:
    """What a site configures (medbridge/settings.py, docs/consent.md)."""

    emergency_purposes: frozenset[str] = frozenset({"ETREAT", "BTG"})
    expertise_purpose: str = "HLEGAL"
    research_purposes: frozenset[str] = frozenset({"HRESCH"})
    # rule 4: categories a patient may not hide ("system|code" or bare code)
    unhideable_categories: frozenset[str] = frozenset()
    adult_age: int = 16
    # rule 1: only clinicians with a care relationship see records by default; off, every
    # clinician (and a user whose token names no fhirUser) does, as before the engine
    care_relationship_required: bool = True


@dataclass(frozen=True, slots=True)
class Decision:
    permit: bool
    rule: str  # the row of consent/rules.json that decided
    override: str | None  # the purpose or relationship that lifted a denial (rule 3)
    reason: str
    # rule 7: research sees records only de-identified
    deidentify: bool = False
