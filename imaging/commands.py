"""`medbridge dicom import PATH...`: files, folders, DICOMDIR and zip into the archive;
`medbridge dicom pending [--retry]`: the ImagingStudy upkeep's waiting and parked studies.

In-process by default (the one ingest path, on the configured store; the server must be
stopped when the store is the embedded one), or `--url` to STOW-RS into a running server.
Progress on stderr; a summary of stored / duplicate / failed with reasons at the end.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from imaging.index import Added
from imaging.ingest import IngestOutcome
from imaging.sources import Source, sources

if TYPE_CHECKING:  # the CLI imports this module for every command: the store stays lazy
    from fhir_server.repository import Repository
    from imaging.services import Imaging


class Store(Protocol):
    def start(self) -> str: ...

    def stop(self) -> None: ...


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    dicom = commands.add_parser("dicom", help="DICOM archive tools")
    actions = dicom.add_subparsers(dest="dicom_command", required=True)
    load = actions.add_parser("import", help="import files, folders, DICOMDIR, zip archives")
    load.add_argument("paths", nargs="+", type=Path)
    load.add_argument("--url", help="STOW-RS into a running server (its /dicomweb base)")
    load.add_argument("--data-dir", type=Path, help="data directory (MEDBRIDGE_DATA_DIR)")
    load.add_argument("--mongodb-uri", help="MongoDB (MEDBRIDGE_MONGODB_URI)")
    load.add_argument("--database", help="MongoDB database name (MEDBRIDGE_DATABASE)")
    load.add_argument("--quiet", action="store_true", help="no progress line")
    waiting = actions.add_parser(
        "pending", help="studies whose ImagingStudy upkeep waits or is parked"
    )
    waiting.add_argument("--retry", action="store_true", help="run parked (or named) again")
    waiting.add_argument("--study", action="append", help="only this Study Instance UID")
    waiting.add_argument("--json", action="store_true", help="the answer as JSON")
    waiting.add_argument("--data-dir", type=Path, help="data directory (MEDBRIDGE_DATA_DIR)")
    waiting.add_argument("--mongodb-uri", help="MongoDB (MEDBRIDGE_MONGODB_URI)")
    waiting.add_argument("--database", help="MongoDB database name (MEDBRIDGE_DATABASE)")


@dataclass
class Tally:
    started: float = field(default_factory=time.monotonic)
    bytes: int = 0
    counts: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)

    def add(self, size: int, outcome: str, reason: str | None = None) -> None:
        self.bytes += size
        self.counts[outcome] += 1
        if reason:
            self.reasons[reason] += 1

    def line(self) -> str:
        elapsed = max(time.monotonic() - self.started, 1e-6)
        return (
            f"stored {self.counts['stored']}  duplicate {self.counts['duplicate']}  "
            f"failed {self.counts['failed']}  {self.bytes / elapsed / 1e6:.1f} MB/s"
        )


Ingest = Callable[[list[Source]], Awaitable[list[IngestOutcome]]]
Payload = dict[str, Any]
Admin = Callable[[str, Payload], Payload]
BATCH = 32


async def _import(items: list[Path], max_bytes: int, ingest: Ingest, quiet: bool) -> Tally:
    tally = Tally()
    last = 0.0
    batch: list[Source] = []

    async def flush() -> None:
        outcomes = await ingest(batch)
        for source, outcome in zip(batch, outcomes, strict=True):
            size = len(source.data or b"")
            if outcome.ok:
                kind = "duplicate" if outcome.added is Added.DUPLICATE else "stored"
                tally.add(size, kind)
            else:
                tally.add(size, "failed", f"{outcome.code} {outcome.reason}")
        batch.clear()

    for source in sources(items, max_bytes):
        if source.data is None:
            tally.add(0, "failed", source.problem)
        else:
            batch.append(source)
            if len(batch) >= BATCH:
                await flush()
        now = time.monotonic()
        if not quiet and now - last > 0.2:
            print(f"\r{tally.line()}", end="", file=sys.stderr, flush=True)
            last = now
    if batch:
        await flush()
    return tally


def _summary(tally: Tally) -> int:
    print(f"\r{tally.line()}", file=sys.stderr)
    print(
        f"imported: {tally.counts['stored']} stored, {tally.counts['duplicate']} duplicate, "
        f"{tally.counts['failed']} failed"
    )
    for reason, count in tally.reasons.most_common():
        print(f"  {count} x {reason}")
    return 0 if tally.counts["failed"] == 0 else 1


async def _over_http(args: argparse.Namespace, max_bytes: int) -> Tally:
    from imaging.dicomweb.stow import stow_one_over_http

    async with httpx.AsyncClient(timeout=120.0) as client:

        async def ingest(batch: list[Source]) -> list[IngestOutcome]:
            # one request per instance: each answer maps back to its file
            return [await stow_one_over_http(client, args.url, s.data or b"") for s in batch]

        return await _import(args.paths, max_bytes, ingest, args.quiet)


@dataclass(frozen=True, slots=True)
class Target:
    """Where an in-process import writes (from the server's settings)."""

    objects_dir: Path
    max_bytes: int
    database: str
    mongodb_uri: str | None = None
    public_base_url: str = "http://127.0.0.1:8080"
    # imaging on the store with the router and hooks the server has (medbridge's
    # composition): (repository, parse workers or None for the default) -> Imaging
    compose: Callable[[Repository, int | None], Awaitable[Imaging]] | None = None


async def _in_process(args: argparse.Namespace, uri: str, target: Target) -> Tally:
    from pymongo import AsyncMongoClient

    from fhir_server.repository import Repository
    from imaging.import_door import ImportDoor

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        repository = Repository(client, target.database)
        await repository.ensure_indexes()
        assert target.compose is not None, "the command line gives the composition"
        imaging = await target.compose(repository, None)
        await imaging.index.ensure_indexes()
        studies: set[str] = set()
        # each batch an access of the local operator, through the hooks the server has
        door = ImportDoor(imaging)

        async def ingest(batch: list[Source]) -> list[IngestOutcome]:
            outcomes = await door.ingest(batch)
            studies.update(o.study for o in outcomes if o.ok and o.study)
            return outcomes

        try:
            tally = await _import(args.paths, target.max_bytes, ingest, args.quiet)
        finally:
            imaging.ingestor.parser.stop()
        for study in sorted(studies):
            await imaging.linker.sync(study)
        return tally
    finally:
        await client.close()


async def _upkeep_in_process(uri: str, target: Target, name: str, payload: Payload) -> Payload:
    """`dicom pending` with no server running: the same operations on the store."""
    from pymongo import AsyncMongoClient

    from fhir_server.repository import Repository
    from imaging.upkeep_door import UpkeepDoor

    client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri, tz_aware=True)
    try:
        repository = Repository(client, target.database)
        await repository.ensure_indexes()
        assert target.compose is not None, "the command line gives the composition"
        imaging = await target.compose(repository, 0)
        # one access of the operator, through the hooks the server has
        return await UpkeepDoor(imaging.linker).run(name, payload)
    finally:
        await client.close()


