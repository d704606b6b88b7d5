"""The admin operations of `medbridge users add`, `clients add`, `token` and `launch`: plain async
handlers (JSON object in and out) that medbridge/ registers on the running server's
`/admin` routes. A ValueError's message is the answer the operator sees."""

from __future__ import annotations

from typing import Any

from smart.accounts import FHIR_USER
from smart.authority import Authority
from smart.launches import LaunchContext
from smart.patient_context import NoPatientContext, own_patient
from smart.tokens import Grant

ADMIN_CLIENT = "medbridge-admin"  # the client_id of tokens the operator mints


class SmartAdmin:
    def __init__(self, authority: Authority) -> None:
        self.authority = authority

    def handlers(self) -> dict[str, Any]:
        return {"users/add": self.add_user, "clients/add": self.add_client,
                "token": self.mint, "launch": self.launch}  # fmt: skip

    async def add_user(self, payload: dict[str, Any]) -> dict[str, Any]:
        account = await self.authority.accounts.add(
            _text(payload, "name"), _text(payload, "password"), _text(payload, "fhir_user")
        )
        return {"name": account.name, "fhir_user": account.fhir_user}

    async def add_client(self, payload: dict[str, Any]) -> dict[str, Any]:
        uris = payload.get("redirect_uris") or []
        if not isinstance(uris, list) or not all(isinstance(uri, str) for uri in uris):
            raise ValueError("redirect_uris: a list of URIs")
        jwks = payload.get("jwks")
        if jwks is not None and not isinstance(jwks, dict):
            raise ValueError("jwks: a JWK Set object")
        client = await self.authority.clients.add(
            _text(payload, "client_id"), uris, _text(payload, "scope"),
            _optional(payload, "secret"), jwks, _optional(payload, "jwks_url"),
        )  # fmt: skip
        return client.describe()

    async def mint(self, payload: dict[str, Any]) -> dict[str, Any]:
        """An access token for administration and tests, as the operator asked."""
        scope = " ".join(_text(payload, "scope").split())
        client_id = _optional(payload, "client") or ADMIN_CLIENT
        if client_id != ADMIN_CLIENT and await self.authority.clients.get(client_id) is None:
            raise ValueError(f"no client {client_id!r}")
        patient = _optional(payload, "patient")
        user = _optional(payload, "user")
        subject, fhir_user = client_id, None
        if user is not None and FHIR_USER.match(user):
            subject, fhir_user = user, user
        elif user is not None:
            account = await self.authority.accounts.get(user)
            if account is None:
                raise ValueError(f"no user {user!r}")
            subject, fhir_user = account.name, account.fhir_user
            try:
                patient = patient or await own_patient(account, self.authority.tokens.repository)
            except NoPatientContext as missing:
                raise ValueError(str(missing)) from None
        grant = Grant(client_id, subject, scope, patient=patient, fhir_user=fhir_user)
        minted = await self.authority.tokens.mint(grant)
        return {"access_token": minted.token, "token_type": "Bearer",
                "expires_in": minted.expires_in, "scope": scope, "patient": patient}  # fmt: skip

    async def launch(self, payload: dict[str, Any]) -> dict[str, Any]:
        """An EHR launch context (SMART EHR launch): the opaque, short-lived, single-use
        `launch` value the EHR hands to the app it starts."""
        patient = _text(payload, "patient")
        stored = await self.authority.tokens.repository.read("Patient", patient)
        if stored is None or stored.raw is None:
            raise ValueError(f"no Patient/{patient}")
        user, client_id = _optional(payload, "user"), _optional(payload, "client")
        if user is not None and await self.authority.accounts.get(user) is None:
            raise ValueError(f"no user {user!r}")
        if client_id is not None and await self.authority.clients.get(client_id) is None:
            raise ValueError(f"no client {client_id!r}")
        context = LaunchContext(patient, _optional(payload, "encounter"), user, client_id)
        value = await self.authority.launches.create(context)
        return {"launch": value, "expires_in": self.authority.launches.lifetime,
                "patient": patient, "encounter": context.encounter}  # fmt: skip


def _text(payload: dict[str, Any], name: str) -> str:
    value = payload.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: required")
    return value


def _optional(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name}: a non-empty string")
    return value
