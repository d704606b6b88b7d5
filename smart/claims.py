"""What a valid access token says, whoever issued it (MedBridge's own authorization
server or an external OpenID Connect issuer). The enforcement hooks read only this."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Claims:
    issuer: str  # iss
    subject: str  # sub: the user name, or the client id of a backend service
    client_id: str  # client_id (RFC 9068), the app acting
    scopes: frozenset[str]  # scope, split on spaces
    expires_at: int  # exp, epoch seconds
    token_id: str  # jti, what revocation and audit name
    patient: str | None = None  # launch context: a FHIR Patient logical id
    encounter: str | None = None
    fhir_user: str | None = None  # "Practitioner/123", "Patient/9", "RelatedPerson/4"
    purpose_of_use: str | None = None  # an HL7 v3 PurposeOfUse code, if the token carries one


class TokenInvalid(Exception):
    """Missing, malformed, expired, revoked, or not for this server. `reason` is safe to
    show the client (RFC 6750 `error_description`); it never contains the token."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenValidator(Protocol):
    async def validate(self, token: str) -> Claims:
        """The claims of a bearer token, or `TokenInvalid`."""
        ...
