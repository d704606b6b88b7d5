"""What one audited access adds: `AuditChain.append` in-process on the embedded store.

No HTTP and no second server: a realistic read's AuditEvent (audit/event.py `build`)
appended one at a time and by `--clients` concurrent appenders, against a `find_one` by
`_id` on the same store as the yardstick of a read's own store cost; and what one event
writes (documents and index rows, counted in the store). Rounds alternate the steps so a
noisy machine weighs on all alike; medians are reported.

    ./run bench audit_append [--events 200] [--clients 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from access.access import Access, Action
from access.context import Actor, Door, RequestContext
from audit.chain import AuditChain
from audit.event import build, learned_of
from bench.common import median, write_results
from fhir_server.repository import Repository
from medbridge.embedded_mongo import EmbeddedMongo

Document = dict[str, Any]
DATABASE = "bench"


def read_event(n: int) -> Document:
    actor = Actor(kind="user", identifier=f"user{n % 7}")
    context = RequestContext(door=Door.FHIR, actor=actor, peer="127.0.0.1")
    access = Access(door=Door.FHIR, action=Action("read"), actor=actor,
                    resource_types=frozenset({"Patient"}), resource_id=f"p{n}",
                    client_address="127.0.0.1")  # fmt: skip
    return build(access, context, learned_of(access, []), None, "bench", time.time())


async def documents_per_event(client: AsyncMongoClient[Document]) -> dict[str, int]:
    """Documents in each collection the chain wrote to, per event."""
    database = client[DATABASE]
    events = await database["AuditEvent"].count_documents({})
    counts = {}
    for name in ("AuditEvent", "AuditEvent_idx", "history"):
        counts[name] = await database[name].count_documents(
            {"t": "AuditEvent"} if name == "history" else {}
        )
    return {name: round(count / events) for name, count in counts.items()}


async def appenders(chain: AuditChain, events: int, clients: int) -> None:
    """`events` appends by `clients` concurrent accesses."""
    queue = iter(range(events))

    async def appender() -> None:
        for n in queue:
            await chain.append(read_event(n))

    await asyncio.gather(*(appender() for _ in range(clients)))


async def run(events: int, clients: int, rounds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="medbridge-bench-append-"))
    store = EmbeddedMongo(workdir / "store")
    store.start()
    client: AsyncMongoClient[Document] = AsyncMongoClient(store.uri)
    try:
        repository = Repository(client, DATABASE)
        await repository.ensure_indexes()
        chain = AuditChain(repository)
        await chain.append(read_event(0))
        probe = client[DATABASE]["AuditEvent"]
        results: dict[str, list[float]] = {"find_one": [], "sequential": [], "concurrent": []}
        for _ in range(rounds):
            started = time.perf_counter()
            for _ in range(events):
                await probe.find_one({"_id": f"{1:016d}"})
            results["find_one"].append(events / (time.perf_counter() - started))
            started = time.perf_counter()
            for n in range(events):
                await chain.append(read_event(n))
            results["sequential"].append(events / (time.perf_counter() - started))
            started = time.perf_counter()
            await appenders(chain, events, clients)
            results["concurrent"].append(events / (time.perf_counter() - started))
        per_event = await documents_per_event(client)
    finally:
        await client.close()
        store.stop()
    figures = {name: round(median(values), 1) for name, values in results.items()}
    print(f"per second (median of {rounds} rounds): find_one {figures['find_one']}, append "
          f"alone {figures['sequential']}, by {clients} {figures['concurrent']}")  # fmt: skip
    print(f"stored per event: {per_event}")
    extra = {"per_second_median": figures, "rounds_per_second": results, "events": events,
             "clients": clients, "stored_per_event": per_event}  # fmt: skip
    print(f"wrote {write_results('audit_append', [], extra)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=200, help="appends per step")
    parser.add_argument("--clients", type=int, default=16, help="concurrent appenders")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds")
    args = parser.parse_args()
    asyncio.run(run(args.events, args.clients, args.rounds))


if __name__ == "__main__":
    main()
