"""Large bodies inline vs in the object store: how long the store and the loop wait.

Issue 17's `largest-fhir` and `largest-mllp` cases (docs/limits.md): while one client
posts large Binaries (or sends large HL7 messages), probes measure a `find_one` straight
to the store on the server's own database (which waits for that database's lock), the
server's `/health` (the event loop alone), a FHIR read and an HL7 ACK. Each round starts
one server with `MEDBRIDGE_BODY_OBJECT_BYTES=0` (every body inline, as before) and one
with the default (large bodies in the object store), alternately, on one store process
each; figures are the medians over rounds of each probe's p50, p99 and maximum.

    ./run bench large_bodies [--rounds 3] [--seconds 4] [--fhir-mib 8] [--hl7-mib 2]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
from pymongo import AsyncMongoClient

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, percentile
from hl7_bridge.client import MllpClient
from hl7_bridge.framing import frame
from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import RunningServer, start_server

FHIR_JSON = {"Content-Type": "application/fhir+json"}
ADT = (
    "MSH|^~\\&|HIS|HOSP|MEDBRIDGE|MB|20261122101500||ADT^A08|{control}|P|2.5\r"
    "PID|1||LARGE-{n}^^^HOSP^MR||{family}^Jonas||19700101|M\r"
)
PAUSE = 0.02
Noise = Callable[[httpx.AsyncClient], Awaitable[Any]]
MODES = {"inline": {"MEDBRIDGE_BODY_OBJECT_BYTES": "0"}, "objects": {}}


async def probe(name: str, call: Callable[[], Awaitable[Any]], end: float) -> list[float]:
    waits = []
    while time.monotonic() < end:
        started = time.perf_counter()
        with contextlib.suppress(Exception):
            await call()
        waits.append(time.perf_counter() - started)
        await asyncio.sleep(PAUSE)
    return waits


def summary(waits: list[float]) -> dict[str, float]:
    waits = sorted(waits)
    return {
        "p50_ms": round(percentile(waits, 0.5) * 1000, 1),
        "p99_ms": round(percentile(waits, 0.99) * 1000, 1),
        "max_ms": round(max(waits) * 1000, 1) if waits else float("nan"),
    }


async def window(
    server: RunningServer, store_uri: str, noise: Noise | None, seconds: float
) -> dict[str, Any]:
    mongo: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(store_uri)
    collection = mongo[server.database]["Patient"]
    async with httpx.AsyncClient(timeout=120) as http, httpx.AsyncClient(timeout=300) as noisy:
        patient = await http.post(f"{server.fhir_base}/Patient", headers=FHIR_JSON,
                                  content=b'{"resourceType":"Patient","active":true}')  # fmt: skip
        read_url = f"{server.fhir_base}/Patient/{patient.json()['id']}"
        hl7 = await MllpClient.connect("127.0.0.1", server.mllp_port)
        counter = iter(range(1_000_000))

        async def ack() -> None:
            control = f"P{next(counter)}-{uuid.uuid4().hex[:8]}"
            await hl7.send(ADT.format(control=control, n=1, family="Probe").encode(), 60)

        end = time.monotonic() + seconds
        sent = 0

        async def make_noise() -> None:
            nonlocal sent
            while noise is not None and time.monotonic() < end:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(noise(noisy), max(0.1, end - time.monotonic()))
                sent += 1

        try:
            store, health, read, acks, _ = await asyncio.gather(
                probe("store", lambda: collection.find_one({"_id": "none"}), end),
                probe("health", lambda: http.get(f"{server.base_url}/health"), end),
                probe("read", lambda: http.get(read_url), end),
                probe("ack", ack, end),
                make_noise(),
            )
        finally:
            await hl7.close()
            await mongo.close()
    return {"store": summary(store), "health": summary(health), "fhir_read": summary(read),
            "hl7_ack": summary(acks), "noisy_requests": sent}  # fmt: skip


def fhir_noise(server: RunningServer, mib: int) -> Noise:
    data = base64.b64encode(os.urandom(mib << 20)).decode()
    body = json.dumps({"resourceType": "Binary", "contentType": "application/pdf", "data": data})

    async def post(client: httpx.AsyncClient) -> None:
        await client.post(f"{server.fhir_base}/Binary", content=body, headers=FHIR_JSON)

    return post


def hl7_noise(server: RunningServer, mib: int) -> Noise:
    async def send(_: httpx.AsyncClient) -> None:
        note = "NTE|1||" + "a" * (mib << 20) + "\r"
        message = ADT.format(control=f"BIG-{uuid.uuid4().hex}", n=9, family="Big") + note
        reader, writer = await asyncio.open_connection("127.0.0.1", server.mllp_port)
        try:
            writer.write(frame(message.encode()))
            await writer.drain()
            await asyncio.wait_for(reader.read(65536), 60)
        finally:
            writer.close()

    return send


async def one_round(mode: str, args: argparse.Namespace) -> dict[str, Any]:
    workdir = Path(tempfile.mkdtemp(prefix=f"medbridge-bench-large-{mode}-"))
    store = EmbeddedMongo(workdir / "store")
    store.start()
    server = start_server(workdir / "server", store.uri, database="bench", env=MODES[mode])
    try:
        result: dict[str, Any] = {"quiet": await window(server, store.uri, None, args.seconds)}
        result["largest-fhir"] = await window(
            server, store.uri, fhir_noise(server, args.fhir_mib), args.seconds
        )
        result["quiet-2"] = await window(server, store.uri, None, args.seconds)
        result["largest-mllp"] = await window(
            server, store.uri, hl7_noise(server, args.hl7_mib), args.seconds
        )
        return result
    finally:
        server.stop()
        store.stop()


def medians(runs: list[dict[str, Any]]) -> dict[str, Any]:
    table: dict[str, Any] = {}
    for window_name in runs[0]:
        table[window_name] = {}
        for probe_name, figures in runs[0][window_name].items():
            if isinstance(figures, dict):
                table[window_name][probe_name] = {
                    key: statistics.median(r[window_name][probe_name][key] for r in runs)
                    for key in figures
                }
            else:
                table[window_name][probe_name] = statistics.median(r[window_name][probe_name]
                                                                   for r in runs)  # fmt: skip
    return table


async def run(args: argparse.Namespace) -> None:
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    for number in range(args.rounds):
        for mode in MODES if number % 2 == 0 else reversed(list(MODES)):
            runs[mode].append(await one_round(mode, args))
            print(f"round {number + 1} {mode}: {json.dumps(runs[mode][-1])}", flush=True)
    result = {mode: medians(rounds) for mode, rounds in runs.items()}
    print(f"\nmedians of {args.rounds} rounds, ms (p50 / p99 / max)")
    for window_name in result["inline"]:
        for probe_name in ("store", "health", "fhir_read", "hl7_ack"):
            line = f"{window_name:<14}{probe_name:<10}"
            for mode in MODES:
                f = result[mode][window_name][probe_name]
                line += f"{mode:>9} {f['p50_ms']:>7} {f['p99_ms']:>8} {f['max_ms']:>8}"
            print(line)
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "large_bodies.json"
    path.write_text(json.dumps({
        "benchmark": "large_bodies", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"cpus": os.cpu_count(), "load": os.getloadavg()},
        "args": vars(args), "medians": result, "rounds": runs}, indent=2) + "\n")  # fmt: skip
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--fhir-mib", type=int, default=8)
    parser.add_argument("--hl7-mib", type=int, default=2)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
