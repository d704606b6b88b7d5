"""`/auth/authorize` (GET and POST): the sign-in page and the approval page.

1. The app's request (query, or a form for `authorize-post`) is checked by authlib's
   authorization-code grant: client, exact redirect URI, response type, PKCE S256;
   here too: `aud` is this FHIR base. Errors go back to a verified redirect URI, else
   they are shown on a page: never a redirect to an unverified URI.
2. The sign-in form posts the user's name and password (accounts, lockout).
3. The approval page lists the scopes in plain words; its form carries a *ticket*:
   a short-lived JWT, signed by the server's key, naming the user and binding the
   exact request, so the decision cannot be replayed for another request or user.
4. Allow: a code is issued and the browser is sent to the redirect URI with
   `code` and `state`; Deny: `error=access_denied`.

Every form carries a CSRF token equal to a SameSite=Strict cookie set by the first
page. The pages need no JavaScript.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from pathlib import Path
from typing import Any

import orjson
from authlib.oauth2.rfc6749 import OAuth2Error
from jinja2 import Environment, FileSystemLoader, select_autoescape
from joserfc import jwt
from joserfc.errors import JoseError
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response

from smart.accounts import Account, AccountLocked
from smart.authority import Authority
from smart.keys import ALGORITHMS
from smart.requests import FormRequest, form_request
from smart.scope_words import describe
from smart.server import OAuthServer, RegisteredClient
from smart.tokens import Grant

CSRF_COOKIE = "medbridge_csrf"
TICKET_TYPE = "approval+jwt"
TICKET_SECONDS = 300
REQUEST_FIELDS = (  # the authorization request, carried through the two pages
    "response_type", "client_id", "redirect_uri", "scope", "state", "aud",
    "code_challenge", "code_challenge_method", "nonce", "launch",
)  # fmt: skip
PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Pragma": "no-cache",
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "frame-ancestors 'none'",
    "Referrer-Policy": "no-referrer",
}
PATIENT_CONTEXT_PREFIXES = ("patient/", "launch/patient")
PATIENT_ID = re.compile(r"^[A-Za-z0-9\-.]{1,64}$")  # FHIR id

TEMPLATES = Environment(
    loader=FileSystemLoader(Path(__file__).parent / "templates"),
    autoescape=select_autoescape(["html"]),
)


class AuthorizePages:
    def __init__(self, authority: Authority, oauth: OAuthServer) -> None:
        self.authority = authority
        self.oauth = oauth

    async def handle(self, request: Request) -> Response:
        try:
            parsed = await form_request(request, self.authority.issuer() + "/authorize")
        except (ValueError, UnicodeDecodeError) as error:
            return self._page("error.html", "Request refused", 400, problem=str(error))
        fields = parsed.payload.data
        step = fields.get("step") if request.method == "POST" else None
        if step is not None and not self._csrf_ok(request, fields.get("csrf", "")):
            return self._page("error.html", "Request refused", 403,
                              problem="the form expired or came from another site")  # fmt: skip
        checked = await self._check(parsed)
        if isinstance(checked, Response):
            return checked
        grant, client = checked
        if step == "signin":
            return await self._sign_in(request, parsed, client)
        if step == "decide":
            return await self._decide(request, parsed, grant, client)
        return self._sign_in_page(request, parsed, client)

    async def _check(self, parsed: FormRequest) -> tuple[Any, RegisteredClient] | Response:
        """authlib's checks of the request, and `aud`; an error answer if it fails."""

        def consent_grant() -> Any:
            try:
                return self.oauth.get_consent_grant(parsed)
            except OAuth2Error as error:
                return error

        grant = await self.oauth.run(consent_grant)
        if isinstance(grant, OAuth2Error):
            return self._refuse(grant)
        if parsed.payload.data.get("aud") != self.authority.audience():
            return self._redirect_error(grant, "invalid_request", "'aud' must be this FHIR base")
        client: RegisteredClient = grant.request.client
        if not client.get_allowed_scope(parsed.payload.data.get("scope")):
            return self._redirect_error(grant, "invalid_scope", "no requested scope is allowed")
        return grant, client

    def _refuse(self, error: OAuth2Error) -> Response:
        if error.redirect_uri:  # authlib verified it against the client
            status, _, headers = error()
            return Response(b"", status, {**dict(headers), **PAGE_HEADERS})
        return self._page("error.html", "Request refused", 400,
                          problem=error.description or error.error)  # fmt: skip

    def _redirect_error(self, grant: Any, error: str, description: str) -> Response:
        failure = OAuth2Error(description, state=grant.request.payload.state,
                              redirect_uri=grant.redirect_uri, error=error)  # fmt: skip
        return self._refuse(failure)

    def _sign_in_page(
        self, request: Request, parsed: FormRequest, client: RegisteredClient, problem: str = ""
    ) -> Response:
        csrf = request.cookies.get(CSRF_COOKIE) or secrets.token_urlsafe(24)
        response = self._page("signin.html", "Sign in", 401 if problem else 200,
                              client_id=client.client_id, problem=problem, csrf=csrf,
                              request_fields=_request_fields(parsed))  # fmt: skip
        response.set_cookie(CSRF_COOKIE, csrf, path="/auth", httponly=True, samesite="strict",
                            secure=self.authority.issuer().startswith("https:"))  # fmt: skip
        return response

    async def _sign_in(
        self, request: Request, parsed: FormRequest, client: RegisteredClient
    ) -> Response:
        form = parsed.form
        try:
            account = await self.authority.accounts.authenticate(
                form.get("username", ""), form.get("password", "")
            )
        except AccountLocked:
            return self._sign_in_page(request, parsed, client,
                                      "This account is locked for a while after repeated "
                                      "failed sign-ins.")  # fmt: skip
        if account is None:
            return self._sign_in_page(request, parsed, client, "Wrong user name or password.")
        scope = client.get_allowed_scope(form.get("scope"))
        patient = _patient_context(account, scope)
        ticket = self._ticket(account.name, parsed)
        return self._page("approve.html", "Allow access?", 200, client_id=client.client_id,
                          user=account.name, patient=patient, ticket=ticket,
                          pick_patient=_picks_patient(account, scope),
                          scope_lines=[describe(name) for name in scope.split()],
                          csrf=form.get("csrf", ""),
                          request_fields=_request_fields(parsed))  # fmt: skip

    async def _decide(
        self, request: Request, parsed: FormRequest, grant: Any, client: RegisteredClient
    ) -> Response:
        name = self._ticket_user(parsed.form.get("ticket", ""), parsed)
        account = None if name is None else await self.authority.accounts.get(name)
        if account is None:
            return self._page("error.html", "Request refused", 403,
                              problem="the approval expired; start again from the app")  # fmt: skip
        grant_user = None
        if parsed.form.get("decision") == "approve":
            scope = client.get_allowed_scope(parsed.form.get("scope"))
            patient = _patient_context(account, scope)
            if _picks_patient(account, scope):
                patient = await self._picked_patient(parsed.form.get("patient", ""))
                if patient is None:
                    problem = "no such patient; start again from the app"
                    return self._page("error.html", "Request refused", 400, problem=problem)
            grant_user = Grant(client.client_id, account.name, scope, patient=patient,
                               fhir_user=account.fhir_user)  # fmt: skip
        answer = await self.oauth.run(
            self.oauth.create_authorization_response, parsed, grant_user, grant
        )
        status, _, headers = answer
        location = dict(headers).get("Location", "")
        return RedirectResponse(location, 302 if status == 302 else status, PAGE_HEADERS)

    async def _picked_patient(self, patient: str) -> str | None:
        """The Patient id a practitioner chose, if such a Patient exists."""
        if not PATIENT_ID.match(patient):
            return None
        stored = await self.authority.tokens.repository.read("Patient", patient)
        return None if stored is None or stored.deleted else patient

    def _ticket(self, user: str, parsed: FormRequest) -> str:
        key = self.authority.keys.signing
        now = self.authority.tokens.now()
        claims = {"iss": self.authority.issuer(), "aud": self.authority.issuer(), "sub": user,
                  "iat": now, "exp": now + TICKET_SECONDS,
                  "req": _request_digest(parsed)}  # fmt: skip
        header = {"alg": key.alg, "kid": key.kid, "typ": TICKET_TYPE}
        return jwt.encode(header, claims, key, algorithms=list(ALGORITHMS))

    def _ticket_user(self, ticket: str, parsed: FormRequest) -> str | None:
        """The user an approval ticket names, if it is ours, fresh, and for this request."""
        try:
            decoded = jwt.decode(ticket, self.authority.keys.verifying, algorithms=ALGORITHMS)
            registry = jwt.JWTClaimsRegistry(
                now=self.authority.tokens.now,
                iss={"essential": True, "value": self.authority.issuer()},
                aud={"essential": True, "value": self.authority.issuer()},
                exp={"essential": True},
                req={"essential": True, "value": _request_digest(parsed)},
            )
            registry.validate(decoded.claims)
        except (JoseError, ValueError, TypeError):
            return None
        if decoded.header.get("typ") != TICKET_TYPE:
            return None
        subject = decoded.claims.get("sub")
        return subject if isinstance(subject, str) else None

    def _csrf_ok(self, request: Request, offered: str) -> bool:
        cookie = request.cookies.get(CSRF_COOKIE, "")
        return bool(cookie) and hmac.compare_digest(cookie, offered)

    def _page(self, template: str, title: str, status: int, **values: Any) -> HTMLResponse:
        html = TEMPLATES.get_template(template).render(title=title, **values)
        return HTMLResponse(html, status, PAGE_HEADERS)


def _request_fields(parsed: FormRequest) -> list[tuple[str, str]]:
    data = parsed.payload.data
    return [(name, data[name]) for name in REQUEST_FIELDS if data.get(name)]


def _request_digest(parsed: FormRequest) -> str:
    return hashlib.sha256(orjson.dumps(_request_fields(parsed))).hexdigest()


def _picks_patient(account: Account, scope: str) -> bool:
    """A practitioner asked for a patient context in a standalone launch chooses one."""
    return account.fhir_user.startswith("Practitioner/") and "launch/patient" in scope.split()


def _patient_context(account: Account, scope: str) -> str | None:
    """A patient user's own id, when the scopes ask for a patient context."""
    wants = any(name.startswith(PATIENT_CONTEXT_PREFIXES) for name in scope.split())
    return account.patient if wants else None
