"""The Consents the portal writes, in the shape the consent engine reads
(docs/consent.md): one Consent per choice, so "show again" deletes exactly that one.

- hide (rule 2): scope `patient-privacy`, one actorless `deny` provision naming a record
  (`data`), a resource type (`class`), a period (`dataPeriod`) or an Organization
  (`data`: the records that came from it);
- research refused (rule 7): scope `research`, a `deny` provision.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

SCOPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/consentscope"
ACT_CODE = "http://terminology.hl7.org/CodeSystem/v3-ActCode"
RESOURCE_TYPES = "http://hl7.org/fhir/resource-types"
PATIENT_CONSENT = {"coding": [{"system": "http://loinc.org", "code": "59284-0"}]}
RESEARCH_CONSENT = {"coding": [{"system": "http://loinc.org", "code": "57016-8"}]}


def _consent(patient: str, scope: str, policy: str, provision: dict[str, Any]) -> dict[str, Any]:
    return {
        "resourceType": "Consent",
        "status": "active",
        "scope": {"coding": [{"system": SCOPE_SYSTEM, "code": scope}]},
        "category": [RESEARCH_CONSENT if scope == "research" else PATIENT_CONSENT],
        "patient": {"reference": f"Patient/{patient}"},
        "dateTime": datetime.now(UTC).isoformat(timespec="seconds"),
        "policyRule": {"coding": [{"system": ACT_CODE, "code": policy}]},
        "provision": provision,
    }


def hide_reference(patient: str, reference: str) -> dict[str, Any]:
    """A record (`DiagnosticReport/1`) or an Organization's records (`Organization/7`)."""
    # "authoredby": the records that came from the Organization; "instance": the record
    meaning = "authoredby" if reference.startswith("Organization/") else "instance"
    data = [{"meaning": meaning, "reference": {"reference": reference}}]
    provision = {"type": "deny", "data": data}
    return _consent(patient, "patient-privacy", "OPTOUT", provision)


def hide_type(patient: str, resource_type: str) -> dict[str, Any]:
    provision = {"type": "deny", "class": [{"system": RESOURCE_TYPES, "code": resource_type}]}
    return _consent(patient, "patient-privacy", "OPTOUT", provision)


def hide_category(patient: str, category: str) -> dict[str, Any]:
    """Records of one category (`system|code` or a bare code), as `provision.code`."""
    system, _, code = category.rpartition("|")
    coding = {"system": system, "code": code} if system else {"code": code}
    provision = {"type": "deny", "code": [{"coding": [coding]}]}
    return _consent(patient, "patient-privacy", "OPTOUT", provision)


def hide_period(patient: str, start: str, end: str) -> dict[str, Any]:
    provision = {"type": "deny", "dataPeriod": {"start": start, "end": end}}
    return _consent(patient, "patient-privacy", "OPTOUT", provision)


def refuse_research(patient: str) -> dict[str, Any]:
    return _consent(patient, "research", "OPTOUT", {"type": "deny"})


def scope_of(consent: dict[str, Any]) -> str | None:
    for coding in consent.get("scope", {}).get("coding", ()):
        if isinstance(coding, dict) and coding.get("code") in ("patient-privacy", "research"):
            return str(coding["code"])
    return None


def describe(consent: dict[str, Any]) -> tuple[str, dict[str, str]]:
    """A message key and its values saying what a hiding Consent hides."""
    provision = consent.get("provision", {})
    data = [d.get("reference", {}).get("reference", "") for d in provision.get("data", ())]
    if data and data[0].startswith("Organization/"):
        return "privacy.hidden.organization", {"what": data[0]}
    if data:
        return "privacy.hidden.record", {"what": ", ".join(data)}
    classes = [c.get("code", "") for c in provision.get("class", ())]
    if classes:
        return "privacy.hidden.type", {"what": ", ".join(classes)}
    codes = [c.get("code", "") for k in provision.get("code", ()) for c in k.get("coding", ())]
    if codes:
        return "privacy.hidden.category", {"what": ", ".join(codes)}
    period = provision.get("dataPeriod")
    if isinstance(period, dict):
        return "privacy.hidden.period", {
            "start": str(period.get("start", "…")), "end": str(period.get("end", "…")),
        }  # fmt: skip
    return "privacy.hidden.other", {"what": f"Consent/{consent.get('id', '')}"}


def is_hiding(consent: dict[str, Any]) -> bool:
    """An active patient-privacy Consent whose top provision denies: what this portal
    writes, and what the patient may undo by deleting it."""
    return (
        consent.get("status") == "active"
        and scope_of(consent) == "patient-privacy"
        and consent.get("provision", {}).get("type") == "deny"
    )


def refuses_research(consent: dict[str, Any]) -> bool:
    return (
        consent.get("status") == "active"
        and scope_of(consent) == "research"
        and consent.get("provision", {}).get("type") == "deny"
    )
