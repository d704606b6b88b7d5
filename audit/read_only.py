"""AuditEvents are the server's record of who did what: a client may read and search
them, never create, change or delete one (SMART hardening: no mass assignment of the
audit trail), whatever its scopes, also as a bundle entry."""

from __future__ import annotations

from typing import Any

from access.access import Action
from access.errors import AccessError
from access.pipeline import Exchange

AUDIT_TYPE = "AuditEvent"
WRITES = frozenset({Action.CREATE, Action.UPDATE, Action.PATCH, Action.DELETE})
READ_ONLY = "MB-1091"


async def refuse_audit_writes(exchange: Exchange[Any, Any]) -> None:
    """AUTHORIZE stage: refuse any write of an AuditEvent (405)."""
    access = exchange.access
    if access is not None and AUDIT_TYPE in access.resource_types and access.action in WRITES:
        raise AccessError(READ_ONLY, expression=AUDIT_TYPE)
