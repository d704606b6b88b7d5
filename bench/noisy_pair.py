"""The large-ingest noisy-neighbour cases, the baseline's server and this checkout's side by side.

`noisy_neighbour.py` repeats one request for the whole window: its second 200 MiB STOW
or C-STORE is a duplicate (no object write, no index write, no ImagingStudy upkeep), so
a server that takes the first one faster is measured on different work, and a server
started minutes later on a machine whose load drifts. Here both servers run at once
(each with its own store), and every window gets one *new* request (new UIDs, new
urandom pixels) and then nothing until the window ends: the same work on both sides,
in the same minutes, alternating which side goes first.

    ./run bench noisy_pair --baseline main --rounds 4 [--cases dimse,stow]

Per window: the FHIR read and HL7 ACK probes (noisy_neighbour's, in their own process)
p50/p99 in a quiet window just before and while the request runs, and the server's
and the store's CPU seconds in both windows (from /proc). Medians per side and case.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench import noisy_neighbour as nn
from bench.common import RESULTS, cpu_seconds
from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import start_server

HERE = Path(__file__).resolve().parent.parent
MIB = 1024 * 1024
FIGURES = ("fhir_p50_ms", "fhir_p99_ms", "fhir_ratio", "hl7_p50_ms", "hl7_p99_ms", "hl7_ratio",
           "server_cpu_s", "server_cpu_quiet_s", "store_cpu_s", "store_cpu_quiet_s",
           "rss_mb")  # fmt: skip
Side = tuple[EmbeddedMongo, nn.World]


async def start(checkout: Path, http: httpx.AsyncClient) -> Side:
    """A store and a server running `checkout`'s code (`-m medbridge` imports from the
    working directory first), with noisy_neighbour's setup data."""
    workdir = Path(tempfile.mkdtemp(prefix="medbridge-bench-pair-"))
    here = Path.cwd()
    os.chdir(checkout)
    try:
        store = EmbeddedMongo(workdir / "store")
        store.start()
        server = start_server(workdir / "server", store.uri, database="bench")
    finally:
        os.chdir(here)
    # the setup's own large files are not used here: small ones
    sizes = nn.Sizes(l7_mib=1, l7_bomb_mib=1, l10_instances=5, c1_frames=10)
    world = nn.World(server, sizes, workdir, http)
    await nn.setup(world)
    return store, world


def new_request(case: str, workdir: Path) -> Callable[[nn.World], Awaitable[None]]:
    """One new request of the case, built before the window; then quiet to its end."""
    if case == "dimse":  # one instance of 100 frames of 1024 x 1024 x 16 bit, by storescu
        path = workdir / f"big-{time.time_ns()}.dcm"
        path.write_bytes(nn.ct(100, 1024, 1024, os.urandom(100 * 2 * MIB)))

        async def store_once(world: nn.World) -> None:
            await nn.dimse_store_c(world.server.dicom_port, path)
            path.unlink(missing_ok=True)
            await asyncio.sleep(world.seconds_left())

        return store_once
    # noisy_neighbour's largest-stow: 100 instances of one 2 MiB frame in one STOW
    body, headers = nn.multipart([nn.ct(1, 1024, 1024, os.urandom(2 * MIB)) for _ in range(100)])

    async def stow_once(world: nn.World) -> None:
        await nn.dicomweb(world, "POST", "/studies", content=body, headers=headers)
        await asyncio.sleep(world.seconds_left())

    return stow_once


async def measure(side: Side, case: str, seconds: float) -> dict[str, Any]:
    store, world = side
    noise = new_request(case, world.workdir)
    await nn.settle(world)
    pid, store_pid = world.server.process.pid, store.process.pid if store.process else 0
    before = cpu_seconds(pid), cpu_seconds(store_pid)
    quiet = await nn.window(world, seconds, None)
    between = cpu_seconds(pid), cpu_seconds(store_pid)
    row = await nn.window(world, seconds, noise)
    after = cpu_seconds(pid), cpu_seconds(store_pid)
    row.update(
        fhir_quiet_p99_ms=quiet["fhir_p99_ms"],
        hl7_quiet_p99_ms=quiet["hl7_p99_ms"],
        fhir_ratio=round(row["fhir_p99_ms"] / max(quiet["fhir_p99_ms"], 0.1), 2),
        hl7_ratio=round(row["hl7_p99_ms"] / max(quiet["hl7_p99_ms"], 0.1), 2),
        server_cpu_quiet_s=round(between[0] - before[0], 2),
        store_cpu_quiet_s=round(between[1] - before[1], 2),
        server_cpu_s=round(after[0] - between[0], 2),
        store_cpu_s=round(after[1] - between[1], 2),
        load=round(os.getloadavg()[0], 1),
        rss_mb=nn.rss_mb(pid),  # the server and its workers, after the window
    )
    return row


async def run(
    baseline: Path, cases: list[str], rounds: int, seconds: float
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async with httpx.AsyncClient(timeout=300) as http:
        sides = {"before": await start(baseline, http), "after": await start(HERE, http)}
        try:
            for round_ in range(rounds):
                for case in cases:
                    order = ["before", "after"] if round_ % 2 == 0 else ["after", "before"]
                    for name in order:
                        row = await measure(sides[name], case, seconds)
                        row.update(side=name, case=case, round=round_)
                        rows.append(row)
                        print(json.dumps(row), flush=True)
        finally:
            for store, world in sides.values():
                nn.stop(store, world)
    return rows


def medians(rows: list[dict[str, Any]], cases: list[str]) -> dict[str, dict[str, Any]]:
    table: dict[str, dict[str, Any]] = {}
    for case in cases:
        for side in ("before", "after"):
            mine = [row for row in rows if row["case"] == case and row["side"] == side]
            if mine:
                table[f"{case}.{side}"] = {
                    key: round(statistics.median(row[key] for row in mine), 2) for key in FIGURES
                }
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--baseline", required=True, help="git commit whose server is 'before'")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--cases", default="dimse,stow")
    parser.add_argument("--seconds", type=float, default=3.0)
    options = parser.parse_args()
    cases = options.cases.split(",")
    worktree = Path(tempfile.mkdtemp(prefix="medbridge-baseline-")) / "checkout"
    subprocess.run(["git", "worktree", "add", "--detach", str(worktree), options.baseline],
                   cwd=HERE, check=True)  # fmt: skip
    try:
        rows = asyncio.run(run(worktree, cases, options.rounds, options.seconds))
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(worktree)], cwd=HERE)
    table = medians(rows, cases)
    print(f"\nmedians of {options.rounds} rounds, baseline {options.baseline} (before) vs here")
    print(f"{'case.side':<14}" + "".join(f"{key:>20}" for key in FIGURES))
    for name, figures in table.items():
        print(f"{name:<14}" + "".join(f"{figures[key]:>20}" for key in FIGURES))
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "noisy_pair.json"
    path.write_text(json.dumps({
        "benchmark": "noisy_pair", "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "baseline": options.baseline, "rounds": options.rounds, "seconds": options.seconds,
        "medians": table, "windows": rows}, indent=2) + "\n")  # fmt: skip
    print(f"\nwrote {path}")


if __name__ == "__main__":
    main()
