"""FHIR REST throughput and latency against a running MedBridge, and the raw driver ceiling.

Starts the embedded store and `medbridge serve` (a separate process) in a temp
directory, then measures create, read, update and vread at 1, 16 and 64 concurrent
clients over HTTP keep-alive, and `AsyncMongoClient.find_one` by `_id` on the same store
at the same concurrency. The FHIR read / raw driver ratio is the figure to watch: reads
serve stored bytes, so the HTTP and pipeline overhead is all that separates them. The
read steps start `--settle` seconds after the creates, so that they measure reads and not
the tail of the writes the store is still digesting (on the embedded store the first
reads after 1,000 creates ran at 400/s, the same reads two seconds later at 590/s).
`--store` runs it on each store named (bench/stores.py): the embedded store, SecantusDB
with the write gate on, off, and two processes behind one client pool.

    ./run bench fhir_rest [--requests 2000] [--clients 1,16,64] [--store embedded,...] [--settle 2]
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import stores
from bench.common import Measurement, measure, print_table, write_results

HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
FAMILIES = ["Kazlauskas", "Petraitienė", "Ёлкин", "Šimkus"]


def patient(n: int) -> dict[str, Any]:
    return {
        "resourceType": "Patient",
        "identifier": [{"system": "urn:oid:1.3.6.1.4.1.99999.1", "value": f"bench-{n}"}],
        "name": [{"family": FAMILIES[n % 4], "given": ["Jonas"]}],
        "gender": "male",
        "birthDate": f"19{50 + n % 50}-0{1 + n % 9}-1{n % 10}",
        "address": [{"city": "Vilnius", "country": "LT"}],
    }


class Operations:
    """The measured operations; `ids` holds what `create` made at this level."""

    def __init__(self, http: aiohttp.ClientSession, raw: Any, stack: stores.Stack) -> None:
        self.http = http
        self.raw = raw
        self.stack = stack
        self.ids: list[str] = []

    def url(self, i: int, path: str) -> str:
        return f"{self.stack.server(i).fhir_base}/{path}"

    def pick(self, i: int) -> str:
        return self.ids[i % len(self.ids)]

    async def create(self, i: int) -> bool:
        url, body = self.url(i, "Patient"), orjson.dumps(patient(i))
        async with self.http.post(url, data=body, headers=HEADERS) as r:
            answer = await r.read()
            if r.status == 201:
                self.ids.append(orjson.loads(answer)["id"])
            return r.status == 201

    async def read(self, i: int) -> bool:
        async with self.http.get(self.url(i, f"Patient/{self.pick(i)}"), headers=HEADERS) as r:
            await r.read()
            return r.status == 200

    async def raw_find_one(self, i: int) -> bool:
        return await self.raw.find_one({"_id": self.pick(i)}) is not None

    async def vread(self, i: int) -> bool:
        url = self.url(i, f"Patient/{self.pick(i)}/_history/1")
        async with self.http.get(url, headers=HEADERS) as r:
            await r.read()
            return r.status == 200

    async def update(self, i: int) -> bool:
        # each update has its own resource: concurrency measures throughput, not the
        # (correct) version conflicts of writers sharing one resource
        resource_id = self.ids[i]
        body = orjson.dumps({**patient(i), "id": resource_id, "gender": "female"})
        url = self.url(i, f"Patient/{resource_id}")
        async with self.http.put(url, data=body, headers=HEADERS) as r:
            await r.read()
            return r.status == 200


async def run(requests: int, levels: list[int], kind: str, settle: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="medbridge-bench-"))
    stack = stores.start(kind, workdir)
    rows: list[Measurement] = []
    try:
        connector = aiohttp.TCPConnector(limit=max(levels))
        raw_client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
            stack.uri, maxPoolSize=max(levels)
        )
        async with aiohttp.ClientSession(connector=connector) as http:
            for clients in levels:
                ops = Operations(http, raw_client["bench"]["Patient"], stack)
                rows.append(await measure("create", clients, requests, ops.create))
                await asyncio.sleep(settle)
                rows.append(await measure("read", clients, requests, ops.read))
                rows.append(await measure("raw find_one", clients, requests, ops.raw_find_one))
                rows.append(await measure("vread", clients, requests, ops.vread))
                rows.append(await measure("update", clients, len(ops.ids), ops.update))
        await raw_client.close()
    finally:
        stack.stop()
    print(f"\n== store: {kind}")
    print_table(rows)
    ratios = {}
    for clients in levels:
        fhir = next(r for r in rows if r.name == "read" and r.clients == clients)
        raw = next(r for r in rows if r.name == "raw find_one" and r.clients == clients)
        ratios[str(clients)] = round(fhir.per_second / raw.per_second, 3)
    print()
    for clients, ratio in ratios.items():
        print(f"FHIR read / raw find_one at {clients:>2} clients: {ratio:.2f} (target >= 0.5)")
    extra = {
        "read_to_raw_ratio": ratios,
        "requests_per_step": requests,
        "store": kind,
        "settle_s": settle,
    }
    name = "fhir_rest" if kind == "embedded" else f"fhir_rest-{kind}"
    print(f"\nwrote {write_results(name, rows, extra)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=2000, help="requests per step")
    parser.add_argument("--clients", default="1,16,64", help="comma-separated concurrency levels")
    parser.add_argument("--store", default=stores.ALL, help=f"comma-separated: {stores.ALL}")
    parser.add_argument(
        "--settle", type=float, default=2.0, help="seconds between the creates and the reads"
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    for kind in stores.kinds(args.store):
        asyncio.run(run(args.requests, levels, kind, args.settle))


if __name__ == "__main__":
    main()
