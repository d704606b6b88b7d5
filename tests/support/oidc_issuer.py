"""A real external OpenID Connect issuer for the tests: the npm package `oidc-provider`.

`tests/oidc/provider.mjs` configures it in a few lines: one confidential client
(`client_credentials`), JWT access tokens (RFC 9068) for its audiences (the first is the
default), signed with an RSA key (or, asked, a P-256 key) and kids it generates at start,
so two issuers started side by side have different keys, and a restart on the same port
is a key rotation. The token request may add `patient` and `fhir_user` claims, as a
SMART-aware issuer would, and a `ttl` in seconds.
`./run test` installs it (`npm ci` in tests/oidc); node and npm come from the machine.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import httpx

from medbridge.embedded_mongo import free_port

HERE = Path(__file__).resolve().parent.parent / "oidc"
CLIENT_ID = "medbridge-test"
CLIENT_SECRET = "medbridge-test-secret"  # the test issuer's own client


class IssuerUnavailable(RuntimeError):
    """node or the installed package is missing; the message says how to install it."""


@dataclass
class OidcIssuer:
    process: subprocess.Popen[bytes]
    issuer: str
    audience: str
    kid: str
    port: int

    @property
    def discovery_url(self) -> str:
        return f"{self.issuer}/.well-known/openid-configuration"

    def token(
        self,
        scope: str,
        *,
        patient: str | None = None,
        fhir_user: str | None = None,
        audience: str | None = None,
        ttl: int | None = None,
        algorithm: str = "RS256",
    ) -> str:
        """An access token from the issuer's own token endpoint (client_credentials), for
        `audience` (one the issuer was started with; default its first) valid `ttl` s,
        signed with its RSA key (RS256) or, asked for ES256, its P-256 key."""
        form = {
            "grant_type": "client_credentials",
            "scope": scope,
            "resource": audience or self.audience,
        }
        if patient:
            form["patient"] = patient
        if fhir_user:
            form["fhir_user"] = fhir_user
        if ttl is not None:
            form["ttl"] = str(ttl)
        if algorithm != "RS256":
            form["alg"] = algorithm
        answer = httpx.post(
            f"{self.issuer}/token", data=form, auth=(CLIENT_ID, CLIENT_SECRET), timeout=10
        )
        answer.raise_for_status()
        token: str = answer.json()["access_token"]
        return token

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        if self.process.stdout is not None:
            self.process.stdout.close()


def start_issuer(
    audience: str, *other_audiences: str, port: int | None = None, timeout: float = 30.0
) -> OidcIssuer:
    """Start `oidc-provider` on `port` (default a free loopback port), issuing tokens for
    `audience` and, when asked by name, for `other_audiences`."""
    node = shutil.which("node")
    if node is None:
        raise IssuerUnavailable("node is not on PATH (the tests' OpenID Connect issuer)")
    if not (HERE / "node_modules" / "oidc-provider").is_dir():
        raise IssuerUnavailable(f"run `npm ci` in {HERE} (./run test does it)")
    port = port or free_port()
    process = subprocess.Popen(
        [node, str(HERE / "provider.mjs"), str(port), audience, *other_audiences],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        cwd=HERE,
    )
    assert process.stdout is not None
    # the script prints one JSON line once it listens; node exits with an error otherwise
    line = process.stdout.readline()
    if not line:
        process.wait(timeout)
        process.stdout.close()
        raise IssuerUnavailable(f"oidc-provider exited with {process.returncode}")
    started = json.loads(line)
    return OidcIssuer(process, started["issuer"], started["audience"], started["kid"], port)
