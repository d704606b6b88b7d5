"""What token enforcement costs: FHIR reads and searches, QIDO-RS and WADO-RS, with and
without auth.

Starts the embedded store and two `medbridge serve` processes on one database: one with
auth on (JWT access tokens of a local ES256 key, checked by `JwtValidator` against a JWKS
file), one with `--no-auth`. It stores 20 studies of one CT instance each (pydicom's
CT_small, new UIDs) by STOW-RS, so QIDO-RS finds studies and WADO-RS retrieves an
instance (about 40 KB) per request. The same requests go to both, in alternating rounds so a
noisy machine hits both alike; the figure is the throughput ratio auth / no-auth (target
>= 0.9 for reads, issue 14). Two tokens, each checked once and then kept until it expires
(docs/smart.md), as in real use: a backend service's (`system/*.rs`, which consent does
not filter) and a signed-in practitioner's (`user/*.rs` with `fhirUser`, whose every
answer the consent hooks decide: "auth-user"). Both servers run with
`MEDBRIDGE_AUDIT=false`: the audit trail's cost is measured on its own (issue 15,
bench/fhir_rest.py), this figure is authorization and consent only.

Each step (a kind of request at one concurrency) first sends one untimed round per mode:
a process's first requests fill what it keeps per token and per patient, and counted in
one round they swung that round's figure by a factor of two (`--no-warm-up` counts them).

Beside throughput, each step records the CPU seconds the serving process and the store
spent per request (`/proc/PID/stat`, the process and its children): on a shared machine
whose load swings throughput by a factor of five between rounds, the CPU a request costs
is what stays put, and the CPU ratio no-auth / auth is the throughput ratio the same
work would have on an idle, CPU-bound machine.

    ./run bench smart_auth [--requests 1000] [--clients 1,16] [--rounds 3] [--only read,wado]
        [--no-warm-up]
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pydicom
from joserfc import jwt
from joserfc.jwk import ECKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Measurement, measure, median, print_table, write_results
from bench.dicom_ingest import CONTENT_TYPE, multipart, small_instances
from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import RunningServer, start_server

ISSUER = "https://bench.issuer.test"
HEADERS = {"Content-Type": "application/fhir+json", "Accept": "application/fhir+json"}
WADO_ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'
STUDIES = 20
TICKS = os.sysconf("SC_CLK_TCK")


MODES = ("auth", "auth-user", "no-auth")
# the audit trail off on both sides: issue 15 measures what it costs
ENV = {"MEDBRIDGE_AUDIT": "false"}


def token(key: ECKey, audience: str, fhir_user: str | None = None) -> str:
    """A backend service's token, or with `fhir_user` a signed-in user's."""
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "bench", "aud": audience, "client_id": "bench",
              "scope": "system/*.rs", "exp": now + 3600, "jti": "bench"}  # fmt: skip
    if fhir_user is not None:
        claims |= {"sub": "bench-user", "client_id": "bench-app", "scope": "user/*.rs",
                   "fhirUser": fhir_user, "jti": "bench-user"}  # fmt: skip
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


def cpu_seconds(pid: int) -> float:
    """user + system CPU of a process and its descendants (Linux /proc), in seconds."""
    total = 0.0
    pending = [pid]
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / TICKS
            children = Path(f"/proc/{current}/task/{current}/children").read_text().split()
        except (FileNotFoundError, ProcessLookupError):
            continue  # gone between two reads
        pending.extend(int(child) for child in children)
    return total


async def seed(http: aiohttp.ClientSession, server: RunningServer, count: int) -> list[str]:
    ids = []
    for n in range(count):
        body = {"resourceType": "Patient", "name": [{"family": f"Bench{n % 20}"}]}
        async with http.post(f"{server.fhir_base}/Patient", data=orjson.dumps(body),
                             headers=HEADERS) as answer:  # fmt: skip
            ids.append(orjson.loads(await answer.read())["id"])
    return ids


async def seed_practitioner(http: aiohttp.ClientSession, server: RunningServer) -> str:
    """The signed-in user of the auth-user token: a Practitioner with a PractitionerRole."""
    body = {"resourceType": "Practitioner", "name": [{"family": "Bench"}]}
    async with http.post(f"{server.fhir_base}/Practitioner", data=orjson.dumps(body),
                         headers=HEADERS) as answer:  # fmt: skip
        reference = f"Practitioner/{orjson.loads(await answer.read())['id']}"
    role = {"resourceType": "PractitionerRole", "practitioner": {"reference": reference},
            "organization": {"reference": "Organization/bench"}}  # fmt: skip
    async with http.post(f"{server.fhir_base}/PractitionerRole", data=orjson.dumps(role),
                         headers=HEADERS) as answer:  # fmt: skip
        await answer.read()
    return reference


async def seed_studies(http: aiohttp.ClientSession, server: RunningServer) -> list[str]:
    """STOW one instance per study; the WADO-RS paths of the instances."""
    paths = []
    for instance in small_instances(STUDIES, per_study=1):
        dataset = pydicom.dcmread(io.BytesIO(instance), stop_before_pixels=True)
        async with http.post(f"{server.base_url}/dicomweb/studies", data=multipart([instance]),
                             headers={"Content-Type": CONTENT_TYPE}) as answer:  # fmt: skip
            await answer.read()
            if answer.status != 200:
                raise RuntimeError(f"STOW-RS answered {answer.status}")
        paths.append(
            f"/dicomweb/studies/{dataset.StudyInstanceUID}/series/{dataset.SeriesInstanceUID}"
            f"/instances/{dataset.SOPInstanceUID}"
        )
    return paths


async def run(
    requests: int, levels: list[int], rounds: int, only: set[str], warm: bool = True
) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="medbridge-bench-auth-"))
    key = ECKey.generate_key("P-256", parameters={"kid": "bench"}, private=True)
    jwks = workdir / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    store = EmbeddedMongo(workdir / "store")
    store.start()
    assert store.process is not None
    store_pid = store.process.pid
    env = {**ENV, "MEDBRIDGE_AUTH_ISSUER": ISSUER, "MEDBRIDGE_AUTH_JWKS": str(jwks)}
    # one object store for both, as for one database: WADO-RS on either finds what STOW wrote
    (workdir / "objects").mkdir()
    for name in ("auth", "open"):
        (workdir / name).mkdir()
        (workdir / name / "objects").symlink_to(workdir / "objects", target_is_directory=True)
    servers = {
        "auth": start_server(workdir / "auth", store.uri, "bench", env=env, auth=True, timeout=180),
        "no-auth": start_server(workdir / "open", store.uri, "bench", env=ENV, timeout=180),
    }
    rows: list[Measurement] = []
    ratios: dict[str, dict[str, dict[str, float]]] = {}
    cpu: dict[str, dict[str, float]] = {}  # mode -> step -> ms of CPU per request
    server_cpu: dict[str, dict[str, float]] = {}  # the same, the serving process alone
    cpu_ratios: dict[str, dict[str, dict[str, float]]] = {}
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(levels) * 2)
        ) as http:
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
            wado = {mode: {**fields, "Accept": WADO_ACCEPT} for mode, fields in headers.items()}

            def reader(mode: str, path: Any) -> Any:
                server = servers["no-auth" if mode == "no-auth" else "auth"]

                async def get(i: int) -> bool:
                    url = f"{server.base_url}{path(i)}"
                    sent = wado[mode] if "/instances/" in url else headers[mode]
                    async with http.get(url, headers=sent) as answer:
                        await answer.read()
                        return answer.status == 200

                return get

            paths = {
                "read": lambda i: f"/fhir/Patient/{ids[i % len(ids)]}",
                "search": lambda i: f"/fhir/Patient?family=Bench{i % 20}&_count=5",
                "qido": lambda i: "/dicomweb/studies?limit=5",
                "wado": lambda i: instances[i % len(instances)],
            }
            for name, path in paths.items():
                if only and name not in only:
                    continue
                for clients in levels:
                    rates: dict[str, list[float]] = {mode: [] for mode in MODES}
                    costs: dict[str, list[float]] = {mode: [] for mode in MODES}
                    server_costs: dict[str, list[float]] = {mode: [] for mode in MODES}
                    if warm:
                        # untimed: a process's first requests of a kind fill what it
                        # keeps (checked tokens, consent's patients), which the
                        # first counted round would otherwise carry alone
                        for mode in MODES:
                            await measure(f"{name} {mode} warm-up", clients, requests,
                                          reader(mode, path))  # fmt: skip
                    for _ in range(rounds):
                        for mode in MODES:
                            pids = (servers["no-auth" if mode == "no-auth" else "auth"]
                                    .process.pid, store_pid)  # fmt: skip
                            before = sum(cpu_seconds(pid) for pid in pids)
                            server_before = cpu_seconds(pids[0])
                            got = await measure(f"{name} {mode}", clients, requests,
                                                reader(mode, path))  # fmt: skip
                            spent = sum(cpu_seconds(pid) for pid in pids) - before
                            server_spent = cpu_seconds(pids[0]) - server_before
                            rows.append(got)
                            rates[mode].append(got.per_second)
                            costs[mode].append(spent * 1000 / requests)
                            server_costs[mode].append(server_spent * 1000 / requests)
                    step = f"{name} {clients}"
                    for mode in MODES:
                        cpu.setdefault(mode, {})[step] = round(median(costs[mode]), 3)
                        server_cpu.setdefault(mode, {})[step] = round(median(server_costs[mode]), 3)
                    for mode in ("auth", "auth-user"):
                        by_mode = cpu_ratios.setdefault(mode, {}).setdefault(name, {})
                        by_mode[str(clients)] = round(
                            median(costs["no-auth"]) / median(costs[mode]), 3
                        )
                    for mode in ("auth", "auth-user"):
                        ratio = median(rates[mode]) / median(rates["no-auth"])
                        by_mode = ratios.setdefault(mode, {}).setdefault(name, {})
                        by_mode[str(clients)] = round(ratio, 3)
    finally:
        for server in servers.values():
            server.stop()
        store.stop()
    print_table(rows)
    print()
    for mode, by_name in ratios.items():
        for name, by_clients in by_name.items():
            for level, ratio in by_clients.items():
                print(f"{name} {mode} / no-auth at {level:>2} clients: {ratio:.2f} "
                      "(target >= 0.9)")  # fmt: skip
    print()
    for mode, by_name in cpu_ratios.items():
        for name, by_clients in by_name.items():
            for level, ratio in by_clients.items():
                step = f"{name} {level}"
                print(f"{name} CPU per request at {level:>2} clients: {mode} "
                      f"{cpu[mode][step]:.2f} ms, no-auth {cpu['no-auth'][step]:.2f} ms, "
                      f"ratio no-auth / {mode} {ratio:.2f} (server alone "
                      f"{server_cpu[mode][step]:.2f} / "
                      f"{server_cpu['no-auth'][step]:.2f} ms)")  # fmt: skip
    print("audit trail off on both servers (MEDBRIDGE_AUDIT=false)")
    extra = {
        "auth_to_no_auth_ratio": ratios["auth"],
        "auth_user_to_no_auth_ratio": ratios["auth-user"],
        "requests_per_step": requests,
        "rounds": rounds,
        "warm_up_round": warm,
        "cpu_ms_per_request": cpu,
        "server_cpu_ms_per_request": server_cpu,
        "cpu_ratio_no_auth_to_auth": cpu_ratios["auth"],
        "cpu_ratio_no_auth_to_auth_user": cpu_ratios["auth-user"],
        "server_env": ENV,
        "note": "audit trail off on both servers; auth: a system/*.rs backend-service "
        "token (consent does not filter it), auth-user: a user/*.rs Practitioner token "
        "whose answers the consent hooks decide",
    }
    print(f"\nwrote {write_results('smart_auth', rows, extra)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests per step")
    parser.add_argument("--clients", default="1,16", help="comma-separated concurrency levels")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per step")
    parser.add_argument("--only", default="", help="comma-separated steps (read,search,qido,wado)")
    parser.add_argument(
        "--no-warm-up",
        action="store_true",
        help="count from the first request (by default each step first sends one untimed "
        "round per mode)",
    )
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    only = {step for step in args.only.split(",") if step}
    asyncio.run(run(args.requests, levels, args.rounds, only, not args.no_warm_up))


if __name__ == "__main__":
    main()
