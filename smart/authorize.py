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

The patient context: an EHR launch's (`launch`, smart/launches.py, checked on every
page and spent on Allow), else the user's own or their RelatedPerson's patient
(smart/patient_context.py), else the one a practitioner picks.

Every form carries a CSRF token equal to a SameSite=Strict cookie set by the first
page. The pages need no JavaScript.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
from dataclasses import dataclass
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
from smart.launches import LaunchContext, LaunchRefused
from smart.patient_context import NoPatientContext, own_patient, scope_for
from smart.requests import FormRequest, form_request
from smart.scope_words import describe
from smart.server import OAuthServer, RegisteredClient
from smart.tokens import Grant

log = logging.getLogger(__name__)
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
LAUNCH_SCOPE = "launch"  # SMART: the app asks for the EHR's launch context


@dataclass(frozen=True, slots=True)
class Context:
    """The launch context a signed-in user's grant will carry."""

    patient: str | None = None
    encounter: str | None = None
    pick_patient: bool = False  # a practitioner's standalone launch: chosen on the page


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
        grant, client, launch = checked
        if step == "signin":
            return await self._sign_in(request, parsed, client, launch)
        if step == "decide":
            return await self._decide(request, parsed, grant, client, launch)
        return self._sign_in_page(request, parsed, client)

    async def _check(
        self, parsed: FormRequest
    ) -> tuple[Any, RegisteredClient, LaunchContext | None] | Response:
        """authlib's checks of the request, `aud` and the EHR launch; an error answer
        if one fails."""

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
        scope = client.get_allowed_scope(parsed.payload.data.get("scope"))
        if not scope:
            return self._redirect_error(grant, "invalid_scope", "no requested scope is allowed")
        launch = await self._launch(parsed, client, scope)
        if isinstance(launch, str):
            return self._redirect_error(grant, "invalid_request", launch)
        return grant, client, launch

    async def _launch(
        self, parsed: FormRequest, client: RegisteredClient, scope: str
    ) -> LaunchContext | str | None:
        """The EHR launch the request names (None in a standalone launch), or why not."""
        value = parsed.payload.data.get("launch")
        asks = LAUNCH_SCOPE in scope.split()
        if not value:
            return "scope 'launch' needs the EHR's 'launch' parameter" if asks else None
        if not asks:
            return "the 'launch' parameter needs the scope 'launch' (allowed to the client)"
        try:
            return await self.authority.launches.find(value, client.client_id)
        except LaunchRefused as refused:
            return f"launch: {refused}"

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
        self,
        request: Request,
        parsed: FormRequest,
        client: RegisteredClient,
        launch: LaunchContext | None,
    ) -> Response:
        form = parsed.form
        typed = form.get("username", "")
        try:
            account = await self.authority.accounts.authenticate(typed, form.get("password", ""))
        except AccountLocked:
            if not await self._audited(request, client, typed, None, "account locked"):
                return self._unaudited()
            return self._sign_in_page(request, parsed, client,
                                      "This account is locked for a while after repeated "
                                      "failed sign-ins.")  # fmt: skip
        if account is None:
            if not await self._audited(request, client, typed, None, "wrong user name or password"):
                return self._unaudited()
            return self._sign_in_page(request, parsed, client, "Wrong user name or password.")
        if not await self._audited(request, client, typed, account, None):
            return self._unaudited()
        scope = client.get_allowed_scope(form.get("scope"))
        context = await self._context(account, scope, launch)
        if isinstance(context, Response):
            return context
        ticket = self._ticket(account.name, parsed)
        return self._page("approve.html", "Allow access?", 200, client_id=client.client_id,
                          user=account.name, patient=context.patient, ticket=ticket,
                          encounter=context.encounter,
                          pick_patient=context.pick_patient,
                          scope_lines=[describe(name) for name in scope.split()],
                          csrf=form.get("csrf", ""),
                          request_fields=_request_fields(parsed))  # fmt: skip

    async def _audited(
        self,
        request: Request,
        client: RegisteredClient,
        typed: str,
        account: Account | None,
        refused: str | None,
    ) -> bool:
        """Record the sign-in (docs/audit.md); False when it could not be recorded. The
        name as typed is recorded only when an account has it: a name that matches none
        may be a password typed in the wrong field. Never logged."""
        audit = self.authority.audit
        if audit is None:
            return True
        known = account or (await self.authority.accounts.get(typed) if typed else None)
        try:
            await audit.sign_in(
                user=known.name if known is not None else None,
                fhir_user=known.fhir_user if known is not None else None,
                client_id=client.client_id,
                address=request.client.host if request.client is not None else None,
                succeeded=refused is None,
                reason=refused,
            )
        except Exception as failure:  # the audit store: no sign-in goes unrecorded
            log.error("sign-in not recorded: %s", type(failure).__name__)
            return False
        return True

    def _unaudited(self) -> Response:
        problem = "signing in is not possible right now; try again later"
        return self._page("error.html", "Sign-in unavailable", 503, problem=problem)

    async def _decide(
        self,
        request: Request,
        parsed: FormRequest,
        grant: Any,
        client: RegisteredClient,
        launch: LaunchContext | None,
    ) -> Response:
        name = self._ticket_user(parsed.form.get("ticket", ""), parsed)
        account = None if name is None else await self.authority.accounts.get(name)
        if account is None:
            return self._page("error.html", "Request refused", 403,
                              problem="the approval expired; start again from the app")  # fmt: skip
        grant_user = None
        if parsed.form.get("decision") == "approve":
            scope = scope_for(account, client.get_allowed_scope(parsed.form.get("scope")))
            context = await self._context(account, scope, launch)
            if isinstance(context, Response):
                return context
            patient = context.patient
            if context.pick_patient:
                patient = await self._picked_patient(parsed.form.get("patient", ""))
                if patient is None:
                    problem = "no such patient; start again from the app"
                    return self._page("error.html", "Request refused", 400, problem=problem)
            if launch is not None:
                value = parsed.payload.data["launch"]
                try:  # spent now, atomically: one approval per launch
                    await self.authority.launches.redeem(value, client.client_id)
                except LaunchRefused as refused:
                    return self._redirect_error(grant, "invalid_request", f"launch: {refused}")
            grant_user = Grant(client.client_id, account.name, scope, patient=patient,
                               encounter=context.encounter,
                               fhir_user=account.fhir_user)  # fmt: skip
        answer = await self.oauth.run(
            self.oauth.create_authorization_response, parsed, grant_user, grant
        )
        status, _, headers = answer
        location = dict(headers).get("Location", "")
        return RedirectResponse(location, 302 if status == 302 else status, PAGE_HEADERS)

    async def _context(
        self, account: Account, scope: str, launch: LaunchContext | None
    ) -> Context | Response:
        """The launch context of `account`'s grant, or the page that says why none fits."""
        repository = self.authority.tokens.repository
        try:
            own = await own_patient(account, repository)
        except NoPatientContext as missing:
            if launch is not None or _wants_patient(scope):
                return self._page("error.html", "Request refused", 403, problem=str(missing))
            own = None
        if launch is not None:
            if launch.user is not None and launch.user != account.name:
                problem = "this launch was made for another user; sign in as that user"
                return self._page("error.html", "Request refused", 403, problem=problem)
            if own is not None and own != launch.patient:
                problem = "this launch is about a patient whose records you cannot open"
                return self._page("error.html", "Request refused", 403, problem=problem)
            return Context(launch.patient, launch.encounter)
        if own is not None:
            return Context(own if _wants_patient(scope) else None)
        return Context(pick_patient=_picks_patient(account, scope))

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


def _wants_patient(scope: str) -> bool:
    """The scopes ask for a patient context (`launch/patient` or `patient/...`)."""
    return any(name.startswith(PATIENT_CONTEXT_PREFIXES) for name in scope.split())