def _pending(
    args: argparse.Namespace, target: Target, embedded: Callable[[], Store], admin: Admin | None
) -> int:
    from imaging.upkeep import report
    from imaging.upkeep_door import refusal

    name = "dicom/retry" if args.retry else "dicom/pending"
    payload: Payload = {"studies": args.study} if args.study else {}
    if admin is not None:  # through the running server, never beside it
        try:
            answer = admin(name, payload)
        except (RuntimeError, httpx.HTTPError) as error:
            print(f"the running server refused: {error}", file=sys.stderr)
            return 1
    elif target.mongodb_uri is not None:
        answer = asyncio.run(_upkeep_in_process(target.mongodb_uri, target, name, payload))
    else:
        store = embedded()
        try:
            answer = asyncio.run(_upkeep_in_process(store.start(), target, name, payload))
        finally:
            store.stop()
    refused = refusal(answer)
    if refused is not None:
        print(f"refused: {refused}", file=sys.stderr)
        return 1
    print(json.dumps(answer, indent=2) if args.json else report(answer))
    return 0


def run(
    args: argparse.Namespace,
    target: Target,
    embedded: Callable[[], Store],
    admin: Admin | None = None,
) -> int:
    """`admin`: calls the running server's admin operations, when one runs."""
    if args.dicom_command == "pending":
        return _pending(args, target, embedded, admin)
    if args.url:
        return _summary(asyncio.run(_over_http(args, target.max_bytes)))
    if target.mongodb_uri is not None:
        return _summary(asyncio.run(_in_process(args, target.mongodb_uri, target)))
    store = embedded()  # the server must be stopped: the embedded store has one owner
    try:
        return _summary(asyncio.run(_in_process(args, store.start(), target)))
    finally:
        store.stop()
