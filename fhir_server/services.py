"""What interactions need from the outside: the repository and the request limits."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from access.budget import Budget
from fhir_server.repository import Repository

DEFAULT_MAX_BODY = 32 * 1024 * 1024


@dataclass(slots=True)
class FhirServices:
    repository: Repository
    max_body_bytes: int = DEFAULT_MAX_BODY
    software_version: str = "0.1.0"
    budget: Budget = field(default_factory=Budget)
    # the CapabilityStatement's rest.security for a FHIR base URL, when the composition
    # enforces tokens (smart/capability.py); None: the statement has no security element
    security: Callable[[str], dict[str, Any]] | None = None
