"""Process archived messages again: dead letters, or one named by its archive id.

One code path for both ways of running it: inside `medbridge serve` (the admin route
`hl7/replay`, so a replay passes the live processor and every hook on its pipeline),
and in `medbridge hl7 replay` when no server runs (a processor built the same way).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from hl7_bridge.processor import Processor

AdminHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
NOT_FOUND = "no such archived message"


async def replay(processor: Processor, ids: list[str] | None) -> list[dict[str, str]]:
    """Replay `ids`, or every dead letter when None; one `{id, code}` or `{id, error}` each."""
    if ids is None:
        ids = await processor.archive.failed_ids()
    results: list[dict[str, str]] = []
    for receipt_id in ids:
        try:
            result = await processor.replay(receipt_id)
        except KeyError:
            results.append({"id": receipt_id, "error": NOT_FOUND})
            continue
        results.append({"id": receipt_id, "code": result.code})
    return results


def admin_replay(processor: Processor) -> AdminHandler:
    """The `hl7/replay` admin operation: `{"ids": [...]}` or `{"failed": true}`, and the
    `database` the command meant (refused when the server serves another)."""

    async def handle(payload: dict[str, Any]) -> dict[str, Any]:
        serving = processor.archive.collection.database.name
        database = payload.get("database", serving)
        if database != serving:  # the command named another database than this server's
            raise ValueError(f"this server serves database {serving!r}, not {database!r}")
        ids = payload.get("ids")
        if payload.get("failed") is True:
            ids = None
        elif not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise ValueError('give "ids" (a list of archive ids) or "failed": true')
        return {"results": await replay(processor, ids)}

    return handle
