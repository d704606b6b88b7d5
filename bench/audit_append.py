"""What one audited access adds: `AuditChain.append` in-process on the embedded store.

No HTTP and no second server: a realistic read's AuditEvent (audit/event.py `build`)
appended one at a time and by `--clients` concurrent appenders, against a `find_one` by
`_id` on the same store as the yardstick of a read's own store cost; what one event
writes (documents and index rows, counted in the store); and the CPU each step costs per
operation, the store's process and this one (the appender: pymongo and the chain) apart,
read from /proc: where an audited access's time goes (docs/audit.md, Cost). Rounds
alternate the steps so a noisy machine weighs on all alike; medians are reported.

    ./run bench audit_append [--events 200] [--clients 16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient
from pymongo.asynchronous.collection import AsyncCollection

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


def store_cpu_seconds(pid: int) -> float:
    """User and system CPU of process `pid` so far (Linux /proc; 0 elsewhere)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def appenders(chain: AuditChain, events: int, clients: int) -> None:
    """`events` appends by `clients` concurrent accesses."""
    queue = iter(range(events))

    async def appender() -> None:
        for n in queue:
            await chain.append(read_event(n))

    await asyncio.gather(*(appender() for _ in range(clients)))


async def finds(probe: AsyncCollection[Document], events: int) -> None:
    for _ in range(events):
        await probe.find_one({"_id": f"{1:016d}"})


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
        assert store.process is not None
        pid = store.process.pid
        steps: dict[str, Callable[[], Awaitable[None]]] = {
            "find_one": lambda: finds(probe, events),
            "sequential": lambda: appenders(chain, events, 1),
            "concurrent": lambda: appenders(chain, events, clients),
        }
        results: dict[str, list[float]] = {name: [] for name in steps}
        # per operation, ms: {step: {"store": [...], "appender": [...]}}
        cpu: dict[str, dict[str, list[float]]] = {
            name: {"store": [], "appender": []} for name in steps
        }
        for _ in range(rounds):
            for name, step in steps.items():
                store_before, own_before = store_cpu_seconds(pid), time.process_time()
                started = time.perf_counter()
                await step()
                results[name].append(events / (time.perf_counter() - started))
                cpu[name]["store"].append((store_cpu_seconds(pid) - store_before) / events * 1e3)
                cpu[name]["appender"].append((time.process_time() - own_before) / events * 1e3)
        per_event = await documents_per_event(client)
    finally:
        await client.close()
        store.stop()
    figures = {name: round(median(values), 1) for name, values in results.items()}
    cpu_ms = {name: {side: round(median(values), 3) for side, values in sides.items()}
              for name, sides in cpu.items()}  # fmt: skip
    print(f"per second (median of {rounds} rounds): find_one {figures['find_one']}, append "
          f"alone {figures['sequential']}, by {clients} {figures['concurrent']}")  # fmt: skip
    labels = {"find_one": "find_one", "sequential": "append alone",
              "concurrent": f"append by {clients}"}  # fmt: skip
    for name, label in labels.items():
        print(
            f"CPU per operation, {label}: store {cpu_ms[name]['store']} ms, "
            f"appender {cpu_ms[name]['appender']} ms"
        )
    print(f"stored per event: {per_event}")
    extra = {"per_second_median": figures, "rounds_per_second": results, "events": events,
             "clients": clients, "stored_per_event": per_event,
             "cpu_ms_per_operation_median": cpu_ms, "rounds_cpu_ms": cpu}  # fmt: skip
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
