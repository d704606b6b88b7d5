"""The OAuth 2 authorization server on authlib: grants, PKCE (S256 only), client
authentication, and the token responses SMART App Launch and Backend Services expect.

authlib's grants are synchronous; `OAuthServer` runs them in a worker thread
(`asyncio.to_thread`) and its store callbacks hop back onto the event loop
(`call`), the same way the DIMSE handlers reach the async store.
"""

from __future__ import annotations

import asyncio
import secrets
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import replace
from typing import Any, TypeVar

from authlib.oauth2.rfc6749 import (
    AuthorizationServer,
    InvalidGrantError,
    InvalidRequestError,
    InvalidScopeError,
)
from authlib.oauth2.rfc6749 import grants as authlib_grants
from authlib.oauth2.rfc7636 import CodeChallenge
from authlib.oauth2.rfc7636.challenge import compare_s256_code_challenge
from joserfc import jwt

from smart.assertions import PrivateKeyJwt
from smart.authority import Authority
from smart.clients import Client
from smart.grants import CodeRecord
from smart.keys import ALGORITHMS
from smart.requests import FormRequest
from smart.scopes import within
from smart.tokens import Grant

T = TypeVar("T")
STORE_TIMEOUT = 30.0  # seconds a grant waits for the store before failing
REFRESH_SCOPES = ("offline_access", "online_access")
Answer = tuple[int, Any, list[tuple[str, str]]]
# the OpenID `nonce` of the code being redeemed, from the grant to the token generator
# (authlib passes the generator no request); both run in the same worker thread
NONCE: ContextVar[str | None] = ContextVar("NONCE", default=None)
# the token request's network address, for its audit event: set by the token route, read
# in the worker thread (asyncio.to_thread copies the context)
PEER: ContextVar[str | None] = ContextVar("PEER", default=None)


class TokenNotAudited(Exception):
    """The token's AuditEvent could not be made durable: the token is not issued."""


class RegisteredClient:
    """authlib's ClientMixin over a registered `Client`."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.client_id = client.client_id

    def get_client_id(self) -> str:
        return self.client.client_id

    def get_default_redirect_uri(self) -> str | None:
        uris = self.client.redirect_uris
        return uris[0] if len(uris) == 1 else None

    def get_allowed_scope(self, scope: str | None) -> str:
        """The requested scopes this client may be granted: each one its registration
        names or covers (`system/Patient.rs` for a client of `system/*.rs`)."""
        allowed = self.client.scope.split()
        return " ".join(name for name in (scope or "").split() if within(name, allowed))

    def check_redirect_uri(self, redirect_uri: str) -> bool:
        return redirect_uri in self.client.redirect_uris  # exact: no prefix, no pattern

    def check_client_secret(self, client_secret: str) -> bool:
        return self.client.check_secret(client_secret)

    def check_endpoint_auth_method(self, method: str, endpoint: str) -> bool:
        return method in self.client.auth_methods

    def check_response_type(self, response_type: str) -> bool:
        return response_type == "code" and bool(self.client.redirect_uris)

    def check_grant_type(self, grant_type: str) -> bool:
        if grant_type == "client_credentials":
            return self.client.kind == "confidential-asymmetric"
        return grant_type in ("authorization_code", "refresh_token")


class StoredCode:
    """authlib's AuthorizationCodeMixin over a redeemed code."""

    def __init__(self, record: CodeRecord) -> None:
        self.record = record
        self.code_challenge = record.code_challenge
        self.code_challenge_method = record.code_challenge_method

    def get_redirect_uri(self) -> str:
        return self.record.redirect_uri

    def get_scope(self) -> str:
        return self.record.grant.scope

    def get_nonce(self) -> str | None:
        return self.record.nonce

    def get_auth_time(self) -> None:
        return None


class StoredRefresh:
    """authlib's TokenMixin over a redeemed refresh token (already rotated away)."""

    def __init__(self, grant: Grant) -> None:
        self.grant = grant

    def check_client(self, client: RegisteredClient) -> bool:
        return client.client_id == self.grant.client_id

    def get_scope(self) -> str:
        return self.grant.scope

    def is_expired(self) -> bool:
        return False

    def is_revoked(self) -> bool:
        return False


