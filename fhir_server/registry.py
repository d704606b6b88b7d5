"""What this server serves: resource types and their interactions.

The CapabilityStatement is generated from this registry and from the search-parameter
table, so /metadata never claims what the router does not do.
"""

from __future__ import annotations

from enum import StrEnum


class Interaction(StrEnum):
    """FHIR RESTful interaction codes (http://hl7.org/fhir/restful-interaction)."""

    READ = "read"
    VREAD = "vread"
    UPDATE = "update"
    PATCH = "patch"
    DELETE = "delete"
    HISTORY_INSTANCE = "history-instance"
    HISTORY_TYPE = "history-type"
    CREATE = "create"
    SEARCH_TYPE = "search-type"
    CAPABILITIES = "capabilities"
    HISTORY_SYSTEM = "history-system"
    SEARCH_SYSTEM = "search-system"
    BATCH = "batch"
    TRANSACTION = "transaction"
    OPERATION = "operation"  # named operations such as Patient/{id}/$everything


SERVED_TYPES: tuple[str, ...] = (
    "Patient",
    "Practitioner",
    "PractitionerRole",
    "Organization",
    "RelatedPerson",
    "Encounter",
    "ServiceRequest",
    "ImagingStudy",
    "DiagnosticReport",
    "Observation",
    "Endpoint",
    "Consent",
    "AuditEvent",
    "Provenance",
    "Task",
    "DocumentReference",
    "Binary",
)

TYPE_INTERACTIONS: tuple[Interaction, ...] = (
    Interaction.READ,
    Interaction.VREAD,
    Interaction.UPDATE,
    Interaction.PATCH,
    Interaction.DELETE,
    Interaction.HISTORY_INSTANCE,
    Interaction.HISTORY_TYPE,
    Interaction.CREATE,
    Interaction.SEARCH_TYPE,
)

SYSTEM_INTERACTIONS: tuple[Interaction, ...] = (
    Interaction.HISTORY_SYSTEM,
    Interaction.BATCH,
    Interaction.TRANSACTION,
)


def is_served(resource_type: str) -> bool:
    return resource_type in _SERVED


_SERVED = frozenset(SERVED_TYPES)
