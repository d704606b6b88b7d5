"""The portal's core: options, sessions, the visit of one request, signing in and out.

A SMART app of MedBridge's own authorization server: a public client (PKCE S256, no
secret) registered at start, doing the standalone patient launch. The tokens stay in
the server-side session; the browser holds only the session's random id.
"""

from __future__ import annotations

import base64
import hmac
import json
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp

from portal import i18n, responses
from portal.api import Api, new_verifier
from portal.sessions import COOKIE, PendingSignIn, Session, Sessions

log = logging.getLogger(__name__)
PATH = "/portal"
CLIENT_ID = "medbridge-portal"
SCOPE = "openid fhirUser launch/patient online_access patient/*.rs patient/Consent.cud"
SIGN_IN_LIFETIME = 600.0  # seconds a started sign-in may take
BACK = re.compile(r"^/portal(/[A-Za-z0-9_\-/]*)?(\?[A-Za-z0-9_=&%.\-]*)?$")
Endpoint = Callable[[Request], Awaitable[Response]]


@dataclass(frozen=True, slots=True)
class PortalOptions:
    """medbridge/settings.py `portal_*` and the consent engine's settings it explains."""

    session_lifetime: float = 1800.0
    page_size: int = 50
    adult_age: int = 16
    unhideable: tuple[str, ...] = ()


@dataclass(slots=True)
class Visit:
    """One request: its session (perhaps new), language and what the page shows."""

    request: Request
    session: Session | None
    t: i18n.Translator

    @property
    def token(self) -> str:
        assert self.session is not None
        assert self.session.access_token is not None
        return self.session.access_token

    @property
    def patient(self) -> str:
        assert self.session is not None
        assert self.session.patient is not None
        return self.session.patient


