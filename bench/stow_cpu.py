"""Server CPU per small STOW-RS instance, between checkouts, in alternating rounds.

Each checkout (a git worktree of an earlier commit, and this one) serves STOW-RS from its
own `medbridge serve` (its own code: the server starts in that checkout) on its own
embedded store (the same store code for all, this checkout's, so only the server differs).
Each round STOWs the same number of fresh small CT instances (bench/dicom_ingest.py's) to
every server in turn, and reads from /proc the CPU time (user + system, every thread) the
server, its child processes (parse workers, FHIR body worker) and its store spent, from
just before the STOW to 0.5 s after it (the ImagingStudy upkeep, debounced, included).
On a machine shared with other work the rates swing; CPU per instance is the steady
figure, so the medians of the rounds are what this prints (docs/dicom.md, session 8).

    ./run bench stow_cpu --checkout /work/wt/base12 --checkout . \\
        [--env 1:MEDBRIDGE_AUDIT=false] [--instances 300] [--rounds 8] [--label before,after]
        [--fresh [--settle 8]] [--commands] [--profile] [--out NAME.json]

`--fresh` starts new servers each round: their first STOW (cold, after `--settle` idle
seconds) and a second (warm). `--commands` has each server count the store commands it
sends and `--profile` profile each of its threads (bench/profiling/sitecustomize.py);
both are written at each warm-up's end and at the end into the printed directory.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS
from bench.dicom_ingest import small_instances, stow_all
from medbridge.embedded_mongo import EmbeddedMongo, free_port

PROFILING = Path(__file__).resolve().parent / "profiling"


def own_cpu(pid: int) -> float:
    """CPU seconds (user + system) of one process, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def descendants(pid: int) -> list[int]:
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(stat[1])
    found, frontier = [], [pid]
    while frontier:
        parent = frontier.pop()
        children = [child for child, of in parents.items() if of == parent]
        found += children
        frontier += children
    return found


def kind(pid: int) -> str:
    """What a server's child process is: a DICOM parse worker has numpy loaded (pydicom),
    the FHIR body worker pydantic-core but not numpy; the resource tracker (and a parse
    worker not warmed yet) neither, counted with the parse workers."""
    with contextlib.suppress(OSError):
        maps = Path(f"/proc/{pid}/maps").read_text()
        if "pydantic_core" in maps and "numpy" not in maps:
            return "body_worker"
    return "parse_workers"


def workers_cpu(pid: int) -> dict[str, float]:
    """CPU seconds of the server's child processes, by kind."""
    total = {"parse_workers": 0.0, "body_worker": 0.0}
    for child in descendants(pid):
        with contextlib.suppress(OSError):  # gone meanwhile
            total[kind(child)] += own_cpu(child)
    return total


class Side:
    """One checkout's server and store."""

    def __init__(self, label: str, checkout: Path, root: Path, env: dict[str, str]) -> None:
        self.label, self.checkout = label, checkout
        self.store = EmbeddedMongo(root / label / "store")
        self.store.start()
        self.port = free_port()
        data = root / label / "server"
        data.mkdir(parents=True)
        extra = ["--no-auth"] if "--no-auth" in self.serve_help() else []
        self.log = (data / "server.log").open("ab")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "medbridge", "serve", "--data-dir", str(data),
             "--http-port", str(self.port), "--mllp-port", str(free_port()),
             "--dicom-port", str(free_port()), "--database", "bench",
             "--mongodb-uri", self.store.uri, *extra],
            cwd=checkout, stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.url}/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise SystemExit(f"{label}: server not healthy")

    def serve_help(self) -> str:
        return subprocess.run(
            [sys.executable, "-m", "medbridge", "serve", "--help"],
            cwd=self.checkout, capture_output=True, text=True,
        ).stdout  # fmt: skip

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def cpu(self) -> dict[str, float]:
        figures = {"server": own_cpu(self.process.pid), **workers_cpu(self.process.pid)}
        figures["store"] = own_cpu(self.store.process.pid) if self.store.process else 0.0
        return figures

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self.store.stop()


