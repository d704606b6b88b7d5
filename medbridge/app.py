"""Assemble the ASGI app: FHIR under /fhir, health, and OperationOutcome for every error."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from access.errors import AccessError
from fhir_server.http import FHIR_METHODS, FhirEndpoint, error_response
from fhir_server.router import FhirRouter
from medbridge import __version__
from medbridge.admin import AdminApi
from medbridge.health import Readiness
from portal.pages import Portal
from smart.authority import Authority
from smart.http import SmartEndpoints
from viewer.site import ViewerSite

log = logging.getLogger(__name__)

FHIR_BASE = "/fhir"
DICOMWEB_BASE = "/dicomweb"
AUTH_BASE = "/auth"
ADMIN_BASE = "/admin"
PORTAL_BASE = "/portal"
VIEWER_BASE = "/viewer"
SMART_CONFIGURATION = FHIR_BASE + "/.well-known/smart-configuration"  # served by smart/http.py


def build_app(
    router: FhirRouter,
    readiness: Readiness,
    max_body_bytes: int,
    public_base: Callable[[], str] | None = None,
) -> FastAPI:
    """`public_base()` is the configured `scheme://host:port` absolute URLs are built from."""
    app = FastAPI(
        title="MedBridge",
        version=__version__,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    endpoint = FhirEndpoint(router, FHIR_BASE, max_body_bytes, public_base).handle
    app.state.fhir_endpoint = endpoint
    app.router.add_route(FHIR_BASE, endpoint, methods=FHIR_METHODS, include_in_schema=False)
    app.router.add_route(
        FHIR_BASE + "/{path:path}", endpoint, methods=FHIR_METHODS, include_in_schema=False
    )

    async def health(request: Request) -> Response:
        status = 200 if readiness.all_up else 503
        return JSONResponse(
            {"status": "up" if status == 200 else "starting", "listeners": readiness.report()},
            status,
        )

    app.router.add_route("/health", health, methods=["GET"], include_in_schema=False)
    _install_error_handlers(app)
    return app


class FhirFirst:
    """ASGI entry: FHIR requests skip FastAPI's routing and middleware stack.

    The FHIR endpoint renders every error itself, so the layers it skips add nothing
    but time to the hot read path; everything else goes to the FastAPI app.
    """

    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.endpoint: Callable[[Request], Awaitable[Response]] = app.state.fhir_endpoint
        self.prefix = FHIR_BASE + "/"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        path: str = scope.get("path", "")
        if (
            scope["type"] != "http"
            or not (path == FHIR_BASE or path.startswith(self.prefix))
            or path == SMART_CONFIGURATION
        ):
            await self.app(scope, receive, send)
            return
        scope["path_params"] = {"path": path[len(self.prefix) :]}
        try:
            response = await self.endpoint(Request(scope, receive))
        except Exception as error:
            log.error("unhandled %s on a FHIR request", type(error).__name__)
            response = error_response(AccessError("MB-1000"))
        await response(scope, receive, send)


def assemble(
    router: FhirRouter,
    readiness: Readiness,
    max_body_bytes: int,
    public_base: Callable[[], str],
    dicomweb: Callable[[Request], Awaitable[Response]],
    admin: AdminApi,
    authority: Authority,
    portal: Portal | None = None,
    viewer: ViewerSite | None = None,
) -> FastAPI:
    """The app `serve` listens with: every HTTP route the server has is mounted here, so
    the test that refuses every route (tests/integration/test_every_route.py) walks it."""
    app = build_app(router, readiness, max_body_bytes, public_base)
    mount_dicomweb(app, dicomweb)
    mount_smart(app, authority)
    mount_admin(app, admin)
    if portal is not None:
        mount_portal(app, portal)
    if viewer is not None:
        mount_viewer(app, viewer)
    return app


def mount_portal(app: FastAPI, portal: Portal) -> None:
    """The patient portal's pages (portal/), and `/` leading to it. The portal calls the
    FHIR and DICOMweb doors of this same app with the signed-in person's token."""
    portal.attach(FhirFirst(app))
    for path, endpoint, methods in portal.routes():
        app.router.add_route(path, endpoint, methods=methods, include_in_schema=False)

    async def to_portal(request: Request) -> Response:
        return RedirectResponse(PORTAL_BASE + "/", 307)

    app.router.add_route("/", to_portal, methods=["GET"], include_in_schema=False)
    app.router.add_route(PORTAL_BASE, to_portal, methods=["GET"], include_in_schema=False)


def mount_viewer(app: FastAPI, viewer: ViewerSite) -> None:
    """The image viewer's static files (viewer/site.py): public, read no record."""
    for path, endpoint, methods in viewer.routes():
        app.router.add_route(path, endpoint, methods=methods, include_in_schema=False)


def mount_admin(app: FastAPI, admin: AdminApi) -> None:
    """The admin commands' routes (medbridge/admin.py), token-guarded."""
    app.router.add_route(
        ADMIN_BASE + "/{name:path}", admin.handle, methods=["POST"], include_in_schema=False
    )


def mount_smart(app: FastAPI, authority: Authority) -> None:
    """The authorization server's routes (smart/http.py). They go before the FHIR
    catch-all, since the SMART discovery document lives under the FHIR base."""
    routes = [
        Route(path, endpoint, methods=methods, include_in_schema=False)
        for path, endpoint, methods in SmartEndpoints(authority).routes()
    ]
    app.router.routes[0:0] = routes


def mount_dicomweb(app: FastAPI, endpoint: Callable[[Request], Awaitable[Response]]) -> None:
    """DICOMweb under /dicomweb; the imaging package runs its own pipeline (Door.DICOMWEB)."""
    app.router.add_route(
        DICOMWEB_BASE + "/{path:path}", endpoint, methods=["GET", "POST"], include_in_schema=False
    )


def _install_error_handlers(app: FastAPI) -> None:
    """Replace Starlette's and FastAPI's default bodies with OperationOutcomes."""

    async def http_error(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        code = {404: "MB-1002", 405: "MB-1013", 413: "MB-1009"}.get(status, "MB-1004")
        error = AccessError(code, f"{request.method} {request.url.path}: {status}", status=status)
        return error_response(error)

    async def validation_error(request: Request, exc: Exception) -> Response:
        return error_response(AccessError("MB-1004", "malformed request"))

    async def unexpected(request: Request, exc: Exception) -> Response:
        log.error("unhandled %s on %s %s", type(exc).__name__, request.method, request.url.path)
        return error_response(AccessError("MB-1000"))

    app.add_exception_handler(HTTPException, http_error)
    app.add_exception_handler(RequestValidationError, validation_error)
    app.add_exception_handler(Exception, unexpected)
