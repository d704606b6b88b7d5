"""capabilities: the CapabilityStatement, generated from what is registered."""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

from fhir_server.exchange import FhirExchange, FhirResponse
from fhir_server.registry import SERVED_TYPES, SYSTEM_INTERACTIONS, TYPE_INTERACTIONS
from fhir_server.search.parameters import parameters_for
from fhir_server.services import FhirServices
from profiles.models import FHIR_VERSION
from profiles.validator import profiles_for

SEARCH_PARAMETER_BASE = "http://hl7.org/fhir/SearchParameter/"
PATIENT_EVERYTHING = "http://hl7.org/fhir/OperationDefinition/Patient-everything"


async def capabilities(exchange: FhirExchange, services: FhirServices) -> FhirResponse:
    base_url = exchange.request.base_url
    security = services.security(base_url) if services.security is not None else None
    body = _statement(base_url, services.software_version, orjson.dumps(security))
    return FhirResponse(200, body)


@cache
def _statement(base_url: str, version: str, security: bytes) -> bytes:
    return orjson.dumps(capability_statement(base_url, version, orjson.loads(security)))


def capability_statement(
    base_url: str, version: str, security: dict[str, Any] | None = None
) -> dict[str, Any]:
    resources = [_resource(resource_type) for resource_type in SERVED_TYPES]
    rest: dict[str, Any] = {"mode": "server"}
    if security is not None:
        rest["security"] = security
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-22",
        "publisher": "MedBridge",
        "kind": "instance",
        "software": {"name": "MedBridge", "version": version},
        "implementation": {"description": "MedBridge FHIR server", "url": base_url},
        "fhirVersion": FHIR_VERSION,
        "format": ["application/fhir+json", "json"],
        "patchFormat": ["application/json-patch+json"],
        "rest": [
            {
                **rest,
                "resource": resources,
                "interaction": [{"code": str(code)} for code in SYSTEM_INTERACTIONS],
            }
        ],
    }


def _resource(resource_type: str) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "type": resource_type,
        "interaction": [{"code": str(code)} for code in TYPE_INTERACTIONS],
        "versioning": "versioned-update",
        "readHistory": True,
        "updateCreate": True,
        "conditionalCreate": True,
        "conditionalRead": "not-supported",
        "conditionalUpdate": True,
        "conditionalDelete": "single",
        "searchParam": [
            {
                "name": parameter.code,
                "definition": SEARCH_PARAMETER_BASE + parameter.id,
                "type": parameter.type,
            }
            for parameter in sorted(parameters_for(resource_type).values(), key=lambda p: p.code)
        ],
    }
    entry["searchInclude"] = search_includes(resource_type)
    entry["searchRevInclude"] = search_rev_includes(resource_type)
    if resource_type == "Patient":
        entry["operation"] = [{"name": "everything", "definition": PATIENT_EVERYTHING}]
    profiles = profiles_for(resource_type)
    if profiles:
        entry["supportedProfile"] = profiles
    return entry


def search_includes(resource_type: str) -> list[str]:
    """`_include` values: every reference parameter of the type."""
    return [
        f"{resource_type}:{p.code}"
        for p in sorted(parameters_for(resource_type).values(), key=lambda p: p.code)
        if p.type == "reference"
    ]


def search_rev_includes(resource_type: str) -> list[str]:
    """`_revinclude` values: reference parameters of served types that can point here."""
    return [
        f"{source}:{p.code}"
        for source in SERVED_TYPES
        for p in sorted(parameters_for(source).values(), key=lambda p: p.code)
        if p.type == "reference" and (not p.target or resource_type in p.target)
    ]
