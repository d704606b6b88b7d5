"""The one exception of every door, and the catalog of stable error codes it carries.

Every failure a client can see is an `AccessError`; each door renders it in its own
protocol (FHIR OperationOutcome in `fhir_server.errors`, HL7 ACK ERR, DIMSE status). The
catalog (error_catalog.json) maps each `MB-xxxx` code to its HTTP status, FHIR issue
type, HL7 ERR-3 code and DIMSE status, so every door reports the same failure with the
same code.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class CatalogEntry:
    code: str
    http: int
    issue: str
    hl7: str
    dimse: int
    text: str
    # the OAuth error code (RFC 6750 section 3.1) an HTTP door puts in WWW-Authenticate
    oauth: str | None = None


class ElementIssue(Protocol):
    """One problem with one element (a validation issue), in OperationOutcome terms."""

    @property
    def code(self) -> str: ...
    @property
    def diagnostics(self) -> str: ...
    @property
    def expression(self) -> str: ...


@cache
def catalog() -> dict[str, CatalogEntry]:
    """All catalog entries by code (`MB-1002` -> 404 not-found ...)."""
    raw = json.loads((resources.files("access") / "error_catalog.json").read_text(encoding="utf-8"))
    return {
        code: CatalogEntry(
            code, e["http"], e["issue"], e["hl7"], int(e["dimse"], 16), e["text"], e.get("oauth")
        )
        for code, e in raw.items()
        if code.startswith("MB-")
    }


class AccessError(Exception):
    """A failure with its answer: catalog code, diagnostics, and the elements concerned."""

    def __init__(
        self,
        code: str,
        diagnostics: str | None = None,
        *,
        expression: str | None = None,
        issues: Sequence[ElementIssue] | None = None,
        status: int | None = None,
    ) -> None:
        self.entry = catalog()[code]
        self.diagnostics = diagnostics or self.entry.text
        self.expression = expression
        self.issues: list[ElementIssue] = list(issues or [])
        self.status = status or self.entry.http
        super().__init__(f"{code}: {self.diagnostics}")

    @property
    def code(self) -> str:
        return self.entry.code

    def __reduce__(self) -> tuple[Any, ...]:
        # pickled by its fields: the default (the message as the only argument) would
        # call the constructor with a code that is not in the catalog on the way back
        # from a worker process (access/worker_pool.py)
        return (_rebuilt, (self.code, self.diagnostics, self.expression, self.issues, self.status))


def _rebuilt(
    code: str,
    diagnostics: str,
    expression: str | None,
    issues: list[ElementIssue],
    status: int,
) -> AccessError:
    return AccessError(code, diagnostics, expression=expression, issues=issues, status=status)
