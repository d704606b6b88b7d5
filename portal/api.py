"""The portal's calls to MedBridge: the authorization server and the FHIR and DICOMweb
doors, through the server's own ASGI app in-process.

In-process but through the HTTP doors, not the router: the requests carry the
patient's bearer token and pass authentication, scopes, consent and audit exactly as
any app's would, without a socket or TLS to this same server.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import httpx
from starlette.types import ASGIApp

FHIR_JSON = "application/fhir+json"
TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: dict[str, Any]


def new_verifier() -> str:
    """An RFC 7636 code verifier: 43+ characters of the unreserved set."""
    return secrets.token_urlsafe(48)


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Api:
    """`public_base()` is the server's configured base URL: tokens are issued for its
    FHIR base, and the doors build their links from it, never from a Host header."""

    def __init__(self, app: ASGIApp, public_base: Callable[[], str]) -> None:
        self.public_base = public_base
        self.client = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://portal.internal",
            timeout=TIMEOUT,
        )  # fmt: skip

    @property
    def fhir_base(self) -> str:
        return self.public_base() + "/fhir"

    def authorize_url(self, client_id: str, redirect_uri: str, scope: str, state: str,
                      verifier: str) -> str:  # fmt: skip
        query = {
            "response_type": "code", "client_id": client_id, "redirect_uri": redirect_uri,
            "scope": scope, "state": state, "aud": self.fhir_base,
            "code_challenge": s256(verifier), "code_challenge_method": "S256",
        }  # fmt: skip
        return f"{self.public_base()}/auth/authorize?{urlencode(query)}"

    async def token(self, form: dict[str, str]) -> Answer:
        response = await self.client.post("/auth/token", data=form)
        return Answer(response.status_code, _json(response))

    async def revoke(self, client_id: str, token: str, hint: str) -> int:
        form = {"token": token, "token_type_hint": hint, "client_id": client_id}
        response = await self.client.post("/auth/revoke", data=form)
        return response.status_code

    def _headers(self, token: str, extra: dict[str, str] | None = None) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}", "Accept": FHIR_JSON, **(extra or {})}

    async def get(self, token: str, path: str, params: dict[str, str] | None = None) -> Answer:
        response = await self.client.get(f"/fhir/{path}", params=params,
                                         headers=self._headers(token))  # fmt: skip
        return Answer(response.status_code, _json(response))

    async def create(self, token: str, resource: dict[str, Any]) -> Answer:
        """POST, asking for the OperationOutcome (where rule 4's warning is)."""
        headers = self._headers(
            token, {"Content-Type": FHIR_JSON, "Prefer": "return=OperationOutcome"}
        )
        response = await self.client.post(
            f"/fhir/{resource['resourceType']}", json=resource, headers=headers
        )
        return Answer(response.status_code, _json(response))

    async def delete(self, token: str, path: str) -> Answer:
        response = await self.client.delete(f"/fhir/{path}", headers=self._headers(token))
        return Answer(response.status_code, _json(response))

    async def image(self, token: str, path: str) -> tuple[int, bytes, str]:
        """A DICOMweb rendered resource (a thumbnail): status, bytes, media type."""
        headers = {"Authorization": f"Bearer {token}", "Accept": "image/jpeg"}
        response = await self.client.get(f"/dicomweb/{path}", headers=headers)
        return response.status_code, response.content, response.headers.get("content-type", "")

    async def close(self) -> None:
        await self.client.aclose()


def _json(response: httpx.Response) -> dict[str, Any]:
    try:
        body = response.json()
    except ValueError:
        return {}
    return body if isinstance(body, dict) else {}
