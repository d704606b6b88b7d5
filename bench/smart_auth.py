"""What token enforcement costs: FHIR reads and searches, QIDO-RS and WADO-RS, with and
without auth.

Starts the embedded store and two `medbridge serve` processes on one database: one with
auth on (JWT access tokens of a local ES256 key, checked by `JwtValidator` against a JWKS
file), one with `--no-auth`. It stores 20 studies of one CT instance each (pydicom's
CT_small, new UIDs) by STOW-RS, so QIDO-RS finds studies and WADO-RS retrieves an
instance (about 40 KB) per request. The same requests go to both, in alternating rounds so a
noisy machine hits both alike; the figure is the throughput ratio auth / no-auth (target
>= 0.9 for reads, issue 14). The token is one client's: checked once, then kept until it
expires (docs/smart.md), as in real use.

    ./run bench smart_auth [--requests 1000] [--clients 1,16] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import io
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


def token(key: ECKey, audience: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "bench", "aud": audience, "client_id": "bench",
              "scope": "system/*.rs", "exp": now + 3600, "jti": "bench"}  # fmt: skip
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


async def seed(http: aiohttp.ClientSession, server: RunningServer, count: int) -> list[str]:
    ids = []
    for n in range(count):
        body = {"resourceType": "Patient", "name": [{"family": f"Bench{n % 20}"}]}
        async with http.post(f"{server.fhir_base}/Patient", data=orjson.dumps(body),
                             headers=HEADERS) as answer:  # fmt: skip
            ids.append(orjson.loads(await answer.read())["id"])
    return ids


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


async def run(requests: int, levels: list[int], rounds: int) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="medbridge-bench-auth-"))
    key = ECKey.generate_key("P-256", parameters={"kid": "bench"}, private=True)
    jwks = workdir / "jwks.json"
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    store = EmbeddedMongo(workdir / "store")
    store.start()
    env = {"MEDBRIDGE_AUTH_ISSUER": ISSUER, "MEDBRIDGE_AUTH_JWKS": str(jwks)}
    # one object store for both, as for one database: WADO-RS on either finds what STOW wrote
    (workdir / "objects").mkdir()
    for name in ("auth", "open"):
        (workdir / name).mkdir()
        (workdir / name / "objects").symlink_to(workdir / "objects", target_is_directory=True)
    servers = {
        "auth": start_server(workdir / "auth", store.uri, "bench", env=env, auth=True),
        "no-auth": start_server(workdir / "open", store.uri, "bench"),
    }
    rows: list[Measurement] = []
    ratios: dict[str, dict[str, float]] = {}
    try:
        async with aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=max(levels) * 2)
        ) as http:
            ids = await seed(http, servers["no-auth"], 200)
            instances = await seed_studies(http, servers["no-auth"])
            bearer = {"Authorization": f"Bearer {token(key, servers['auth'].fhir_base)}"}
            headers = {"auth": {**HEADERS, **bearer}, "no-auth": HEADERS}
            wado = {mode: {**fields, "Accept": WADO_ACCEPT} for mode, fields in headers.items()}

            def reader(mode: str, path: Any) -> Any:
                async def get(i: int) -> bool:
                    url = f"{servers[mode].base_url}{path(i)}"
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
                for clients in levels:
                    rates: dict[str, list[float]] = {"auth": [], "no-auth": []}
                    for _ in range(rounds):
                        for mode in ("auth", "no-auth"):
                            got = await measure(f"{name} {mode}", clients, requests,
                                                reader(mode, path))  # fmt: skip
                            rows.append(got)
                            rates[mode].append(got.per_second)
                    ratio = median(rates["auth"]) / median(rates["no-auth"])
                    ratios.setdefault(name, {})[str(clients)] = round(ratio, 3)
    finally:
        for server in servers.values():
            server.stop()
        store.stop()
    print_table(rows)
    print()
    for name, by_clients in ratios.items():
        for clients, ratio in by_clients.items():
            print(f"{name} auth / no-auth at {clients:>2} clients: {ratio:.2f} (target >= 0.9)")
    extra = {"auth_to_no_auth_ratio": ratios, "requests_per_step": requests, "rounds": rounds}
    print(f"\nwrote {write_results('smart_auth', rows, extra)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=1000, help="requests per step")
    parser.add_argument("--clients", default="1,16", help="comma-separated concurrency levels")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per step")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    asyncio.run(run(args.requests, levels, args.rounds))


if __name__ == "__main__":
    main()
