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

`--audit` instead measures read and create with authorization (a SMART token), consent
and audit all on, and all off, on one database in alternating rounds
(bench/access_on_off.py), and the audit write rate: the AuditEvents made durable per
second during the "on" rounds (docs/audit.md, Cost).

    ./run bench fhir_rest --audit [--requests 500] [--clients 1,16] [--rounds 3] [--store embedded]
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
from bench.access_on_off import Operation, compare, getter, start_pair
from bench.common import Measurement, measure, print_table, write_results
from tests.support.servers import start_store

HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
FAMILIES = ["Kazlauskas", "Petraitienė", "Ёлкин", "Šimkus"]
AUDIT_STORES = ("embedded", "isolated")


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


async def audit_run(requests: int, levels: list[int], kind: str, rounds: int) -> None:
    """Read and create with authorization, consent and audit all on, and all off
    (bench/access_on_off.py), in alternating rounds; the on/off ratios and the rate at
    which the "on" rounds made AuditEvents durable."""
    if kind not in AUDIT_STORES:
        raise SystemExit(f"--audit runs on {', '.join(AUDIT_STORES)}, not {kind}")
    workdir = Path(tempfile.mkdtemp(prefix="medbridge-bench-audit-"))
    store = start_store(workdir / "store", kind)
    pair = start_pair(workdir, store.uri, "bench")
    try:
        connector = aiohttp.TCPConnector(limit=max(levels) * 2)
        async with aiohttp.ClientSession(connector=connector) as http:
            ids: list[str] = []
            for n in range(200):  # through "off": the "on" rounds measure reads only
                async with http.post(pair.url("off", "/fhir/Patient"), headers=HEADERS,
                                     data=orjson.dumps(patient(n))) as answer:  # fmt: skip
                    ids.append(orjson.loads(await answer.read())["id"])

            def create(mode: str) -> Operation:
                sent = {**HEADERS, **pair.headers[mode]}

                async def post(i: int) -> bool:
                    url, body = pair.url(mode, "/fhir/Patient"), orjson.dumps(patient(i))
                    async with http.post(url, data=body, headers=sent) as answer:
                        await answer.read()
                        return answer.status == 201

                return post

            steps = {
                "read": getter(http, pair, lambda i: f"/fhir/Patient/{ids[i % len(ids)]}", HEADERS),
                "create": create,
            }
            compared = await compare(pair, steps, levels, requests, rounds)
    finally:
        pair.stop()
        store.stop()
    print(f"\n== store: {kind}, authorization + consent + audit on and off")
    print_table(compared.rows)
    print()
    compared.print()
    extra = {**compared.as_json(), "requests_per_step": requests, "store": kind}
    name = "fhir_rest-audit" if kind == "embedded" else f"fhir_rest-audit-{kind}"
    print(f"\nwrote {write_results(name, compared.rows, extra)}")


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
    parser.add_argument(
        "--audit",
        action="store_true",
        help="read and create with authorization, consent and audit all on and all off",
    )
    parser.add_argument("--rounds", type=int, default=3, help="--audit: alternating rounds")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    for kind in stores.kinds(args.store):
        if args.audit:
            asyncio.run(audit_run(args.requests, levels, kind, args.rounds))
        else:
            asyncio.run(run(args.requests, levels, kind, args.settle))


if __name__ == "__main__":
    main()
