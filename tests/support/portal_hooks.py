"""A notification hook for a `medbridge serve` child process that writes down the bearer
tokens the patient portal's own client presents (`MEDBRIDGE_EXTRA_HOOKS=
tests.support.portal_hooks:hooks`, file `MEDBRIDGE_TEST_PORTAL_TOKENS`), so a test can
try the portal's old token itself after the person signs out. The portal never shows
its tokens: only this test hook, reading the request as the server receives it, sees
them."""

from __future__ import annotations

import base64
import os
from typing import Any

import orjson

from access.pipeline import Exchange, Stage
from medbridge.compose import HookSpec

FILE = "MEDBRIDGE_TEST_PORTAL_TOKENS"
PORTAL_CLIENT = "medbridge-portal"


def _client_of(token: str) -> str | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = orjson.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except ValueError:
        return None
    return claims.get("client_id") if isinstance(claims, dict) else None


async def record(exchange: Exchange[Any, Any]) -> None:
    path = os.environ.get(FILE)
    credentials = exchange.context.credentials
    if not path or not credentials or not credentials.startswith("Bearer "):
        return
    token = credentials.removeprefix("Bearer ").strip()
    if _client_of(token) == PORTAL_CLIENT:
        # a line or two per request of one test module: not worth a thread
        with open(path, "a", encoding="ascii") as tokens:  # noqa: ASYNC230
            tokens.write(token + "\n")


def hooks() -> list[HookSpec]:
    return [HookSpec(Stage.AUTHENTICATE, record, "test.portal-tokens", 1, intervene=False)]
