"""What interactions need from the outside: the repository and the request limits."""

from __future__ import annotations

from dataclasses import dataclass, field

from access.budget import Budget
from fhir_server.repository import Repository

DEFAULT_MAX_BODY = 32 * 1024 * 1024


@dataclass(slots=True)
class FhirServices:
    repository: Repository
    max_body_bytes: int = DEFAULT_MAX_BODY
    software_version: str = "0.1.0"
    budget: Budget = field(default_factory=Budget)