class S256Only(CodeChallenge):  # type: ignore[misc]
    """PKCE with S256 only, for every client: authlib's helper would default a missing
    method to `plain` and skip PKCE when no challenge was sent."""

    SUPPORTED_CODE_CHALLENGE_METHOD = ["S256"]  # noqa: RUF012 (authlib's class attribute)
    DEFAULT_CODE_CHALLENGE_METHOD = "S256"
    CODE_CHALLENGE_METHODS = {"S256": compare_s256_code_challenge}  # noqa: RUF012

    def validate_code_challenge(self, grant: Any, redirect_uri: str) -> None:
        data = grant.request.payload.data
        if not data.get("code_challenge"):
            raise InvalidRequestError("'code_challenge' (PKCE, S256) is required")
        if data.get("code_challenge_method") != "S256":
            raise InvalidRequestError("'code_challenge_method' must be S256")
        super().validate_code_challenge(grant, redirect_uri)

    def validate_code_verifier(self, grant: Any, result: Any) -> None:
        code = grant.request.authorization_code
        if not code.code_challenge or code.code_challenge_method != "S256":
            raise InvalidGrantError("the authorization had no S256 code challenge")
        if not grant.request.form.get("code_verifier"):
            raise InvalidRequestError("Missing 'code_verifier'")
        super().validate_code_verifier(grant, result)


