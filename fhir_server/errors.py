"""The one exception of the FHIR door, and the catalog of stable error codes it carries.

Every failure a FHIR client can see is a `FhirError`; the HTTP edge renders it as an
OperationOutcome. The catalog (error_catalog.json) maps each `MB-xxxx` code to its HTTP
status, FHIR issue type, HL7 ERR-3 code and DIMSE status, so every door reports the same
failure with the same code.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from profiles.validator import Issue

ISSUE_CODE_SYSTEM = "https://medbridge.example.org/fhir/CodeSystem/error"


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    code: str
    http: int
    issue: str
    hl7: str
    dimse: int
    text: str


@cache
def catalog() -> dict[str, CatalogEntry]:
    """All catalog entries by code (`MB-1002` -> 404 not-found ...)."""
    raw = json.loads(
        (resources.files("fhir_server") / "error_catalog.json").read_text(encoding="utf-8")
    )
    return {
        code: CatalogEntry(code, e["http"], e["issue"], e["hl7"], int(e["dimse"], 16), e["text"])
        for code, e in raw.items()
        if code.startswith("MB-")
    }


class FhirError(Exception):
    """A failure with its answer: catalog code, diagnostics, and the elements concerned."""

    def __init__(
        self,
        code: str,
        diagnostics: str | None = None,
        *,
        expression: str | None = None,
        issues: list[Issue] | None = None,
        status: int | None = None,
    ) -> None:
        self.entry = catalog()[code]
        self.diagnostics = diagnostics or self.entry.text
        self.expression = expression
        self.issues = issues or []
        self.status = status or self.entry.http
        super().__init__(f"{code}: {self.diagnostics}")

    @property
    def code(self) -> str:
        return self.entry.code

    def outcome(self) -> dict[str, Any]:
        """This error as an OperationOutcome resource."""
        details = {
            "coding": [{"system": ISSUE_CODE_SYSTEM, "code": self.entry.code}],
            "text": self.entry.text,
        }
        if self.issues:
            issue_list = [
                {
                    "severity": "error",
                    "code": issue.code,
                    "details": details,
                    "diagnostics": issue.diagnostics,
                    "expression": [issue.expression],
                }
                for issue in self.issues
            ]
        else:
            single: dict[str, Any] = {
                "severity": "error",
                "code": self.entry.issue,
                "details": details,
                "diagnostics": self.diagnostics,
            }
            if self.expression:
                single["expression"] = [self.expression]
            issue_list = [single]
        return {"resourceType": "OperationOutcome", "issue": issue_list}


def information_outcome(text: str, code: str = "informational") -> dict[str, Any]:
    """An OperationOutcome that reports success (for `Prefer: return=OperationOutcome`)."""
    return {
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "information", "code": code, "diagnostics": text}],
    }
