"""Authorization, consent and audit all on against all off, in one run (issue 15).

Two `medbridge serve` processes on one database of one store: "on" checks a SMART token
(JWT of a local ES256 key, checked against a JWKS file, as bench/smart_auth.py), runs
the consent hooks (on with auth) and writes one chained AuditEvent per access; "off" is
`--no-auth` with `MEDBRIDGE_AUDIT=false`. The same requests go to both in alternating
rounds, so a noisy machine weighs on both alike; the figure is the median on / median
off throughput, and the audit write rate: AuditEvents made durable per second during
the "on" rounds (counted in the store). Used by `--audit` of bench/fhir_rest.py,
bench/fhir_search.py and bench/dicom_ingest.py.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import orjson
from joserfc import jwt
from joserfc.jwk import ECKey
from pymongo import AsyncMongoClient

from bench.common import Measurement, measure, median
from tests.support.servers import RunningServer, start_server

ISSUER = "https://bench.issuer.test"
MODES = ("on", "off")
TARGET = 0.75  # issue 15: on / off throughput
STARTUP = 180.0  # seconds a server may take to answer /health on a busy shared machine
Operation = Callable[[int], Awaitable[bool]]
# answers other than 200, per "step mode status": printed and written, so that a failing
# side is seen instead of hiding in the error count
UNEXPECTED: Counter[str] = Counter()


def token(key: ECKey, audience: str) -> str:
    now = int(time.time())
    claims = {"iss": ISSUER, "sub": "bench", "aud": audience, "client_id": "bench",
              "scope": "system/*.cruds", "exp": now + 3600, "jti": "bench"}  # fmt: skip
    return jwt.encode({"alg": "ES256", "kid": key.kid}, claims, key)


@dataclass
class Pair:
    """The "on" and "off" servers of one database, and the headers each is sent."""

    servers: dict[str, RunningServer]
    headers: dict[str, dict[str, str]]  # per mode: the Authorization header, or nothing
    uri: str
    database: str

    def url(self, mode: str, path: str) -> str:
        return f"{self.servers[mode].base_url}{path}"

    def stop(self) -> None:
        for server in self.servers.values():
            server.stop()


def start_pair(workdir: Path, uri: str, database: str) -> Pair:
    """Both servers on `database`, sharing one object store (WADO-RS on either finds what
    STOW-RS wrote through the other)."""
    key = ECKey.generate_key("P-256", parameters={"kid": "bench"}, private=True)
    jwks = workdir / "jwks.json"
    workdir.mkdir(parents=True, exist_ok=True)
    jwks.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    (workdir / "objects").mkdir(exist_ok=True)
    for mode in MODES:
        (workdir / mode).mkdir(exist_ok=True)
        link = workdir / mode / "objects"
        if not link.exists():
            link.symlink_to(workdir / "objects", target_is_directory=True)
    env = {"MEDBRIDGE_AUTH_ISSUER": ISSUER, "MEDBRIDGE_AUTH_JWKS": str(jwks)}
    on = start_server(workdir / "on", uri, database, env=env, auth=True, timeout=STARTUP)
    try:
        off = start_server(
            workdir / "off", uri, database, env={"MEDBRIDGE_AUDIT": "false"}, timeout=STARTUP
        )
    except BaseException:
        on.stop()
        raise
    bearer = {"Authorization": f"Bearer {token(key, on.fhir_base)}"}
    return Pair({"on": on, "off": off}, {"on": bearer, "off": {}}, uri, database)


@dataclass
class Comparison:
    """What `compare` measured: every round, and per step and clients the ratio and the
    audit write rate."""

    rows: list[Measurement]
    ratios: dict[str, dict[str, float]]
    audit_writes_per_second: dict[str, dict[str, float]]
    rounds: int

    def print(self) -> None:
        for answer, count in UNEXPECTED.items():
            print(f"unexpected answer x{count}: {answer}")
        for step, by_clients in self.ratios.items():
            for clients, ratio in by_clients.items():
                rate = self.audit_writes_per_second[step][clients]
                print(f"{step:>24} at {clients:>2} clients: on / off {ratio:.2f} "
                      f"(target >= {TARGET}), audit writes {rate:.1f}/s")  # fmt: skip

    def as_json(self) -> dict[str, Any]:
        return {
            "on_off_ratio": self.ratios,
            "audit_writes_per_second": self.audit_writes_per_second,
            "rounds": self.rounds,
            "target": TARGET,
            "on": "auth (SMART token) + consent + audit",
            "off": "--no-auth, audit off",
            "unexpected_answers": dict(UNEXPECTED),
        }


async def compare(
    pair: Pair,
    steps: dict[str, Callable[[str], Operation]],
    levels: list[int],
    requests: int,
    rounds: int,
) -> Comparison:
    """Each step (`steps[name](mode)` -> the operation against that mode's server) at each
    concurrency, `rounds` times on then off."""
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(pair.uri)
    events = client[pair.database]["AuditEvent"]
    rows: list[Measurement] = []
    ratios: dict[str, dict[str, float]] = {}
    writes: dict[str, dict[str, float]] = {}
    try:
        for name, operation in steps.items():
            for clients in levels:
                rates: dict[str, list[float]] = {mode: [] for mode in MODES}
                written, seconds = 0, 0.0
                for _ in range(rounds):
                    for mode in MODES:
                        before = await events.count_documents({}) if mode == "on" else 0
                        got = await measure(f"{name} {mode}", clients, requests, operation(mode))
                        rows.append(got)
                        rates[mode].append(got.per_second)
                        if mode == "on":
                            written += await events.count_documents({}) - before
                            seconds += got.seconds
                ratio = median(rates["on"]) / median(rates["off"])
                ratios.setdefault(name, {})[str(clients)] = round(ratio, 3)
                writes.setdefault(name, {})[str(clients)] = round(written / seconds, 1)
    finally:
        await client.close()
    return Comparison(rows, ratios, writes, rounds)


def getter(
    http: aiohttp.ClientSession,
    pair: Pair,
    path: Callable[[int], str],
    headers: dict[str, str] | None = None,
) -> Callable[[str], Operation]:
    """A GET of `path(i)` that must answer 200, against either mode's server."""

    def for_mode(mode: str) -> Operation:
        sent = {**(headers or {}), **pair.headers[mode]}

        async def get(i: int) -> bool:
            async with http.get(pair.url(mode, path(i)), headers=sent) as answer:
                body = await answer.read()
                if answer.status != 200:
                    key = f"{mode} {answer.status} {body[:120]!r}"
                    UNEXPECTED[key] += 1
                return answer.status == 200

        return get

    return for_mode
