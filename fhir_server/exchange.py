"""A FHIR request and response with no HTTP framework in them.

The HTTP adapter builds a `FhirRequest`; a batch or transaction entry builds one too,
so both go through the same pipeline and router.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from access.pipeline import Exchange, Pipeline
from fhir_server.registry import Interaction

FHIR_JSON = "application/fhir+json"


@dataclass(slots=True)
class FhirRequest:
    method: str
    path: str  # below the FHIR base, without leading slash: "Patient/1/_history/2"
    query: list[tuple[str, str]] = field(default_factory=list)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes | None = None
    base_url: str = ""
    # the parsed body of a Bundle POSTed to the base, parsed before the pipeline runs:
    # its `type` decides the access's action (batch or transaction)
    document: Any = None
    # a Bundle entry acted as another method than it asked for: its POST with an id
    # assigned from its fullUrl runs as a create-on-update PUT, and is still a create
    entry_method: str | None = None
    # the Patients a large written body names, found on the body worker before the
    # pipeline runs (fhir_server/access.py `written_patients`): None = not looked for
    named_patients: frozenset[str] | None = None

    def header(self, name: str) -> str | None:
        return self.headers.get(name)

    def param(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None


@dataclass(slots=True)
class Route:
    """What a request asks for, parsed from method and path."""

    interaction: Interaction
    resource_type: str | None = None
    resource_id: str | None = None
    version_id: str | None = None
    compartment: str | None = None  # the Patient id of /Patient/{id}/{type}
    operation: str | None = None  # $everything


@dataclass(slots=True)
class FhirResponse:
    status: int
    body: bytes | None = None  # serialized JSON, served as stored
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = FHIR_JSON
    # the instant of the version a write stored: a bundle's entry says it without
    # parsing the resource again (a 10 MiB Binary was 12 ms of the event loop)
    last_updated: str | None = None

    @classmethod
    def of(cls, status: int, resource: Any, headers: dict[str, str] | None = None) -> FhirResponse:
        return cls(status, orjson.dumps(resource), headers or {})


# the FHIR door's instance of the neutral pipeline
FhirExchange = Exchange[FhirRequest, FhirResponse]
FhirPipeline = Pipeline[FhirRequest, FhirResponse]