class CodeGrant(authlib_grants.AuthorizationCodeGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [  # noqa: RUF012 (authlib's class attribute)
        "none", "client_secret_basic", "client_secret_post", "private_key_jwt",
    ]  # fmt: skip
    server: OAuthServer

    def generate_authorization_code(self) -> str:
        return secrets.token_urlsafe(32)

    def save_authorization_code(self, code: str, request: FormRequest) -> None:
        data = request.payload.data
        grant: Grant = request.user
        self.server.call(
            self.server.authority.grants.save_code(
                grant, data.get("redirect_uri") or request.client.get_default_redirect_uri(),
                data.get("code_challenge"), data.get("code_challenge_method"),
                data.get("nonce"), code,
            )
        )  # fmt: skip

    def query_authorization_code(self, code: str, client: RegisteredClient) -> StoredCode | None:
        record = self.server.call(self.server.authority.grants.redeem_code(code, client.client_id))
        return None if record is None else StoredCode(record)

    def delete_authorization_code(self, authorization_code: StoredCode) -> None:
        pass  # consumed when redeemed: a second use finds it spent

    def authenticate_user(self, authorization_code: StoredCode) -> Grant:
        NONCE.set(authorization_code.get_nonce())
        return authorization_code.record.grant


class RefreshGrant(authlib_grants.RefreshTokenGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = [  # noqa: RUF012 (authlib's class attribute)
        "none", "client_secret_basic", "client_secret_post", "private_key_jwt",
    ]  # fmt: skip
    INCLUDE_NEW_REFRESH_TOKEN = True
    server: OAuthServer

    def authenticate_refresh_token(self, refresh_token: str) -> StoredRefresh | None:
        client_id = self.request.client.client_id
        grant = self.server.call(
            self.server.authority.grants.redeem_refresh(refresh_token, client_id)
        )
        return None if grant is None else StoredRefresh(grant)

    def authenticate_user(self, refresh_token: StoredRefresh) -> Grant:
        return refresh_token.grant

    def revoke_old_credential(self, refresh_token: StoredRefresh) -> None:
        pass  # rotated when redeemed


class BackendGrant(authlib_grants.ClientCredentialsGrant):  # type: ignore[misc]
    TOKEN_ENDPOINT_AUTH_METHODS = ["private_key_jwt"]  # noqa: RUF012


class OAuthServer(AuthorizationServer):  # type: ignore[misc]
    def __init__(self, authority: Authority) -> None:
        super().__init__()
        self.authority = authority
        self.loop: asyncio.AbstractEventLoop | None = None
        self.register_token_generator("default", self._generate)
        self.register_client_auth_method("private_key_jwt", PrivateKeyJwt(self))
        self.register_grant(CodeGrant, [S256Only()])
        self.register_grant(RefreshGrant)
        self.register_grant(BackendGrant)

    def token_url(self) -> str:
        return self.authority.issuer() + "/token"

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run an authlib entry point in a worker thread (its store calls come back
        to this loop through `call`)."""
        self.loop = asyncio.get_running_loop()
        return await asyncio.to_thread(function, *args)

    def call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """From authlib's worker thread: run a store coroutine on the event loop."""
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(STORE_TIMEOUT)

    # authlib's framework hooks
    def query_client(self, client_id: str) -> RegisteredClient | None:
        if not isinstance(client_id, str):
            return None
        client = self.call(self.authority.clients.get(client_id))
        return None if client is None else RegisteredClient(client)

    def save_token(self, token: dict[str, Any], request: FormRequest) -> None:
        pass  # what must be kept (refresh token, issued jti) is stored as it is made

    def create_oauth2_request(self, request: FormRequest) -> FormRequest:
        return request

    def handle_response(self, status: int, body: Any, headers: Any) -> Answer:
        return status, body, list(headers)

    def send_signal(self, name: str, *args: Any, **kwargs: Any) -> None:
        pass

    def _generate(
        self, grant_type: str, client: RegisteredClient, user: Grant | None = None,
        scope: str | None = None, expires_in: int | None = None,
        include_refresh_token: bool = True,
    ) -> dict[str, Any]:  # fmt: skip
        granted = " ".join((scope or "").split())
        if grant_type == "client_credentials":
            granted = client.get_allowed_scope(scope)
            if not granted:
                raise InvalidScopeError("none of the requested scopes is allowed to this client")
            grant = Grant(client.client_id, client.client_id, granted)
            lifetime = self.authority.options.backend_token_lifetime
        else:
            assert user is not None
            grant, lifetime = replace(user, scope=granted), self.authority.options.token_lifetime
        minted = self.call(self.authority.tokens.mint(grant, lifetime))
        audit = self.authority.audit
        if audit is not None:
            # durable before the token leaves: an unaudited token is never issued (the
            # failure reaches the token route, which answers 503)
            recorded = audit.token_issued(
                client_id=grant.client_id, grant_type=grant_type, scope=granted,
                token_id=minted.token_id, subject=grant.subject, fhir_user=grant.fhir_user,
                patient=grant.patient, address=PEER.get(),
            )  # fmt: skip
            try:
                self.call(recorded)
            except Exception as failure:  # refused, or still retrying past STORE_TIMEOUT
                raise TokenNotAudited from failure
        token: dict[str, Any] = {"access_token": minted.token, "token_type": "Bearer",
                                 "expires_in": minted.expires_in, "scope": granted}  # fmt: skip
        if grant.patient:
            token["patient"] = grant.patient
            token["need_patient_banner"] = True
        if grant.encounter:
            token["encounter"] = grant.encounter
        scopes = granted.split()
        if include_refresh_token and grant.family and any(s in scopes for s in REFRESH_SCOPES):
            token["refresh_token"] = self.call(self.authority.grants.issue_refresh(grant))
        if "openid" in scopes and "fhirUser" in scopes and grant.fhir_user:
            token["id_token"] = self.id_token(grant, minted.expires_in)
        return token

    def id_token(self, grant: Grant, lifetime: int) -> str:
        """An OpenID Connect id_token naming the user's FHIR resource (`fhirUser`)."""
        now = self.authority.tokens.now()
        claims = {"iss": self.authority.issuer(), "sub": grant.subject, "aud": grant.client_id,
                  "iat": now, "exp": now + lifetime, "fhirUser": self.authority.audience()
                  + "/" + (grant.fhir_user or "")}  # fmt: skip
        nonce = NONCE.get()
        if nonce:
            claims["nonce"] = nonce
        key = self.authority.keys.signing
        header = {"alg": key.alg, "kid": key.kid, "typ": "JWT"}
        return jwt.encode(header, claims, key, algorithms=list(ALGORITHMS))
