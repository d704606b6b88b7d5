"""Rendering: the Jinja2 templates, the security headers every portal answer carries,
and the cookies."""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, select_autoescape
from starlette.responses import HTMLResponse, RedirectResponse, Response

from portal import i18n
from portal.sessions import COOKIE, Session

TEMPLATES = Environment(
    loader=PackageLoader("portal", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=False,
)
# self only, no inline script or style: the pages need no script at all
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",  # pages show records: no shared or back-button caches
}


def secured(response: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    return response


def page(template: str, status: int = 200, **values: Any) -> Response:
    html = TEMPLATES.get_template(template).render(**values)
    return secured(HTMLResponse(html, status))


def redirect(location: str) -> Response:
    return secured(RedirectResponse(location, 303))


def with_session(response: Response, session: Session, path: str, secure: bool) -> Response:
    response.set_cookie(COOKIE, session.id, path=path, httponly=True, secure=secure, samesite="lax")
    return response


def without_session(response: Response, path: str, secure: bool) -> Response:
    response.delete_cookie(COOKIE, path=path, httponly=True, secure=secure, samesite="lax")
    return response


def with_language(response: Response, language: str, path: str, secure: bool) -> Response:
    response.set_cookie(
        i18n.COOKIE, language, max_age=365 * 24 * 3600, path=path, httponly=True,
        secure=secure, samesite="lax",
    )  # fmt: skip
    return response


def svg_notice(text: str) -> Response:
    """What a thumbnail that cannot be drawn shows instead: the reason, as an image."""
    escaped = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    words = escaped.split()
    lines, line = [], ""
    for word in words:
        if len(line) + len(word) > 18 and line:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    lines.append(line)
    spans = "".join(f'<tspan x="64" dy="14">{part}</tspan>' for part in lines[:8])
    body = (
        '<svg xmlns="http://www.w3.org/2000/svg" width="128" height="128" viewBox="0 0 128 128">'
        '<rect width="128" height="128" fill="#eeeeee"/>'
        f'<text x="64" y="4" font-size="11" text-anchor="middle" fill="#1b1b1b">{spans}</text>'
        "</svg>"
    )
    return secured(Response(body, 200, media_type="image/svg+xml"))


def quoted(path: str) -> str:
    return quote(path, safe="/")