class PortalCore:
    def __init__(self, options: PortalOptions, public_base: Callable[[], str]) -> None:
        self.options = options
        self.public_base = public_base
        self.sessions = Sessions(options.session_lifetime)
        self.api: Api | None = None
        self.unavailable: str | None = None  # why signing in cannot work here

    # -- wiring ------------------------------------------------------------------------

    def attach(self, app: ASGIApp) -> None:
        """The server's ASGI app, which the portal calls with the person's token."""
        self.api = Api(app, self.public_base)

    @property
    def redirect_uri(self) -> str:
        return f"{self.public_base()}{PATH}/callback"

    @property
    def secure(self) -> bool:
        return self.public_base().startswith("https://")

    async def close(self) -> None:
        if self.api is not None:
            await self.api.close()

    def _api(self) -> Api:
        assert self.api is not None, "Portal.attach() is called when the app is assembled"
        return self.api

    # -- a visit -----------------------------------------------------------------------

    def visit(self, request: Request) -> Visit:
        session = self.sessions.get(request.cookies.get(COOKIE))
        language = i18n.choose(
            request.cookies.get(i18n.COOKIE), request.headers.get("accept-language")
        )
        return Visit(request, session, i18n.Translator(language))

    def render(self, visit: Visit, template: str, title_key: str, status: int = 200,
               **values: Any) -> Response:  # fmt: skip
        session = visit.session
        back = visit.request.url.path + (
            "?" + visit.request.url.query if visit.request.url.query else ""
        )
        common = {
            "t": visit.t, "language": visit.t.language, "base": PATH,
            "other_language": "en" if visit.t.language == "lt" else "lt",
            "back": back if BACK.match(back) else f"{PATH}/",
            "title": visit.t(title_key), "signed_in": session is not None and session.signed_in,
            "csrf": session.csrf if session else "", "notices": [], "problems": [],
            "banner": "",
        }  # fmt: skip
        return responses.page(template, status, **{**common, **values})

    def error(self, visit: Visit, status: int, message: str) -> Response:
        return self.render(visit, "error.html", "error.title", status, message=message)

    async def checked_form(self, visit: Visit) -> dict[str, str] | Response:
        """The posted form, or the 403 page when its CSRF token is not this session's."""
        form = await visit.request.form(max_files=0, max_fields=20)
        values = {k: v for k, v in form.items() if isinstance(v, str)}
        if visit.session is None or not visit.session.csrf_matches(values.get("csrf")):
            return self.error(visit, 403, visit.t("error.csrf"))
        return values

    # -- signing in and out -----------------------------------------------------------

    async def login(self, request: Request) -> Response:
        visit = self.visit(request)
        if self.unavailable is not None:
            return self.error(visit, 503, visit.t("error.signin", reason=self.unavailable))
        session = visit.session or self.sessions.new()
        pending = PendingSignIn(secrets.token_urlsafe(24), new_verifier(), time.time())
        session.pending = pending
        url = self._api().authorize_url(
            CLIENT_ID, self.redirect_uri, SCOPE, pending.state, pending.verifier
        )
        return responses.with_session(responses.redirect(url), session, PATH, self.secure)

    async def callback(self, request: Request) -> Response:
        visit = self.visit(request)
        session, query = visit.session, request.query_params
        pending = session.pending if session else None
        if session is None or pending is None or time.time() - pending.started > SIGN_IN_LIFETIME:
            return self.error(visit, 400, visit.t("error.signin", reason="no sign-in was started"))
        session.pending = None  # one answer per sign-in
        if not hmac.compare_digest(query.get("state", "").encode(), pending.state.encode()):
            return self.error(visit, 400, visit.t("error.signin", reason="state mismatch"))
        if "error" in query or not query.get("code"):
            reason = query.get("error_description") or query.get("error") or "no code"
            return self.error(visit, 400, visit.t("error.signin", reason=reason[:200]))
        answer = await self._api().token({
            "grant_type": "authorization_code", "code": query["code"],
            "redirect_uri": self.redirect_uri, "client_id": CLIENT_ID,
            "code_verifier": pending.verifier,
        })  # fmt: skip
        body = answer.body
        if answer.status != 200 or not isinstance(body.get("patient"), str):
            reason = str(body.get("error_description") or body.get("error") or answer.status)
            return self.error(visit, 400, visit.t("error.signin", reason=reason[:200]))
        session = self.sessions.renew(session)
        self._keep_tokens(session, body)
        session.patient = str(body["patient"])
        session.fhir_user = _id_token_claim(body.get("id_token"), "fhirUser")
        response = responses.redirect(f"{PATH}/")
        return responses.with_session(response, session, PATH, self.secure)

    def _keep_tokens(self, session: Session, body: dict[str, Any]) -> None:
        session.access_token = str(body["access_token"])
        session.refresh_token = body.get("refresh_token") or session.refresh_token
        session.token_expires_at = time.time() + float(body.get("expires_in", 0))

    async def refresh(self, session: Session) -> bool:
        """A new access token from the refresh token (rotated); False when refused."""
        if session.refresh_token is None:
            return False
        answer = await self._api().token({
            "grant_type": "refresh_token", "refresh_token": session.refresh_token,
            "client_id": CLIENT_ID,
        })  # fmt: skip
        if answer.status != 200:
            return False
        self._keep_tokens(session, answer.body)
        return True

    async def logout(self, request: Request) -> Response:
        visit = self.visit(request)
        form = await self.checked_form(visit)
        if isinstance(form, Response):
            return form
        assert visit.session is not None
        await self.revoke(visit.session)
        response = responses.redirect(f"{PATH}/?signed_out=1")
        return responses.without_session(response, PATH, self.secure)

    async def revoke(self, session: Session) -> None:
        """Revoke the refresh token (its whole authorization) and the access token, then
        forget the session: the old token no longer opens the API."""
        api = self._api()
        if session.refresh_token:
            await api.revoke(CLIENT_ID, session.refresh_token, "refresh_token")
        if session.access_token:
            await api.revoke(CLIENT_ID, session.access_token, "access_token")
        self.sessions.end(session)

    async def language(self, request: Request) -> Response:
        chosen = request.query_params.get("to", "")
        back = request.query_params.get("back", f"{PATH}/")
        target = back if BACK.match(back) else f"{PATH}/"
        response = responses.redirect(target)
        if chosen in i18n.LANGUAGES:
            responses.with_language(response, chosen, PATH, self.secure)
        return response

    async def static(self, request: Request) -> Response:
        css = resources.files("portal").joinpath("static/portal.css").read_bytes()
        response = Response(css, 200, media_type="text/css")
        responses.secured(response)
        response.headers["Cache-Control"] = "max-age=3600"
        return response


def _id_token_claim(id_token: object, claim: str) -> str | None:
    """A claim of the id_token the token endpoint just answered. It came straight from
    the authorization server in-process, never through the browser, so its origin is
    the channel's (OpenID Connect Core 3.1.3.7: TLS server validation may replace the
    signature check); nothing here trusts a token a browser handed in."""
    if not isinstance(id_token, str) or id_token.count(".") != 2:
        return None
    payload = id_token.split(".")[1]
    try:
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except ValueError:
        return None
    value = claims.get(claim) if isinstance(claims, dict) else None
    if isinstance(value, str) and "/" in value:
        return value.rsplit("/", 2)[-2] + "/" + value.rsplit("/", 1)[-1]
    return None
