"""HL7 v2 ingest over MLLP: ORM^O01 orders into FHIR, against a bare MLLP echo ceiling.

Starts the embedded store and `medbridge serve` in a temp directory, then sends ORM^O01
messages with realistic content (patient with national id, visit, placer/filler order,
accession, CPT procedure, ordering doctor, priority) at 1 and 8 connections, each
message waiting for its ACK, and counts only AA. In the same run a bare MLLP echo server
(the same framing code, a fixed ACK, no parsing or store: a separate process) measures
what the machine and the client can do at all; the ratio is the figure to watch. And
the "store ceiling" row runs only an order's MongoDB work (bench/store_ceiling.py)
against the same embedded store: what any server on this store could reach.
Target on the embedded store: >= 300 orders/s at 8 connections. `--store` runs it on
each store named (bench/stores.py); the store ceiling then uses that store and gate.

    ./run bench hl7_ingest [--messages 2000] [--connections 1,8]
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import stores
from bench.common import Measurement, measure, print_table, write_results
from bench.store_ceiling import order_ceiling
from hl7_bridge.client import MllpClient
from hl7_bridge.framing import FrameReader, frame
from medbridge.embedded_mongo import free_port

FAMILIES = ["Kazlauskas", "Petraitienė", "Иванов", "Šimkus", "Jonaitis", "Žukauskas"]
GIVEN = ["Jonas", "Rūta", "Пётр", "Ona", "Tomas", "Eglė"]
PROCEDURES = [
    "71020^XR Chest 2 views^C4",
    "74177^CT Abdomen pelvis with contrast^C4",
    "70553^MRI Brain with and without contrast^C4",
    "76700^US Abdomen complete^C4",
]
MODALITIES = ["DX", "CT", "MR", "US"]  # OBR-24, as IHE RAD-4 sends it
ECHO_ACK = b"MSH|^~\\&|MB|MB|RIS|HOSP|20261122101500||ACK^O01^ACK|1|P|2.3.1\rMSA|AA|1\r"


def obr(fields: dict[int, str]) -> str:
    """OBR with the given fields (HL7 numbering) set: OBR-18 accession, OBR-24 modality."""
    values = [""] * max(fields)
    for number, value in fields.items():
        values[number - 1] = value
    return "|".join(["OBR", *values])


def order(run: str, n: int, patients: int) -> bytes:
    """One realistic radiology order; a patient pool so patients are also updated."""
    p = n % patients
    code = f"{38000000000 + p * 7:011d}"
    segments = [
        f"MSH|^~\\&|RIS|HOSP|MEDBRIDGE|MB|20261122101500||ORM^O01|{run}-{n}|P|2.3.1|||||LT|"
        "UNICODE UTF-8",
        f"PID|1||{code}^^^LTPK^NI~MRN{p}^^^HOSP^MR||{FAMILIES[p % 6]}^{GIVEN[p % 6]}||"
        f"19{50 + p % 50}0{1 + p % 9}1{p % 10}|{'MF'[p % 2]}|||Gedimino pr. {p}^^Vilnius^^01103^LT"
        f"||+3706{p:07d}^PRN^CP",
        f"PV1|1|O|RAD^1^1||||D{p % 20}^Petraitis^Jonas^^^Dr.^^^HOSP||||||||||||V{run}{n}^^^HOSP^VN",
        f"ORC|NW|{run}-PL{n}^RIS|{run}-FL{n}^PACS||SC||^^^20261123080000^^R|"
        f"|20261122101000|||D{p % 20}^Petraitis^Jonas^^^Dr.^^^HOSP",
        obr(
            {
                1: "1",
                2: f"{run}-PL{n}^RIS",
                3: f"{run}-FL{n}^PACS",
                4: PROCEDURES[n % 4],
                18: f"{run}-ACC{n}",
                24: MODALITIES[n % 4],
                27: "^^^20261123080000^^R",
                31: "^Suspected pneumonia",
            }
        ),
        f"ZDS|1.2.826.0.1.3680043.2.1125.{int(time.time())}.{n}^MB^Application^DICOM",
    ]
    return ("\r".join(segments) + "\r").encode("utf-8")


async def run_level(
    name: str, ports: list[int], connections: int, messages: list[bytes], expect: bytes
) -> Measurement:
    """`connections` MLLP connections spread over `ports` (one pool in front of them)."""
    pool: asyncio.Queue[MllpClient] = asyncio.Queue()
    clients = [
        await MllpClient.connect("127.0.0.1", ports[n % len(ports)]) for n in range(connections)
    ]
    for client in clients:
        pool.put_nowait(client)

    async def send(i: int) -> bool:
        client = await pool.get()
        try:
            ack = await client.send(messages[i], 60)
        finally:
            pool.put_nowait(client)
        return expect in ack

    try:
        return await measure(name, connections, len(messages), send)
    finally:
        for client in clients:
            await client.close()


async def echo_server(port: int) -> None:
    """A bare MLLP server: frames in, a fixed ACK out; nothing parsed or stored."""

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        frames = FrameReader(reader, 10 * 1024 * 1024, 300, 30, 60)
        while await frames.next() is not None:
            writer.write(frame(ECHO_ACK))
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", port)
    print("ready", flush=True)
    await server.serve_forever()


async def run(count: int, levels: list[int], kind: str) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="medbridge-bench-hl7-"))
    stack = stores.start(kind, workdir)
    ports = [server.mllp_port for server in stack.servers]
    echo_port = free_port()
    echo = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
        [sys.executable, __file__, "--echo-server", str(echo_port)],
        stdout=subprocess.PIPE,
    )
    assert echo.stdout is not None
    echo.stdout.readline()  # "ready"
    rows: list[Measurement] = []
    try:
        for connections in levels:
            tag = f"c{connections}-{time.time_ns() % 10**8}"
            messages = [order(tag, n, max(50, count // 4)) for n in range(count)]
            echo_ports = [echo_port]
            rows.append(await run_level("echo ceiling", echo_ports, connections, messages, b"|AA|"))
            rows.append(await run_level("ORM^O01 -> FHIR", ports, connections, messages, b"|AA|"))
            rows.append(await order_ceiling(stack.uri, count, connections, stack.serialize_writes))
    finally:
        echo.terminate()
        echo.wait(10)
        stack.stop()
    print(f"\n== store: {kind}")
    print_table(rows)
    ratios = {}
    store_ratios = {}
    for connections in levels:
        real = next(r for r in rows if r.name.startswith("ORM") and r.clients == connections)
        ceiling = next(r for r in rows if r.name == "echo ceiling" and r.clients == connections)
        floor = next(r for r in rows if r.name == "store ceiling" and r.clients == connections)
        ratios[str(connections)] = round(real.per_second / ceiling.per_second, 4)
        store_ratios[str(connections)] = round(real.per_second / floor.per_second, 4)
        ratio = ratios[str(connections)]
        print(
            f"\nORM ingest / echo ceiling at {connections} connections: "
            f"{real.per_second:.1f} / {ceiling.per_second:.1f} msg/s = {ratio:.3f}"
        )
        print(
            f"ORM ingest / store ceiling (an order's MongoDB work alone) at {connections} "
            f"connections: {real.per_second:.1f} / {floor.per_second:.1f} = "
            f"{store_ratios[str(connections)]:.3f}"
        )
    best = max(r.per_second for r in rows if r.name.startswith("ORM"))
    print(f"best ORM ingest: {best:.1f} orders/s (target >= 300 at 8 connections)")
    extra = {
        "ingest_to_echo_ratio": ratios,
        "ingest_to_store_ceiling_ratio": store_ratios,
        "messages_per_level": count,
        "store": kind,
    }
    name = "hl7_ingest" if kind == "embedded" else f"hl7_ingest-{kind}"
    print(f"\nwrote {write_results(name, rows, extra)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--messages", type=int, default=2000, help="messages per level")
    parser.add_argument("--connections", default="1,8", help="comma-separated levels")
    parser.add_argument("--store", default=stores.ALL, help=f"comma-separated: {stores.ALL}")
    parser.add_argument("--echo-server", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        asyncio.run(echo_server(args.echo_server))
        return
    for kind in stores.kinds(args.store):
        asyncio.run(run(args.messages, [int(c) for c in args.connections.split(",")], kind))


if __name__ == "__main__":
    main()
