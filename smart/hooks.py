"""The SMART hooks of the shared pipeline: authenticate a bearer token, authorize its
scopes, confine a patient-context token to its patient's compartment.

They read only the `Access` the door described and the request context: no route, URL
or body. Only the HTTP doors (FHIR, DICOMweb) carry tokens; an access whose actor its
door already knows (an MLLP peer, a calling AE title, the server's own linkers, the
local operator) was authenticated by that door's own rules and is left to them.
"""

from __future__ import annotations

import re
from dataclasses import replace
from functools import lru_cache
from typing import Any

from access.access import Access, Action
from access.context import ANONYMOUS, Actor, Door, RequestContext
from access.errors import AccessError
from access.pipeline import Exchange
from access.restriction import Restriction
from smart.claims import Claims, TokenInvalid, TokenValidator
from smart.compartment import CompartmentOf
from smart.scopes import Scopes, parse_scopes

TOKEN_DOORS = frozenset({Door.FHIR, Door.DICOMWEB})
# actors a token authenticated: a signed-in user, or a backend service (its client)
TOKEN_ACTORS = frozenset({"user", "client"})
# answered without a token: the CapabilityStatement (and, outside the pipeline,
# /health and the SMART discovery documents)
EXEMPT = frozenset({Action.CAPABILITIES})
WRITES = frozenset({Action.CREATE, Action.UPDATE, Action.PATCH, Action.DELETE})
# reads of one named record: another patient's answers as a record that does not exist
NAMED_READS = frozenset(
    {Action.READ, Action.VREAD, Action.HISTORY_INSTANCE, Action.OPERATION}
)  # fmt: skip
CLAIMS_NOTE = "smart.claims"
# token68 (RFC 7235 section 2.1): what a bearer token may be made of, "=" only at the
# end; one compiled match per request (a set of a 1 KB token's characters cost ~15 us)
_TOKEN68 = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


def bearer_token(credentials: str | None) -> str:
    """The token of `Authorization: Bearer <token>` (RFC 6750 section 2.1), or the
    AccessError that refuses it: missing (MB-1250) or malformed (MB-1252)."""
    if credentials is None or not credentials.strip():
        raise AccessError("MB-1250")
    scheme, _, token = credentials.strip().partition(" ")
    if scheme.lower() != "bearer":
        # another scheme (Basic ...) is no bearer token: the client must get one
        raise AccessError("MB-1250", "only the Bearer scheme is accepted")
    token = token.strip(" ")
    if _TOKEN68.fullmatch(token) is None:
        raise AccessError("MB-1252")
    return token


def actor_of(claims: Claims) -> Actor:
    """A signed-in user (App Launch), or the client itself (Backend Services: its
    token's subject is its client id and it names no user)."""
    if claims.fhir_user is None and claims.subject == claims.client_id:
        return Actor("client", claims.client_id)
    return Actor("user", claims.subject, claims.fhir_user)


@lru_cache(maxsize=1024)
def scopes_of(granted: frozenset[str]) -> Scopes:
    # a token is used for many requests: parse its scopes once
    return parse_scopes(granted)


class SmartHooks:
    """`authenticate` (Stage.AUTHENTICATE) and `authorize` (Stage.AUTHORIZE).

    `compartment_of` (smart/compartment.py) tells whose record a patient-context write
    by id would change; without it only what the access names is checked."""

    def __init__(
        self, validator: TokenValidator, compartment_of: CompartmentOf | None = None
    ) -> None:
        self.validator = validator
        self.compartment_of = compartment_of

    async def authenticate(self, exchange: Exchange[Any, Any]) -> None:
        context, access = exchange.context, exchange.access
        if access is None or not _needs_token(context, access):
            return
        token = bearer_token(context.credentials)
        try:
            claims = await self.validator.validate(token)
        except TokenInvalid as invalid:
            raise AccessError("MB-1251", invalid.reason) from None
        context.actor = actor_of(claims)
        context.scopes = claims.scopes
        context.patient = claims.patient
        context.purpose_of_use = claims.purpose_of_use or access.purpose_of_use
        context.notes[CLAIMS_NOTE] = claims
        # the door described the access before anyone was authenticated
        exchange.access = replace(
            access, actor=context.actor, purpose_of_use=context.purpose_of_use
        )

    async def authorize(self, exchange: Exchange[Any, Any]) -> None:
        context, access = exchange.context, exchange.access
        if access is None or context.door not in TOKEN_DOORS or access.action in EXEMPT:
            return
        if context.actor.kind not in TOKEN_ACTORS:
            return  # authenticated by its own door (the server's linkers)
        grant = scopes_of(context.scopes).grant(access)
        if grant is None:
            raise AccessError("MB-1253", _refusal(access))
        if grant == "patient":
            confine(exchange, access, context.patient)
            await self._check_current(access, context.patient)

    async def _check_current(self, access: Access, patient: str | None) -> None:
        """A write by id changes a record that exists: it must be the patient's already
        (an update may not take over another patient's Observation by naming this one)."""
        if self.compartment_of is None or access.action not in WRITES or patient is None:
            return
        if access.resource_id is None or len(access.resource_types) != 1:
            return
        (resource_type,) = access.resource_types
        if resource_type == "Patient":
            return  # the access names it: checked by confine
        current = await self.compartment_of(resource_type, access.resource_id)
        if current is not None and patient not in current:
            raise AccessError("MB-1254")


def confine(exchange: Exchange[Any, Any], access: Access, patient: str | None) -> None:
    """Limit a patient-context access to `patient`'s compartment: a write naming another
    patient is refused, a read naming one is not found, and everything else is narrowed,
    so the door's query (search, includes, history, DICOM rows) sees only that patient."""
    if patient is None:
        raise AccessError("MB-1253", "patient scopes, but the token names no patient")
    if access.action is Action.STOW:
        # whose studies these are is known only once the instances are parsed, after
        # authorization: a patient's token could store into another patient's record
        raise AccessError("MB-1254", "STOW-RS needs a user or system grant")
    others = access.patients - {patient}
    if others and access.action in WRITES:
        raise AccessError("MB-1254")
    named = access.resource_id if "Patient" in access.resource_types else None
    if others and access.action in NAMED_READS and named in others:
        raise AccessError("MB-1002", f"Patient/{access.resource_id} is not known")
    exchange.narrow(Restriction(patients=frozenset({patient})))


def _needs_token(context: RequestContext, access: Access) -> bool:
    # an actor the door already knows was authenticated there (or earlier in this
    # request: the entries of a bundle share its context)
    return (
        context.door in TOKEN_DOORS and context.actor == ANONYMOUS and access.action not in EXEMPT
    )


def _refusal(access: Access) -> str:
    types = ", ".join(sorted(access.resource_types)) or "the system level"
    return f"the granted scopes do not permit {access.action} on {types}"
