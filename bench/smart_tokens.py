"""How fast the authorization server issues tokens (issue 14), in tokens per second.

Starts the embedded store and one `medbridge serve` with auth on, registers a patient
user, a public app and a backend service (P-384 key, `--jwks-file`) through the real
commands, then measures three things over `--clients` concurrent callers:

- `authorization_code` flow: the whole standalone launch a person goes through, four
  requests per token (GET /auth/authorize, sign-in POST, approval POST, token POST);
  the sign-in checks the password with scrypt (N=2^15, ~0.1 s of one core by design).
- code exchange: the token POST alone (authorization_code + PKCE S256), for codes
  obtained beforehand by the same flow (codes live 60 s, so they are used at once).
- `client_credentials` with `private_key_jwt` (ES384): the service's assertions are
  signed before the clock starts, so the figure is the server's (checking the assertion,
  recording its jti, signing the token).

    ./run bench smart_tokens [--flows 40] [--assertions 300] [--clients 1,4]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import re
import secrets
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import httpx
import orjson
from joserfc import jwt
from joserfc.jwk import ECKey

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import Measurement, measure, print_table, write_results
from medbridge.embedded_mongo import EmbeddedMongo
from tests.support.servers import RunningServer, start_server
from tests.support.smart_apps import checked

PASSWORD = "bench-password-long-1"  # noqa: S105 (a throwaway account of this run)
REDIRECT = "http://127.0.0.1:9/callback"  # never fetched: the 302 is read, not followed
APP_SCOPES = "openid fhirUser launch/patient patient/*.rs"
ASSERTION_TYPE = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
HIDDEN = re.compile(r'<input type="hidden" name="([^"]+)" value="([^"]*)">')


def s256(verifier: str) -> str:
    digest = hashlib.sha256(verifier.encode()).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def register(server: RunningServer, workdir: Path) -> ECKey:
    """The user, the public app and the backend service; the service's private key."""
    (workdir / "password").write_text(PASSWORD + "\n")
    checked(server, "users", "add", "bench-patient", "--password-file",
            str(workdir / "password"), "--fhir-user", "Patient/bench-1")  # fmt: skip
    checked(server, "clients", "add", "bench-app", "--public", "--redirect-uri", REDIRECT,
            "--scope", APP_SCOPES)  # fmt: skip
    key = ECKey.generate_key("P-384", {"kid": "bench-backend", "alg": "ES384"}, private=True)
    (workdir / "jwks.json").write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    checked(server, "clients", "add", "bench-backend", "--jwks-file",
            str(workdir / "jwks.json"), "--scope", "system/*.rs")  # fmt: skip
    return key


async def code_of(server: RunningServer, verifier: str) -> str | None:
    """Sign in and approve as a browser would (its own cookie jar); the code, or None."""
    params = {
        "response_type": "code",
        "client_id": "bench-app",
        "redirect_uri": REDIRECT,
        "scope": APP_SCOPES,
        "state": secrets.token_hex(8),
        "aud": server.fhir_base,
        "code_challenge": s256(verifier),
        "code_challenge_method": "S256",
    }
    async with httpx.AsyncClient(base_url=server.base_url, timeout=60) as browser:
        page = await browser.get("/auth/authorize", params=params)
        form = {**dict(HIDDEN.findall(page.text)), "username": "bench-patient",
                "password": PASSWORD}  # fmt: skip
        approval = await browser.post("/auth/authorize", data=form)
        decision = {**dict(HIDDEN.findall(approval.text)), "decision": "approve"}
        redirect = await browser.post("/auth/authorize", data=decision)
    if redirect.status_code != 302:
        return None
    codes = parse_qs(urlsplit(redirect.headers["location"]).query).get("code")
    return codes[0] if codes else None


async def exchange(
    http: httpx.AsyncClient, server: RunningServer, code: str, verifier: str
) -> bool:
    answer = await http.post(
        f"{server.base_url}/auth/token",
        data={"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
              "client_id": "bench-app", "code_verifier": verifier},
    )  # fmt: skip
    return answer.status_code == 200 and "access_token" in answer.json()


def assertions(key: ECKey, token_url: str, count: int) -> list[str]:
    now = int(time.time())
    signed = []
    for _ in range(count):
        claims = {"iss": "bench-backend", "sub": "bench-backend", "aud": token_url,
                  "iat": now, "exp": now + 280, "jti": secrets.token_hex(16)}  # fmt: skip
        header = {"alg": "ES384", "kid": key.kid, "typ": "JWT"}
        signed.append(jwt.encode(header, claims, key, algorithms=["ES384"]))
    return signed


async def measure_level(
    http: httpx.AsyncClient, server: RunningServer, key: ECKey, clients: int, flows: int, count: int
) -> list[Measurement]:
    token_url = f"{server.base_url}/auth/token"

    async def flow(i: int) -> bool:
        verifier = secrets.token_urlsafe(48)
        code = await code_of(server, verifier)
        return code is not None and await exchange(http, server, code, verifier)

    rows = [await measure("authorization_code flow", clients, flows, flow)]

    verifiers = [secrets.token_urlsafe(48) for _ in range(flows)]
    codes = [await code_of(server, verifier) for verifier in verifiers]

    async def redeem(i: int) -> bool:
        code = codes[i]
        return code is not None and await exchange(http, server, code, verifiers[i])

    rows.append(await measure("code exchange", clients, flows, redeem))

    signed = assertions(key, token_url, count)

    async def client_credentials(i: int) -> bool:
        answer = await http.post(token_url, data={
            "grant_type": "client_credentials", "scope": "system/*.rs",
            "client_assertion_type": ASSERTION_TYPE, "client_assertion": signed[i],
        })  # fmt: skip
        return answer.status_code == 200 and "access_token" in answer.json()

    rows.append(await measure("client_credentials", clients, count, client_credentials))
    return rows


async def measure_all(
    server: RunningServer, key: ECKey, flows: int, count: int, levels: list[int]
) -> list[Measurement]:
    rows: list[Measurement] = []
    async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=64)) as http:
        for clients in levels:
            rows += await measure_level(http, server, key, clients, flows, count)
    return rows


async def run(flows: int, count: int, levels: list[int]) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="medbridge-bench-tokens-"))
    store = EmbeddedMongo(workdir / "store")
    store.start()
    server = start_server(workdir / "server", store.uri, "bench", auth=True)
    try:
        key = register(server, workdir)
        rows = await measure_all(server, key, flows, count, levels)
    finally:
        server.stop()
        store.stop()
    print_table(rows)
    print("\n(req/s of the authorization_code flow = tokens/s; each token takes 4 requests)")
    rates = {f"{row.name} @{row.clients}": row.per_second for row in rows}
    extra = {"tokens_per_second": rates, "flows": flows, "assertions": count}
    print(f"\nwrote {write_results('smart_tokens', rows, extra)}")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--flows", type=int, default=40, help="authorization_code tokens")
    parser.add_argument("--assertions", type=int, default=300, help="client_credentials tokens")
    parser.add_argument("--clients", default="1,4", help="comma-separated concurrency levels")
    args = parser.parse_args()
    levels = [int(c) for c in args.clients.split(",")]
    asyncio.run(run(args.flows, args.assertions, levels))


if __name__ == "__main__":
    main()
