"""An audit-stage hook for a `medbridge serve` child process that writes what the consent
engine noted for the audit stage (`context.notes["consent.overrides"]`) as one JSON line
per access to the file `MEDBRIDGE_TEST_CONSENT_NOTES` names. Loaded through
`MEDBRIDGE_EXTRA_HOOKS=tests.support.consent_notes:hooks`."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson

from access.pipeline import Exchange, Stage
from consent.hooks import OVERRIDES_NOTE
from medbridge.compose import HookSpec

FILE = "MEDBRIDGE_TEST_CONSENT_NOTES"


async def record(exchange: Exchange[Any, Any]) -> None:
    path = os.environ.get(FILE)
    overrides = exchange.context.notes.get(OVERRIDES_NOTE)
    if path and overrides:
        line = {"request_id": exchange.context.request_id, "overrides": overrides}
        await asyncio.to_thread(_append, Path(path), orjson.dumps(line) + b"\n")


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as notes:
        notes.write(data)


def hooks() -> list[HookSpec]:
    return [HookSpec(Stage.AUDIT, record, "test.consent-notes", intervene=False)]
