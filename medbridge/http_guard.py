"""The ASGI layer in front of every HTTP route: Host, HEAD, CORS and the safety headers.

- Two Host headers are refused (a proxy and the app could read different ones); no URL
  is ever built from Host anyway (absolute URLs come from `public_base_url`).
- `HEAD` runs the `GET` route and answers its status and headers without the body, so
  every GET route has HEAD (RFC 9110 9.3.2).
- Every answer may carry patient data, so none is cached (`Cache-Control: no-store`)
  or content-sniffed (`X-Content-Type-Options: nosniff`).
- CORS only for the configured origins (`cors_origins`, none by default: the viewer and
  portal are same-origin); a preflight from another origin gets 403.
"""

from __future__ import annotations

from collections.abc import Iterable

from starlette.datastructures import Headers, MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from access.errors import AccessError
from fhir_server.http import error_response

CORS_METHODS = "GET, HEAD, POST, PUT, PATCH, DELETE"
# WWW-Authenticate: a browser app reads why its token was refused (RFC 6750)
CORS_EXPOSED = "Location, Content-Location, ETag, Last-Modified, Warning, WWW-Authenticate"
PREFLIGHT_MAX_AGE = "600"


class HttpGuard:
    def __init__(self, app: ASGIApp, cors_origins: Iterable[str] = ()) -> None:
        self.app = app
        self.cors_origins = frozenset(o.rstrip("/") for o in cors_origins)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = Headers(scope=scope)
        origin = headers.get("origin")
        allowed = origin if origin is not None and origin in self.cors_origins else None
        guarded = _guarded_send(send, allowed, head=scope["method"] == "HEAD")
        if len(headers.getlist("host")) > 1:
            error = AccessError("MB-1062", "more than one Host header", expression="Host")
            await error_response(error)(scope, receive, guarded)
            return
        preflight = origin is not None and "access-control-request-method" in headers
        if scope["method"] == "OPTIONS" and preflight:
            await self._preflight(headers, allowed, scope, receive, guarded)
            return
        if scope["method"] == "HEAD":
            scope = {**scope, "method": "GET"}
        await self.app(scope, receive, guarded)

    async def _preflight(
        self, headers: Headers, allowed: str | None, scope: Scope, receive: Receive, send: Send
    ) -> None:
        if allowed is None:
            error = AccessError("MB-1065", "origin not in cors_origins", expression="Origin")
            await error_response(error)(scope, receive, send)
            return
        answer: list[tuple[bytes, bytes]] = [
            (b"access-control-allow-methods", CORS_METHODS.encode()),
            (b"access-control-max-age", PREFLIGHT_MAX_AGE.encode()),
        ]
        requested = headers.get("access-control-request-headers")
        if requested:  # the origin is trusted: it may send the headers it asks for
            answer.append((b"access-control-allow-headers", requested.encode("latin-1")))
        await send({"type": "http.response.start", "status": 204, "headers": answer})
        await send({"type": "http.response.body", "body": b""})


def _guarded_send(send: Send, allowed_origin: str | None, head: bool) -> Send:
    async def guarded(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = MutableHeaders(scope=message)
            headers["cache-control"] = "no-store"
            headers["x-content-type-options"] = "nosniff"
            if allowed_origin is not None:
                headers["access-control-allow-origin"] = allowed_origin
                headers["access-control-expose-headers"] = CORS_EXPOSED
                headers.append("vary", "Origin")
        elif head and message["type"] == "http.response.body" and message.get("body"):
            message = {**message, "body": b""}
        await send(message)

    return guarded
