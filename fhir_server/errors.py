"""The FHIR rendering of an `AccessError`: an OperationOutcome with the catalog code."""

from __future__ import annotations

from typing import Any

from access.errors import AccessError

ISSUE_CODE_SYSTEM = "https://medbridge.example.org/fhir/CodeSystem/error"
REALM = "medbridge"


def challenge(error: AccessError) -> dict[str, str]:
    """The `WWW-Authenticate` header of a refused bearer token (RFC 6750 section 3): on
    every 401 (RFC 9110 requires one) and on a 403 for insufficient scope."""
    oauth = error.entry.oauth
    if error.status != 401 and oauth is None:
        return {}
    value = f'Bearer realm="{REALM}"'
    if oauth is not None:
        # error_description: printable ASCII but the quote and the backslash (RFC 6750 3)
        text = "".join(c if " " <= c <= "~" and c not in '"\\' else "?" for c in error.diagnostics)
        value += f', error="{oauth}", error_description="{text}"'
    return {"www-authenticate": value}


def outcome(error: AccessError) -> dict[str, Any]:
    """`error` as an OperationOutcome resource."""
    details = {
        "coding": [{"system": ISSUE_CODE_SYSTEM, "code": error.entry.code}],
        "text": error.entry.text,
    }
    if error.issues:
        issue_list = [
            {
                "severity": "error",
                "code": issue.code,
                "details": details,
                "diagnostics": issue.diagnostics,
                "expression": [issue.expression],
            }
            for issue in error.issues
        ]
    else:
        single: dict[str, Any] = {
            "severity": "error",
            "code": error.entry.issue,
            "details": details,
            "diagnostics": error.diagnostics,
        }
        if error.expression:
            single["expression"] = [error.expression]
        issue_list = [single]
    return {"resourceType": "OperationOutcome", "issue": issue_list}


def information_outcome(text: str, code: str = "informational") -> dict[str, Any]:
    """An OperationOutcome that reports success (for `Prefer: return=OperationOutcome`)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": code, "diagnostics": text}],
    }
