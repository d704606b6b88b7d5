"""The authorization server's HTTP routes: token, introspection, revocation, the JWK
Set and the two discovery documents. medbridge/app.py mounts `routes()`.

None of these routes takes an access token: they are how a client gets one (the
token endpoint authenticates the client itself), or public metadata.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from authlib.oauth2.rfc6749 import OAuth2Error
from starlette.requests import Request
from starlette.responses import Response

from smart.authority import Authority
from smart.authorize import AuthorizePages
from smart.claims import TokenInvalid
from smart.keys import ALGORITHMS
from smart.requests import FormRequest, form_request
from smart.server import PEER, Answer, OAuthServer, RegisteredClient, TokenNotAudited

log = logging.getLogger(__name__)
Endpoint = Callable[[Request], Awaitable[Response]]
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
CONFIDENTIAL_METHODS = ["client_secret_basic", "client_secret_post", "private_key_jwt"]
ALL_METHODS = ["none", *CONFIDENTIAL_METHODS]
SCOPES_SUPPORTED = [
    "openid", "fhirUser", "launch", "launch/patient", "offline_access", "online_access",
    "patient/*.rs", "user/*.rs", "user/*.cruds", "system/*.rs", "patient/*.read",
    "user/*.read", "system/*.read",
]  # fmt: skip
# what is implemented and tested, nothing more (SMART App Launch 2.x "Capabilities";
# the EHR launch: tests/integration/test_smart_launch.py)
CAPABILITIES = [
    "launch-ehr", "launch-standalone", "authorize-post", "context-ehr-patient",
    "context-ehr-encounter", "context-standalone-patient", "client-public",
    "client-confidential-symmetric", "client-confidential-asymmetric",
    "permission-offline", "permission-online", "permission-patient", "permission-user",
    "permission-v1", "permission-v2", "sso-openid-connect",
]  # fmt: skip


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(body), status, headers, media_type="application/json")


class SmartEndpoints:
    def __init__(self, authority: Authority, capabilities: list[str] | None = None) -> None:
        self.authority = authority
        self.oauth = OAuthServer(authority)
        self.pages = AuthorizePages(authority, self.oauth)
        self.capabilities = capabilities or CAPABILITIES

    def routes(self) -> list[tuple[str, Endpoint, list[str]]]:
        return [
            ("/auth/authorize", self.pages.handle, ["GET", "POST"]),
            ("/auth/token", self.token, ["POST"]),
            ("/auth/introspect", self.introspect, ["POST"]),
            ("/auth/revoke", self.revoke, ["POST"]),
            ("/auth/jwks", self.jwks, ["GET"]),
            ("/fhir/.well-known/smart-configuration", self.smart_configuration, ["GET"]),
            ("/.well-known/openid-configuration", self.openid_configuration, ["GET"]),
            ("/auth/.well-known/openid-configuration", self.openid_configuration, ["GET"]),
        ]

    def url(self, name: str) -> str:
        return f"{self.authority.issuer()}/{name}"

    async def _request(self, request: Request, name: str) -> FormRequest | Response:
        try:
            return await form_request(request, self.url(name))
        except (ValueError, UnicodeDecodeError) as error:
            return self._error(400, "invalid_request", str(error))

    def _error(self, status: int, error: str, description: str) -> Response:
        body = {"error": error, "error_description": description}
        return json_response(body, status, NO_STORE)

    async def token(self, request: Request) -> Response:
        """RFC 6749 token endpoint: authorization_code, refresh_token, client_credentials."""
        parsed = await self._request(request, "token")
        if isinstance(parsed, Response):
            return parsed
        PEER.set(request.client.host if request.client is not None else None)
        try:
            answer: Answer = await self.oauth.run(self.oauth.create_token_response, parsed)
        except TokenNotAudited as error:  # the token's audit event could not be written
            log.error("token not issued, not audited: %s", type(error.__cause__).__name__)
            return self._error(503, "temporarily_unavailable", "the token could not be issued; "
                               "try again")  # fmt: skip
        except Exception as error:  # a store failure inside a grant: answered, never raised
            log.error("token request failed: %s", type(error).__name__)
            return self._error(500, "server_error", "the token could not be issued; try again")
        status, body, headers = answer
        sent = {**dict(headers), **NO_STORE}
        sent.pop("Content-Type", None)
        return json_response(body, status, sent)

    async def introspect(self, request: Request) -> Response:
        """RFC 7662, for confidential clients (resource servers); the answer of an
        invalid, expired or revoked token is exactly `{"active": false}`."""
        parsed = await self._request(request, "introspect")
        if isinstance(parsed, Response):
            return parsed
        refused = await self._authenticate(parsed, CONFIDENTIAL_METHODS, "introspection")
        if isinstance(refused, Response):
            return refused
        token = parsed.form.get("token")
        if not token:
            return self._error(400, "invalid_request", "'token' is required")
        return json_response(await self.authority.tokens.introspect(token), 200, NO_STORE)

    async def revoke(self, request: Request) -> Response:
        """RFC 7009: a client revokes its own access or refresh token (a refresh token
        takes its whole authorization with it). Unknown tokens also answer 200."""
        parsed = await self._request(request, "revoke")
        if isinstance(parsed, Response):
            return parsed
        client = await self._authenticate(parsed, ALL_METHODS, "revocation")
        if isinstance(client, Response):
            return client
        token = parsed.form.get("token")
        if not token:
            return self._error(400, "invalid_request", "'token' is required")
        tokens = self.authority.tokens
        await tokens.know_signer(token)
        try:
            claims = tokens.decode(token, check_expiry=False)
        except TokenInvalid:  # not one of our access tokens: perhaps a refresh token
            await self.authority.grants.revoke_refresh(token, client.client_id)
        else:
            if claims.get("client_id") == client.client_id:
                await tokens.revoke_ids([(str(claims["jti"]), int(claims["exp"]))])
        return Response(b"", 200, NO_STORE)

    async def _authenticate(
        self, parsed: FormRequest, methods: list[str], endpoint: str
    ) -> RegisteredClient | Response:
        def authenticate() -> Any:
            try:
                return self.oauth.authenticate_client(parsed, methods, endpoint)
            except OAuth2Error as error:
                return error

        found = await self.oauth.run(authenticate)
        if isinstance(found, OAuth2Error):
            return self._error(401, "invalid_client", found.description or "unknown client")
        client: RegisteredClient = found
        return client

    async def jwks(self, request: Request) -> Response:
        return json_response(self.authority.keys.jwks(), 200, {"Cache-Control": "max-age=300"})

    def _common(self) -> dict[str, Any]:
        return {
            "issuer": self.authority.issuer(),
            "jwks_uri": self.url("jwks"),
            "authorization_endpoint": self.url("authorize"),
            "token_endpoint": self.url("token"),
            "introspection_endpoint": self.url("introspect"),
            "revocation_endpoint": self.url("revoke"),
            "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
            "response_types_supported": ["code"],
            "token_endpoint_auth_methods_supported": ALL_METHODS,
            "token_endpoint_auth_signing_alg_values_supported": list(ALGORITHMS),
            "code_challenge_methods_supported": ["S256"],
            "scopes_supported": SCOPES_SUPPORTED,
        }

    async def smart_configuration(self, request: Request) -> Response:
        """SMART App Launch 2.x `.well-known/smart-configuration` of the FHIR base."""
        return json_response({**self._common(), "capabilities": self.capabilities})

    async def openid_configuration(self, request: Request) -> Response:
        """OpenID Connect Discovery 1.0 of the issuer."""
        document = {
            **self._common(),
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": list(ALGORITHMS),
            "claims_supported": ["iss", "sub", "aud", "exp", "iat", "nonce", "fhirUser"],
        }
        return json_response(document)
