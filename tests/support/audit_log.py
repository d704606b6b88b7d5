"""An audit hook for a `medbridge serve` child process, loaded through the composition by
`MEDBRIDGE_EXTRA_HOOKS=tests.support.audit_log:hooks`: each access the pipeline audits is
appended as one JSON line (door, action, actor, the refusal's catalog code) to the file
`MEDBRIDGE_TEST_AUDIT_FILE` names, so a test sees what passed the pipeline and how it
ended without reading the server's log."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import orjson

from access.pipeline import Exchange, Stage
from medbridge.compose import HookSpec

FILE = "MEDBRIDGE_TEST_AUDIT_FILE"


async def audit(exchange: Exchange[Any, Any]) -> None:
    access = exchange.access
    path = os.environ.get(FILE)
    if access is None or not path:
        return
    line = {
        "door": access.door.value,
        "action": access.action.value,
        "actor": access.actor.identifier,
        "actor_kind": access.actor.kind,
        "actor_display": access.actor.display,
        "error": exchange.error.code if exchange.error is not None else None,
        "parent": access.parent.action.value if access.parent is not None else None,
    }
    await asyncio.to_thread(_append, Path(path), orjson.dumps(line) + b"\n")


def _append(path: Path, data: bytes) -> None:
    with path.open("ab") as log:
        log.write(data)


def read(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines() if line]


def hooks() -> list[HookSpec]:
    return [HookSpec(Stage.AUDIT, audit, "test.audit-log", intervene=False)]
