"""The viewer's HTTP routes: OHIF's static build at /viewer/, the generated
`app-config.js`, deep links answered with index.html, and a page saying how to install
the viewer where it is not installed. medbridge/app.py mounts `routes()`.

These routes serve public static files only: they read no record and take no token.
The viewer reads studies through /dicomweb with the signed-in user's token, so what it
shows is what the access pipeline lets that token see (docs/viewer.md).
"""

from __future__ import annotations

import asyncio
import logging
import mimetypes
from collections.abc import Awaitable, Callable
from importlib import resources
from pathlib import PurePosixPath

from starlette.requests import Request
from starlette.responses import FileResponse, RedirectResponse, Response

from viewer.build import INDEX, Build, BuildChanged
from viewer.config import ViewerConfig
from viewer.headers import content_security_policy, inline_hashes, security_headers

log = logging.getLogger(__name__)
Endpoint = Callable[[Request], Awaitable[Response]]
APP_CONFIG = "app-config.js"
# types the platform's table may lack or get wrong; wasm must be application/wasm for
# the browser's streaming compile
TYPES = {
    ".wasm": "application/wasm",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".html": "text/html; charset=utf-8",
    ".json": "application/json",
    ".jsonc": "application/json",
    ".svg": "image/svg+xml",
    ".woff2": "font/woff2",
}


def media_type(name: str) -> str:
    suffix = PurePosixPath(name).suffix.lower()
    return TYPES.get(suffix) or mimetypes.guess_type(name)[0] or "application/octet-stream"


class ViewerSite:
    def __init__(self, build: Build, config: Callable[[], ViewerConfig]) -> None:
        self.build = build
        self.config = config
        self.base = build.base
        self._csp: str | None = None
        # why sign-in cannot work here (no client registered), or None
        self.unavailable: str | None = None

    def routes(self) -> list[tuple[str, Endpoint, list[str]]]:
        return [
            (self.base, self.root, ["GET"]),
            (self.base + "/{path:path}", self.handle, ["GET"]),
        ]

    async def root(self, request: Request) -> Response:
        return RedirectResponse(self.base + "/", 308)

    async def handle(self, request: Request) -> Response:
        if not self.build.installed():
            return self._missing()
        if self.unavailable is not None:
            reason = f"the image viewer is off: {self.unavailable}"
            return Response(reason.encode(), 503, media_type="text/plain; charset=utf-8")
        relative: str = request.path_params.get("path", "")
        try:
            if relative == APP_CONFIG:
                return self._answer(self.config().script(), APP_CONFIG)
            if relative in ("", INDEX):
                return await self._index()
            path = self.build.locate(relative)
            if path is None:
                # a route of the single-page app (/viewer/viewer?StudyInstanceUIDs=...,
                # /viewer/callback): index.html; a missing file (it has a suffix): 404
                if PurePosixPath(relative).suffix:
                    return Response(b"not found", 404, media_type="text/plain")
                return await self._index()
            content = await asyncio.to_thread(self.build.content, relative)
        except BuildChanged as changed:
            log.error("the installed viewer build is not the one MedBridge knows: %s", changed)
            return Response(b"viewer build not usable", 500, media_type="text/plain")
        if content is not None:
            return self._answer(content, relative)
        return FileResponse(path, media_type=media_type(relative), headers=self._headers())

    async def _index(self) -> Response:
        content = await asyncio.to_thread(self.build.content, INDEX)
        assert content is not None  # index.html is always rewritten (rewrites.json)
        return self._answer(content, INDEX)

    def _answer(self, content: bytes, name: str) -> Response:
        return Response(content, 200, self._headers(), media_type=media_type(name))

    def _headers(self) -> dict[str, str]:
        if self._csp is None:
            index = self.build.content(INDEX) or b""
            self._csp = content_security_policy(inline_hashes(index))
        return security_headers(self._csp)

    def _missing(self) -> Response:
        page = resources.files("viewer").joinpath("templates/missing.html").read_bytes()
        csp = content_security_policy([])
        return Response(page, 503, security_headers(csp), media_type="text/html; charset=utf-8")