async def run(options: argparse.Namespace) -> dict[str, Any]:
    labels = options.label.split(",")
    assert len(labels) == len(options.checkout), "one --label per --checkout"
    envs: dict[int, dict[str, str]] = {}
    for assignment in options.env:
        index, _, pair = assignment.partition(":")
        key, _, value = pair.partition("=")
        envs.setdefault(int(index), {})[key] = value
    root = Path(tempfile.mkdtemp(prefix="bench-stow-cpu-"))
    per_round: dict[str, dict[int, dict[str, float]]] = {label: {} for label in labels}

    def start(n: int, checkout: str, tag: str) -> Side:
        env = dict(envs.get(n, {}))
        if options.commands or options.profile:
            env["PYTHONPATH"] = str(PROFILING)
        if options.commands:
            env["MEDBRIDGE_BENCH_COMMANDS"] = str(root / f"commands-{labels[n]}{tag}.json")
        if options.profile:
            (root / f"profile-{labels[n]}{tag}").mkdir()
            env["MEDBRIDGE_BENCH_PROFILE"] = str(root / f"profile-{labels[n]}{tag}")
            env["MEDBRIDGE_BENCH_PROFILE_THREADS"] = "1"
        return Side(labels[n], Path(checkout).resolve(), root / f"run{tag}", env)

    async def measure(side: Side, number: int, kind: str) -> None:
        instances = small_instances(options.instances)
        before = side.cpu()
        done = await stow_all(
            f"{side.url}/dicomweb/studies", instances, options.clients, options.per_request
        )
        await asyncio.sleep(0.5)  # the linker's debounced upkeep after the last request
        after = side.cpu()
        figures = {
            f"{kind}{k}_ms": round((after[k] - before[k]) * 1000 / len(instances), 3)
            for k in before
        }
        figures[f"{kind}total_ms"] = round(
            sum(after[k] - before[k] for k in before if k != "store") * 1000 / len(instances), 3
        )
        figures[f"{kind}instances_per_s"] = done["instances_per_s"]
        figures[f"{kind}failures"] = done["failures"]
        per_round[side.label].setdefault(number, {}).update(figures)
        print(f"round {number + 1} {side.label:<8} {figures}", flush=True)

    async def dump(side: Side) -> None:
        if options.profile or options.commands:
            side.process.send_signal(signal.SIGUSR1)
            await asyncio.sleep(2)

    sides: list[Side] = []
    try:
        if options.fresh:
            # each round: new servers, the first requests (cold: imports, pools, caches
            # made on first use count too, as in bench/dicom_ingest.py), then as many warm
            for number in range(options.rounds):
                order = list(enumerate(options.checkout))
                for n, checkout in order if number % 2 == 0 else order[::-1]:
                    side = start(n, checkout, f"-{number}")
                    sides.append(side)
                    # the workers' and the server's start finish before the first request,
                    # as in bench/dicom_ingest.py, which starts every store's server first
                    await asyncio.sleep(options.settle)
                    await measure(side, number, "cold_")
                    await dump(side)
                    await measure(side, number, "warm_")
                    await dump(side)
                    side.stop()
                    sides.remove(side)
        else:
            for n, checkout in enumerate(options.checkout):
                sides.append(start(n, checkout, ""))
            # a warm-up request per side: first-request imports and pools are not per
            # instance
            for side in sides:
                await stow_all(f"{side.url}/dicomweb/studies", small_instances(20), 2, 10)
                await dump(side)
            for number in range(options.rounds):
                for side in sides if number % 2 == 0 else sides[::-1]:
                    await measure(side, number, "warm_")
            for side in sides:
                await dump(side)
    finally:
        for side in sides:
            side.stop()
        # the servers' and stores' data (hundreds of MB a run); profiles and counts stay
        for data in root.glob("run*"):  # noqa: ASYNC240 (after the measuring)
            shutil.rmtree(data, ignore_errors=True)
    summary: dict[str, Any] = {}
    for label, numbered in per_round.items():
        rounds = list(numbered.values())
        summary[label] = {key: statistics.median(r[key] for r in rounds) for key in rounds[0]} | {
            "rounds": rounds
        }
        print(f"{label:<8} medians " + ", ".join(
            f"{k} {v:.3f}" for k, v in summary[label].items() if k != "rounds"
        ))  # fmt: skip
    print(f"files in {root}")
    return {"root": str(root), "sides": summary}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkout", action="append", required=True)
    parser.add_argument("--label", default="before,after")
    parser.add_argument("--env", action="append", default=[], metavar="N:KEY=VALUE")
    parser.add_argument("--instances", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--per-request", type=int, default=10)
    parser.add_argument(
        "--fresh", action="store_true", help="new servers each round: cold, then warm figures"
    )
    parser.add_argument(
        "--settle", type=float, default=8.0, help="--fresh: idle seconds before the first STOW"
    )
    parser.add_argument("--commands", action="store_true")
    parser.add_argument("--profile", action="store_true")
    parser.add_argument("--out", help="result JSON name under bench/results/")
    options = parser.parse_args()
    result = asyncio.run(run(options))
    result.update(
        args=sys.argv[1:],
        when=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        load_average=os.getloadavg(),
    )
    if options.out:
        RESULTS.mkdir(exist_ok=True)
        (RESULTS / options.out).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
