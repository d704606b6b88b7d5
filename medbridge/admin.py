"""`/admin/{name}`: operations the admin commands run inside the running server.

Packages offer plain async handlers (JSON object in, JSON object out); the composition
root registers them here, so `hl7_bridge` and `imaging` never import this package. Every
call must carry the admin token of `server.json` (medbridge/running.py).
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

log = logging.getLogger(__name__)

AdminHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]


class AdminApi:
    def __init__(self) -> None:
        self.token = ""  # set once server.json is written; empty refuses every call
        self.handlers: dict[str, AdminHandler] = {}

    def add(self, name: str, handler: AdminHandler) -> None:
        self.handlers[name] = handler

    async def handle(self, request: Request) -> Response:
        offered = request.headers.get("authorization", "")
        if not self.token or not hmac.compare_digest(offered, f"Bearer {self.token}"):
            return _answer({"error": "admin token missing or wrong"}, 401)
        handler = self.handlers.get(request.path_params["name"])
        if handler is None:
            return _answer({"error": "no such admin operation"}, 404)
        try:
            payload = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            return _answer({"error": "the body is not JSON"}, 400)
        if not isinstance(payload, dict):
            return _answer({"error": "the body is not a JSON object"}, 400)
        try:
            return _answer(await handler(payload), 200)
        except (KeyError, ValueError) as error:
            return _answer({"error": str(error)}, 400)
        except Exception as error:
            log.error("admin operation failed: %s", type(error).__name__)
            return _answer({"error": "the operation failed; see the server log"}, 500)


def _answer(body: dict[str, Any], status: int) -> Response:
    return Response(orjson.dumps(body), status, media_type="application/json")
