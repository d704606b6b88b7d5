"""Where a request's CPU goes with and without auth: cProfile inside the servers of
bench/smart_auth.py (the same store, tokens and requests).

The servers start with bench/profiling/ first on `PYTHONPATH` and
`MEDBRIDGE_BENCH_PROFILE` set, so their event loop is profiled; after each kind of
request (read, search, QIDO-RS, WADO-RS) in each mode (no-auth, a backend service's
`system/*.rs` token, a practitioner's `user/*.rs` token) the server is told (SIGUSR1) to
write what it profiled, and the functions that cost most per request are printed, own
time and with callees. The `.pstats` files stay in the printed directory for
`python -m pstats`. cProfile slows every call, so the absolute figures are inflated;
compare modes and functions, not milliseconds with bench/smart_auth.py.

    ./run bench smart_profile [--requests 300] [--clients 4] [--top 25] [--only read,search]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import signal
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import aiohttp
import orjson
from joserfc.jwk import ECKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import measure
from bench.smart_auth import (
    ENV,
    HEADERS,
    ISSUER,
    WADO_ACCEPT,
    seed,
    seed_practitioner,
    seed_studies,
    token,
)
from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import RunningServer, start_server

PROFILING = Path(__file__).resolve().parent / "profiling"
MODES = ("no-auth", "auth", "auth-user")


def profiled_env(directory: Path, extra: dict[str, str]) -> dict[str, str]:
    path = os.pathsep.join([str(PROFILING), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)
    return {**ENV, **extra, "PYTHONPATH": path, "MEDBRIDGE_BENCH_PROFILE": str(directory)}


def dump(server: RunningServer, directory: Path, seen: set[Path]) -> Path:
    """Ask the server for its profile since the last dump; the new file's path."""
    server.process.send_signal(signal.SIGUSR1)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        fresh = set(directory.glob(f"profile-{server.process.pid}-*.pstats")) - seen
        if fresh:
            (path,) = fresh
            time.sleep(0.2)  # written by one dump_stats call: let it finish
            seen.add(path)
            return path
        time.sleep(0.05)
    raise RuntimeError("the server wrote no profile")


def report(path: Path, label: str, requests: int, top: int) -> None:
    stats = pstats.Stats(str(path))
    print(f"\n== {label}: {stats.total_tt * 1000 / requests:.2f} ms profiled per request")  # type: ignore[attr-defined]
    for key in ("tottime", "cumulative"):
        print(f"-- by {key}")
        rows = sorted(
            stats.stats.items(),  # type: ignore[attr-defined]
            key=lambda item: item[1][2 if key == "tottime" else 3],
            reverse=True,
        )
        for (filename, line, function), (_, calls, own, total, _) in rows[:top]:
            where = "/".join(Path(filename).parts[-2:])
            print(f"{own * 1000 / requests:8.3f} {total * 1000 / requests:8.3f} "
                  f"{calls / requests:7.1f}  {where}:{line} {function}")  # fmt: skip


async def run(requests: int, clients: int, top: int, only: set[str]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="medbridge-bench-profile-"))
    profiles = workdir / "profiles"
    profiles.mkdir()
    key = ECKey.generate_key("P-256", parameters={"kid": "bench"}, private=True)
    jwks = workdir / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    store = EmbeddedMongo(workdir / "store")
    store.start()
    (workdir / "objects").mkdir()
    for name in ("auth", "open"):
        (workdir / name).mkdir()
        (workdir / name / "objects").symlink_to(workdir / "objects", target_is_directory=True)
    auth_env = profiled_env(
        profiles, {"MEDBRIDGE_AUTH_ISSUER": ISSUER, "MEDBRIDGE_AUTH_JWKS": str(jwks)}
    )
    open_env = profiled_env(profiles, {})
    servers = {
        "auth": start_server(workdir / "auth", store.uri, "bench", env=auth_env, auth=True,
                             timeout=180),
        "no-auth": start_server(workdir / "open", store.uri, "bench", env=open_env, timeout=180),
    }  # fmt: skip
    seen: set[Path] = set()
    try:
        async with aiohttp.ClientSession() as http:
            ids = await seed(http, servers["no-auth"], 200)
            instances = await seed_studies(http, servers["no-auth"])
            practitioner = await seed_practitioner(http, servers["no-auth"])
            audience = servers["auth"].fhir_base
            headers = {
                "auth": {**HEADERS, "Authorization": f"Bearer {token(key, audience)}"},
                "auth-user": {
                    **HEADERS,
                    "Authorization": f"Bearer {token(key, audience, practitioner)}",
                },
                "no-auth": HEADERS,
            }
            paths = {
                "read": lambda i: f"/fhir/Patient/{ids[i % len(ids)]}",
                "search": lambda i: f"/fhir/Patient?family=Bench{i % 20}&_count=5",
                "qido": lambda i: "/dicomweb/studies?limit=5",
                "wado": lambda i: instances[i % len(instances)],
            }
            for server in servers.values():
                dump(server, profiles, seen)  # start and seeding left out
            for name, path in paths.items():
                if only and name not in only:
                    continue
                for mode in MODES:
                    server = servers["no-auth" if mode == "no-auth" else "auth"]
                    sent = {**headers[mode]}
                    if name == "wado":
                        sent["Accept"] = WADO_ACCEPT

                    async def get(
                        i: int,
                        server: RunningServer = server,
                        sent: dict[str, str] = sent,
                        path: Callable[[int], str] = path,
                    ) -> bool:
                        url = f"{server.base_url}{path(i)}"
                        async with http.get(url, headers=sent) as answer:
                            await answer.read()
                            return answer.status == 200

                    await measure(f"{name} {mode} warm-up", clients, 20, get)
                    dump(server, profiles, seen)
                    await measure(f"{name} {mode}", clients, requests, get)
                    report(dump(server, profiles, seen), f"{name} {mode}", requests, top)
    finally:
        for server in servers.values():
            server.stop()
        store.stop()
    print(f"\nprofiles in {profiles}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=300, help="requests per kind and mode")
    parser.add_argument("--clients", type=int, default=4, help="concurrent clients")
    parser.add_argument("--top", type=int, default=25, help="functions printed per profile")
    parser.add_argument("--only", default="", help="comma-separated kinds (read,search,qido,wado)")
    args = parser.parse_args()
    only = {kind for kind in args.only.split(",") if kind}
    asyncio.run(run(args.requests, args.clients, args.top, only))


if __name__ == "__main__":
    main()
