"""R4 Consent resources -> the engine's ConsentFacts, and the writer-side check of rule 4.

Only `status=active` Consents of scope `patient-privacy` or `research` count; each
provision (and each nested exception) becomes one ConsentFacts with its depth. A
provision whose `period` is over or not yet begun is left out, so the engine never
needs a clock.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from datetime import date
from typing import Any

from consent.facts import ConsentFacts

SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
SCOPES = frozenset({"patient-privacy", "research"})


def codes(codings: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    """Codings as "system|code" and the bare "code", so configuration may name either."""
    found: set[str] = set()
    for coding in codings:
        code = coding.get("code")
        if not isinstance(code, str):
            continue
        found.add(code)
        if isinstance(coding.get("system"), str):
            found.add(f"{coding['system']}|{code}")
    return frozenset(found)


def concept_codes(concepts: Iterable[Mapping[str, Any]]) -> frozenset[str]:
    return frozenset().union(*(codes(c.get("coding", ())) for c in concepts))


def day(value: object) -> date | None:
    """The day of a FHIR date/dateTime/instant (its first ten characters, a partial date
    as its first day), or None."""
    if not isinstance(value, str) or len(value) < 4:
        return None
    text = value[:10]
    text += "-01-01"[len(text) - 4 :] if len(text) < 10 else ""
    try:
        return date.fromisoformat(text)
    except ValueError:
        return None


def scope_of(consent: Mapping[str, Any]) -> str | None:
    scope = codes(consent.get("scope", {}).get("coding", ()))
    found = sorted(s for s in scope if s in SCOPES)
    return found[0] if found else None


def _period(period: Mapping[str, Any] | None) -> tuple[date | None, date | None] | None:
    if not period:
        return None
    return day(period.get("start")), day(period.get("end"))


def _in_force(period: tuple[date | None, date | None] | None, today: date) -> bool:
    if period is None:
        return True
    start, end = period
    return (start is None or start <= today) and (end is None or today <= end)


def _provisions(
    consent_id: str, scope: str, provision: Mapping[str, Any], depth: int, today: date
) -> Iterator[ConsentFacts]:
    if not _in_force(_period(provision.get("period")), today):
        return
    kind = provision.get("type")
    if kind in ("permit", "deny"):
        yield ConsentFacts(
            consent_id,
            scope,
            kind,
            depth,
            actors=frozenset(
                a["reference"]["reference"]
                for a in provision.get("actor", ())
                if isinstance(a.get("reference", {}).get("reference"), str)
            ),
            data=frozenset(
                d["reference"]["reference"]
                for d in provision.get("data", ())
                if isinstance(d.get("reference", {}).get("reference"), str)
            ),
            classes=frozenset(c["code"] for c in provision.get("class", ()) if "code" in c),
            codes=concept_codes(provision.get("code", ())),
            security_labels=codes(provision.get("securityLabel", ())),
            data_period=_period(provision.get("dataPeriod")),
        )
    for nested in provision.get("provision", ()):
        yield from _provisions(consent_id, scope, nested, depth + 1, today)


def consent_facts(consent: Mapping[str, Any], today: date) -> list[ConsentFacts]:
    """The provisions of one Consent that count today; none unless it is active."""
    scope = scope_of(consent)
    if consent.get("status") != "active" or scope is None or "provision" not in consent:
        return []
    return list(_provisions(str(consent.get("id", "")), scope, consent["provision"], 0, today))


def unhideable_hidden(consent: Mapping[str, Any], unhideable: frozenset[str]) -> list[str]:
    """Rule 4, for the writer: the categories this Consent's deny provisions name that the
    law does not let a patient hide (the engine shows them anyway)."""
    if scope_of(consent) != "patient-privacy" or "provision" not in consent:
        return []
    named: set[str] = set()
    for fact in _provisions("", "patient-privacy", consent["provision"], 0, date.min):
        if fact.type == "deny" and not fact.actors:
            named |= fact.codes & unhideable
    return sorted(named)
