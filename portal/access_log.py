"""The patient's access log: their AuditEvents (`AuditEvent?patient=`) as rows of who,
role, organization, when, what and why, with overrides (break-the-glass, emergency)
first and marked."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SECURITY_ALERT = "110113"  # DCM "Security Alert": audit/codes.json marks BTG with it
OVERRIDE_PURPOSES = frozenset({"BTG", "ETREAT"})


@dataclass(frozen=True, slots=True)
class Opening:
    when: str
    who: str
    role: str
    organization: str
    what: tuple[str, ...]
    purposes: tuple[str, ...]
    override: bool


def _codes(concepts: Any) -> list[str]:
    found: list[str] = []
    for concept in concepts if isinstance(concepts, list) else []:
        for coding in concept.get("coding", ()) if isinstance(concept, dict) else ():
            if isinstance(coding, dict) and isinstance(coding.get("code"), str):
                found.append(coding["code"])
    return found


def _display(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    for coding in concept.get("coding", ()):
        if isinstance(coding, dict):
            return str(coding.get("display") or coding.get("code") or "")
    return str(concept.get("text", ""))


def _identifier(who: dict[str, Any]) -> str:
    identifier = who.get("identifier")
    return str(identifier.get("value", "")) if isinstance(identifier, dict) else ""


def opening_of(event: dict[str, Any]) -> Opening:
    agents = [a for a in event.get("agent", ()) if isinstance(a, dict)]
    requestor = next((a for a in agents if a.get("requestor")), agents[0] if agents else {})
    who = requestor.get("who", {}) if isinstance(requestor.get("who"), dict) else {}
    roles = [_display(r) for r in requestor.get("role", ())] or [_display(requestor.get("type"))]
    location = requestor.get("location", {})
    organization = location.get("display", "") if isinstance(location, dict) else ""
    purposes = _codes(event.get("purposeOfEvent")) + _codes(requestor.get("purposeOfUse"))
    subtypes = [c.get("code") for c in event.get("subtype", ()) if isinstance(c, dict)]
    what = tuple(
        str(e["what"]["reference"]) for e in event.get("entity", ())
        if isinstance(e, dict) and isinstance(e.get("what"), dict)
        and isinstance(e["what"].get("reference"), str)
    )  # fmt: skip
    return Opening(
        when=str(event.get("recorded", "")),
        who=str(who.get("display") or who.get("reference") or _identifier(who)),
        role=", ".join(r for r in roles if r),
        organization=str(organization),
        what=what,
        purposes=tuple(dict.fromkeys(purposes)),
        override=SECURITY_ALERT in subtypes or bool(OVERRIDE_PURPOSES & set(purposes)),
    )


def openings(bundle: dict[str, Any]) -> list[Opening]:
    """Overrides first, then the rest; newest first within each."""
    rows = [
        opening_of(entry["resource"]) for entry in bundle.get("entry", ())
        if isinstance(entry, dict) and entry.get("resource", {}).get("resourceType") == "AuditEvent"
    ]  # fmt: skip
    rows.sort(key=lambda row: row.when, reverse=True)
    rows.sort(key=lambda row: not row.override)
    return rows
