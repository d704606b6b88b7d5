"""`medbridge audit verify`: through the running server of the data directory (its
`audit/verify` admin operation, one access of the operator), else on the store itself
(`--mongodb-uri`, or the embedded store of a data directory no server runs on)."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from fhir_server.repository import Repository

Document = dict[str, Any]


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    audit = commands.add_parser("audit", help="the audit trail")
    actions = audit.add_subparsers(dest="audit_command", required=True)
    verify = actions.add_parser(
        "verify", help="walk the AuditEvent hash chain; report altered, inserted, removed events"
    )
    verify.add_argument("--data-dir", type=Path, help="data directory (MEDBRIDGE_DATA_DIR)")
    verify.add_argument("--mongodb-uri", help="the audit store (MEDBRIDGE_AUDIT_MONGODB_URI)")
    verify.add_argument("--database", help="MongoDB database name (MEDBRIDGE_DATABASE)")


class Store(Protocol):
    def start(self) -> str: ...
    def stop(self) -> None: ...


@dataclass(frozen=True, slots=True)
class VerifyTarget:
    remote: Callable[[Document], Document] | None  # the running server's admin call
    uri: str | None
    database: str
    embedded: Callable[[], Store]


def admin_verify(repository: Repository) -> Callable[[Document], Awaitable[Document]]:
    """The `audit/verify` admin operation of a server whose audit store is `repository`."""
    from audit.verify import verify

    async def handler(payload: Document) -> Document:
        return (await verify(repository.db)).as_json()

    return handler


def run(args: argparse.Namespace, target: VerifyTarget) -> int:
    """Print the report; 0 when the chain is whole, 1 when not (or refused)."""
    if target.remote is not None:
        try:
            answer = target.remote({})
        except Exception as error:  # refused (RuntimeError) or unreachable (httpx)
            print(f"verify through the running server failed: {error}", file=sys.stderr)
            return 1
        return _report(answer)
    if target.uri is not None:
        return _report(asyncio.run(_on_store(target.uri, target.database)))
    store = target.embedded()  # no server runs: the embedded store is ours for a moment
    try:
        return _report(asyncio.run(_on_store(store.start(), target.database)))
    finally:
        store.stop()


async def _on_store(uri: str, database: str) -> Document:
    from pymongo import AsyncMongoClient

    from audit.verify import verify

    client: AsyncMongoClient[Document] = AsyncMongoClient(uri, tz_aware=True)
    try:
        return (await verify(client[database])).as_json()
    finally:
        await client.close()


def _report(answer: Document) -> int:
    for problem in answer.get("problems", []):
        print(problem, flush=True)
    verdict = "intact" if answer.get("ok") else "BROKEN"
    print(f"audit chain {verdict}: {answer.get('checked', 0)} events, head "
          f"{answer.get('head', 0)}", flush=True)  # fmt: skip
    return 0 if answer.get("ok") else 1
