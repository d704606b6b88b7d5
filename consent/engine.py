"""The pure decision: may this actor, for this purpose, see this record of this patient?

No I/O: the facts are extracted beforehand (consent/consents.py, consent/records.py,
consent/relations.py). The rules are the table in `rules.json`; this module computes the
named predicates the table's rows test, and walks the table.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

from consent.facts import (
    CLINICIAN_TYPES,
    LAY_TYPES,
    ActorFacts,
    ConsentFacts,
    Decision,
    PatientFacts,
    Policy,
    RecordFacts,
    Relationship,
)

RULES = Path(__file__).with_name("rules.json")
DEFAULT_POLICY = Policy()
PRIVACY = "patient-privacy"
RESEARCH = "research"


@dataclass(frozen=True, slots=True)
class Row:
    rule: str
    when: Mapping[str, bool]
    reason: str
    permit: bool = False
    deidentify: bool = False
    override: str | None = None
    lifts: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class Table:
    base: tuple[Row, ...]
    overrides: tuple[Row, ...]


def _row(raw: Mapping[str, Any]) -> Row:
    return Row(
        rule=raw["rule"],
        when={name: bool(value) for name, value in raw["when"].items()},
        reason=raw["reason"],
        permit=bool(raw.get("permit", False)),
        deidentify=bool(raw.get("deidentify", False)),
        override=raw.get("override"),
        lifts=frozenset(raw.get("lifts", ())),
    )


@cache
def table() -> Table:
    raw = json.loads(RULES.read_text())
    loaded = Table(tuple(_row(r) for r in raw["base"]), tuple(_row(r) for r in raw["overrides"]))
    unknown = {n for row in (*loaded.base, *loaded.overrides) for n in row.when} - set(PREDICATES)
    if unknown:
        raise ValueError(f"rules.json names unknown predicates: {sorted(unknown)}")
    if loaded.base[-1].when:
        raise ValueError("the last base row of rules.json must match always (the default)")
    return loaded


@dataclass(frozen=True, slots=True)
class Facts:
    actor: ActorFacts
    purpose: str | None
    patient: PatientFacts
    record: RecordFacts
    consents: tuple[ConsentFacts, ...]
    policy: Policy


def provision_matches(provision: ConsentFacts, record: RecordFacts) -> bool:
    """Every criterion the provision names holds for the record; none named: all records.
    A data reference names the record itself or an Organization it came from."""
    if provision.data and not (
        record.reference in provision.data or provision.data & record.organizations
    ):
        return False
    if provision.classes and record.resource_type not in provision.classes:
        return False
    if provision.codes and not provision.codes & record.categories:
        return False
    if provision.security_labels and not provision.security_labels & record.security_labels:
        return False
    if provision.data_period is not None:
        start, end = provision.data_period
        if record.date is None:
            return False
        if (start is not None and record.date < start) or (end is not None and record.date > end):
            return False
    return True


def _deepest(provisions: list[ConsentFacts]) -> str | None:
    """The type of the deepest provision (exceptions nest deeper); deny wins a tie."""
    if not provisions:
        return None
    depth = max(p.depth for p in provisions)
    types = {p.type for p in provisions if p.depth == depth}
    return "deny" if "deny" in types else "permit"


def _privacy(facts: Facts) -> list[ConsentFacts]:
    return [c for c in facts.consents if c.scope == PRIVACY and provision_matches(c, facts.record)]


def _named(facts: Facts) -> str | None:
    user = facts.actor.fhir_user
    if user is None:
        return None
    return _deepest([c for c in _privacy(facts) if user in c.actors])


def hidden(facts: Facts) -> bool:
    """Rule 2 with rule 4: an actorless deny hides the record unless its category is one
    the law does not let a patient hide."""
    if facts.record.categories & facts.policy.unhideable_categories:
        return False
    return _deepest([c for c in _privacy(facts) if not c.actors]) == "deny"


def _clinician(facts: Facts) -> bool:
    return facts.actor.fhir_user_type in CLINICIAN_TYPES


def _related(relationship: Relationship) -> Callable[[Facts], bool]:
    return lambda facts: relationship in facts.actor.relationships


PREDICATES: dict[str, Callable[[Facts], bool]] = {
    "self": lambda f: (
        Relationship.SELF in f.actor.relationships or f.actor.fhir_user == f"Patient/{f.patient.id}"
    ),
    "research": lambda f: f.purpose in f.policy.research_purposes,
    "research_refused": lambda f: any(
        c.scope == RESEARCH and c.type == "deny" and c.depth == 0 for c in f.consents
    ),
    "emergency": lambda f: f.purpose in f.policy.emergency_purposes,
    "expertise": lambda f: f.purpose is not None and f.purpose == f.policy.expertise_purpose,
    "named_deny": lambda f: _named(f) == "deny",
    "named_permit": lambda f: _named(f) == "permit",
    "hidden": hidden,
    "deceased": lambda f: f.patient.deceased,
    "minor": lambda f: f.patient.age is not None and f.patient.age < f.policy.adult_age,
    "clinician": _clinician,
    "layperson": lambda f: f.actor.fhir_user_type in LAY_TYPES,
    # a care relationship with the patient, or the actor's organization ordered or
    # performed this record
    "care": lambda f: bool(
        {Relationship.CARE, Relationship.FAMILY_DOCTOR} & f.actor.relationships
        or f.actor.organizations & f.record.organizations
    ),
    "care_required": lambda f: f.policy.care_relationship_required,
    "family_doctor": _related(Relationship.FAMILY_DOCTOR),
    "representative": _related(Relationship.REPRESENTATIVE),
    "heir": _related(Relationship.HEIR),
}


def _matches(row: Row, facts: Facts, known: dict[str, bool]) -> bool:
    for name, wanted in row.when.items():
        if name not in known:
            known[name] = PREDICATES[name](facts)
        if known[name] != wanted:
            return False
    return True


def decide(
    actor: ActorFacts,
    purpose: str | None,
    patient: PatientFacts,
    record: RecordFacts,
    consents: list[ConsentFacts],
    policy: Policy = DEFAULT_POLICY,
) -> Decision:
    """Permit or deny, the rule that decided, and the override that lifted a denial."""
    facts = Facts(actor, purpose, patient, record, tuple(consents), policy)
    rules = table()
    known: dict[str, bool] = {}
    base = next(row for row in rules.base if _matches(row, facts, known))
    if not base.permit:
        for row in rules.overrides:
            if base.rule in row.lifts and _matches(row, facts, known):
                override = purpose if row.override == "purpose" else row.override
                return Decision(True, row.rule, override, f"{row.reason} ({base.reason})")
    return Decision(base.permit, base.rule, None, base.reason, deidentify=base.deidentify)
