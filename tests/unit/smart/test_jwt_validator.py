"""JwtValidator: real ES256/RS256 JWTs checked against a JWKS file, or against the JWKS an
OpenID Connect issuer publishes (a real HTTP server on loopback serves its discovery
document and keys; the clock is the only thing the tests set)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import orjson
import pytest
from joserfc import jwt
from joserfc.jwk import ECKey, OctKey, RSAKey

from smart.claims import TokenInvalid
from smart.jwt_validator import FileKeys, JwtRules, JwtValidator, RemoteKeys, key_url_is_safe

ISSUER = "https://issuer.test"
AUDIENCE = "https://medbridge.test/fhir"
NOW = 1_800_000_000


def rules(issuer: str = ISSUER, **overrides: Any) -> JwtRules:
    return JwtRules(issuer=issuer, audiences=lambda: {AUDIENCE}, **overrides)


def claims(**overrides: Any) -> dict[str, Any]:
    base = {
        "iss": ISSUER, "sub": "alice", "aud": AUDIENCE, "client_id": "portal",
        "scope": "launch/patient patient/*.rs", "exp": NOW + 300, "iat": NOW,
        "jti": "t1", "patient": "p1", "fhirUser": "Patient/p1",
    }  # fmt: skip
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def sign(key: ECKey | RSAKey, payload: dict[str, Any], alg: str = "ES256") -> str:
    return jwt.encode({"alg": alg, "kid": key.kid}, payload, key)


@pytest.fixture(scope="module")
def key() -> ECKey:
    return ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)


@pytest.fixture
def validator(key: ECKey, tmp_path: Path) -> JwtValidator:
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps({"keys": [key.as_dict(private=True)]}))
    return JwtValidator(rules(), FileKeys(path), clock=lambda: NOW)


async def test_a_valid_token_gives_its_claims(validator: JwtValidator, key: ECKey) -> None:
    got = await validator.validate(sign(key, claims()))
    assert got.issuer == ISSUER
    assert got.subject == "alice"
    assert got.client_id == "portal"
    assert got.scopes == frozenset({"launch/patient", "patient/*.rs"})
    assert got.patient == "p1"
    assert got.fhir_user == "Patient/p1"
    assert got.expires_at == NOW + 300
    assert got.token_id == "t1"


async def test_the_audience_may_be_one_of_a_list(validator: JwtValidator, key: ECKey) -> None:
    got = await validator.validate(sign(key, claims(aud=["https://other", AUDIENCE])))
    assert got.subject == "alice"


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({"exp": NOW - 61}, "expired"),
        ({"exp": None}, "exp"),
        ({"iss": "https://evil.test"}, "iss"),
        ({"iss": None}, "iss"),
        ({"aud": AUDIENCE + "/"}, "aud"),
        ({"aud": "https://medbridge.test"}, "aud"),
        ({"aud": None}, "aud"),
        ({"nbf": NOW + 600}, "nbf"),
        ({"sub": None}, "sub"),
    ],
)
async def test_claims_that_refuse(
    validator: JwtValidator, key: ECKey, changes: dict[str, Any], reason: str
) -> None:
    with pytest.raises(TokenInvalid) as refused:
        await validator.validate(sign(key, claims(**changes)))
    assert reason in refused.value.reason


async def test_clock_skew_is_allowed(validator: JwtValidator, key: ECKey) -> None:
    got = await validator.validate(sign(key, claims(exp=NOW - 30)))  # leeway 60 s
    assert got.subject == "alice"


async def test_signatures_that_refuse(validator: JwtValidator, key: ECKey) -> None:
    other = ECKey.generate_key("P-256", parameters={"kid": "k1"}, private=True)
    token = sign(key, claims())
    header, payload, signature = token.split(".")
    forged = jwt.encode({"alg": "ES256", "kid": "k1"}, claims(sub="root"), key).split(".")[1]
    secret = OctKey.import_key(orjson.dumps(key.as_dict(private=False)))
    for bad in (
        sign(other, claims()),  # another key, same kid
        f"{header}.{forged}.{signature}",  # payload swapped under the signature
        f"{header}.{payload}.",  # signature stripped
        jwt.encode({"alg": "HS256", "kid": "k1"}, claims(), secret),  # public key as secret
        "not-a-jwt",
        "a.b.c",
        "x" * 20_000,
    ):
        with pytest.raises(TokenInvalid):
            await validator.validate(bad)


async def test_alg_none_is_refused(validator: JwtValidator) -> None:
    import base64

    def part(data: dict[str, Any]) -> str:
        return base64.urlsafe_b64encode(orjson.dumps(data)).rstrip(b"=").decode()

    with pytest.raises(TokenInvalid):
        await validator.validate(part({"alg": "none", "kid": "k1"}) + "." + part(claims()) + ".")


async def test_scope_claim_name_and_list_form(key: ECKey, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    validator = JwtValidator(rules(scope_claim="scp"), FileKeys(path), clock=lambda: NOW)
    got = await validator.validate(sign(key, claims(scope=None, scp=["user/*.rs", "openid"])))
    assert got.scopes == frozenset({"user/*.rs", "openid"})


class Issuer:
    """A real OpenID Connect issuer's two documents on a loopback HTTP server."""

    def __init__(self) -> None:
        self.keys: list[dict[str, Any]] = []
        self.fetches = 0
        self.down = False  # answers 503, as an issuer in an outage
        self.jwks_uri: str | None = None  # another jwks_uri in the discovery document
        self.discovery: Any = None  # another discovery document altogether
        self.hold: threading.Event | None = None  # answers only once set: a slow issuer
        issuer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                if issuer.hold is not None:
                    issuer.hold.wait(10)
                if issuer.down:
                    issuer.fetches += 1
                    self.send_error(503)
                    return
                if self.path == "/.well-known/openid-configuration" and issuer.discovery:
                    body = issuer.discovery
                elif self.path == "/.well-known/openid-configuration":
                    body = {
                        "issuer": issuer.url,
                        "jwks_uri": issuer.jwks_uri or issuer.url + "/jwks",
                    }
                elif self.path == "/jwks":
                    issuer.fetches += 1
                    body = {"keys": issuer.keys}
                else:
                    self.send_error(404)
                    return
                data = orjson.dumps(body)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def issuer() -> Iterator[Issuer]:
    running = Issuer()
    yield running
    running.server.shutdown()
    running.server.server_close()


async def test_keys_from_discovery_and_rotation(issuer: Issuer) -> None:
    first = RSAKey.generate_key(2048, parameters={"kid": "r1"}, private=True)
    issuer.keys = [first.as_dict(private=False)]
    source = RemoteKeys(issuer.url, None, refresh_seconds=0.0)
    validator = JwtValidator(rules(issuer.url), source, clock=lambda: NOW)
    got = await validator.validate(sign(first, claims(iss=issuer.url), "RS256"))
    assert got.issuer == issuer.url
    # the issuer rotates its key: an unknown kid fetches the JWKS again
    second = RSAKey.generate_key(2048, parameters={"kid": "r2"}, private=True)
    issuer.keys = [second.as_dict(private=False)]
    got = await validator.validate(sign(second, claims(iss=issuer.url), "RS256"))
    assert got.subject == "alice"
    assert issuer.fetches == 2
    # the old key is gone: a new token signed with it is refused (one checked before
    # stays valid until it expires, minutes at most)
    with pytest.raises(TokenInvalid):
        await validator.validate(sign(first, claims(iss=issuer.url, jti="t2"), "RS256"))


async def test_unknown_kids_do_not_hammer_the_issuer(issuer: Issuer, key: ECKey) -> None:
    issuer.keys = [key.as_dict(private=False)]
    validator = JwtValidator(
        rules(issuer.url), RemoteKeys(issuer.url, issuer.url + "/jwks"), clock=lambda: NOW
    )
    stranger = ECKey.generate_key("P-256", parameters={"kid": "zz"}, private=True)
    for _ in range(5):
        with pytest.raises(TokenInvalid):
            await validator.validate(sign(stranger, claims(iss=issuer.url)))
    # the first load, then one refetch for the unknown kid; the others wait the refresh
    # interval (10 s)
    assert issuer.fetches == 2


async def test_the_first_rotation_after_a_start_is_not_delayed(issuer: Issuer) -> None:
    """The load at start does not count against the refresh interval: a key rotated
    seconds after the first request is fetched for its unknown kid at once."""
    now = [100.0]
    first = RSAKey.generate_key(2048, parameters={"kid": "r1"}, private=True)
    issuer.keys = [first.as_dict(private=False)]
    source = RemoteKeys(issuer.url, None, refresh_seconds=10.0, clock=lambda: now[0])
    validator = JwtValidator(rules(issuer.url), source, clock=lambda: NOW)
    await validator.validate(sign(first, claims(iss=issuer.url), "RS256"))
    second = RSAKey.generate_key(2048, parameters={"kid": "r2"}, private=True)
    third = RSAKey.generate_key(2048, parameters={"kid": "r3"}, private=True)
    issuer.keys = [second.as_dict(private=False), third.as_dict(private=False)]
    now[0] += 1
    await validator.validate(sign(second, claims(iss=issuer.url), "RS256"))
    assert issuer.fetches == 2
    issuer.keys = [(fourth := RSAKey.generate_key(2048, parameters={"kid": "r4"}, private=True))
                   .as_dict(private=False)]  # fmt: skip
    now[0] += 1  # within the interval of the last refetch: refused, no fetch
    with pytest.raises(TokenInvalid):
        await validator.validate(sign(fourth, claims(iss=issuer.url), "RS256"))
    assert issuer.fetches == 2
    now[0] += 10
    assert (await validator.validate(sign(fourth, claims(iss=issuer.url), "RS256"))).subject
    assert issuer.fetches == 3


async def test_a_withdrawn_key_stops_working_after_the_max_age(issuer: Issuer, key: ECKey) -> None:
    now = [100.0]
    issuer.keys = [key.as_dict(private=False)]
    source = RemoteKeys(issuer.url, None, max_age_seconds=300.0, clock=lambda: now[0])
    validator = JwtValidator(rules(issuer.url), source, clock=lambda: NOW)
    await validator.validate(sign(key, claims(iss=issuer.url, jti="a")))
    successor = ECKey.generate_key("P-256", parameters={"kid": "k2"}, private=True)
    issuer.keys = [successor.as_dict(private=False)]  # k1 withdrawn
    now[0] += 299
    assert (await validator.validate(sign(key, claims(iss=issuer.url, jti="b")))).subject
    now[0] += 1
    with pytest.raises(TokenInvalid):
        await validator.validate(sign(key, claims(iss=issuer.url, jti="c")))
    assert issuer.fetches == 3  # the start, the max age, then k1 as an unknown kid


async def test_an_issuer_in_an_outage_is_not_hammered(issuer: Issuer, key: ECKey) -> None:
    """Keys already known keep working while the issuer is down; a failed fetch is not
    tried again for the refresh interval, so requests do not queue behind it."""
    now = [100.0]
    issuer.keys = [key.as_dict(private=False)]
    source = RemoteKeys(issuer.url, None, refresh_seconds=10.0, max_age_seconds=300.0,
                        clock=lambda: now[0])  # fmt: skip
    validator = JwtValidator(rules(issuer.url), source, clock=lambda: NOW)
    await validator.validate(sign(key, claims(iss=issuer.url, jti="a")))
    issuer.down, issuer.fetches = True, 0
    now[0] += 400  # the keys are old: fetched again, which fails
    for jti in ("b", "c", "d"):
        assert (await validator.validate(sign(key, claims(iss=issuer.url, jti=jti)))).subject
    assert issuer.fetches == 1  # the discovery document, once

    cold = JwtValidator(
        rules(issuer.url), RemoteKeys(issuer.url, None, clock=lambda: now[0]), clock=lambda: NOW
    )
    for jti in ("e", "f", "g"):
        with pytest.raises(TokenInvalid, match="could not be fetched"):
            await cold.validate(sign(key, claims(iss=issuer.url, jti=jti)))
    assert issuer.fetches == 2


async def test_an_unreachable_issuer_is_an_invalid_token(key: ECKey) -> None:
    validator = JwtValidator(
        rules("http://127.0.0.1:9"), RemoteKeys("http://127.0.0.1:9", None), clock=time.time
    )
    with pytest.raises(TokenInvalid) as refused:
        await validator.validate(sign(key, claims()))
    assert "could not be fetched" in refused.value.reason


async def test_a_checked_token_still_expires(key: ECKey, tmp_path: Path) -> None:
    path = tmp_path / "jwks.json"
    path.write_bytes(orjson.dumps({"keys": [key.as_dict(private=False)]}))
    now = [float(NOW)]
    validator = JwtValidator(rules(), FileKeys(path), clock=lambda: now[0])
    token = sign(key, claims(exp=NOW + 10))
    assert (await validator.validate(token)).subject == "alice"
    assert (await validator.validate(token)).subject == "alice"  # the checked copy
    now[0] = NOW + 10 + 61  # past exp and the 60 s skew
    for _ in range(2):
        with pytest.raises(TokenInvalid, match="expired"):
            await validator.validate(token)


async def test_keys_over_plain_http_from_another_machine_are_not_fetched(
    issuer: Issuer, key: ECKey
) -> None:
    """The discovery document (loopback here) names a plain-HTTP jwks_uri elsewhere: a
    man in the middle there could serve keys of its own; nothing is fetched from it."""
    issuer.keys = [key.as_dict(private=False)]
    issuer.jwks_uri = "http://keys.example.invalid/jwks"
    validator = JwtValidator(rules(issuer.url), RemoteKeys(issuer.url, None), clock=lambda: NOW)
    with pytest.raises(TokenInvalid, match="could not be fetched"):
        await validator.validate(sign(key, claims(iss=issuer.url)))
    assert issuer.fetches == 0


@pytest.mark.parametrize(
    ("url", "safe"),
    [("https://idp.example/realms/h", True), ("http://127.0.0.1:8080/realms/h", True),
     ("http://localhost/jwks", True), ("http://[::1]:9/x", True),
     ("http://idp.example/realms/h", False), ("http://10.0.0.5/jwks", False),
     ("ftp://idp.example/jwks", False), ("https:///jwks", False)],
)  # fmt: skip
def test_key_url_is_safe(url: str, safe: bool) -> None:
    assert key_url_is_safe(url) is safe


async def test_encryption_keys_verify_nothing(issuer: Issuer) -> None:
    """A JWKS with an RSA-OAEP key beside the signing key, as Keycloak publishes: a
    token signed with the encryption key's private part is refused."""
    signing = RSAKey.generate_key(2048, parameters={"kid": "sig"}, private=True)
    encryption = RSAKey.generate_key(2048, parameters={"kid": "enc"}, private=True)
    issuer.keys = [
        signing.as_dict(private=False, use="sig", alg="RS256"),
        encryption.as_dict(private=False, use="enc"),  # some issuers name no alg
    ]
    validator = JwtValidator(rules(issuer.url), RemoteKeys(issuer.url, None), clock=lambda: NOW)
    assert (await validator.validate(sign(signing, claims(iss=issuer.url), "RS256"))).subject
    with pytest.raises(TokenInvalid):
        await validator.validate(sign(encryption, claims(iss=issuer.url, jti="e"), "RS256"))


async def test_known_keys_do_not_wait_for_a_slow_fetch(issuer: Issuer, key: ECKey) -> None:
    """The keys are old and the fetch that renews them hangs on a slow issuer: tokens of
    the keys held are checked meanwhile, not queued behind it."""
    now = [100.0]
    issuer.keys = [key.as_dict(private=False)]
    source = RemoteKeys(issuer.url, None, max_age_seconds=300.0, clock=lambda: now[0])
    validator = JwtValidator(rules(issuer.url), source, clock=lambda: NOW)
    await validator.validate(sign(key, claims(iss=issuer.url, jti="a")))
    issuer.hold = threading.Event()
    now[0] += 400
    renewing = asyncio.create_task(validator.validate(sign(key, claims(iss=issuer.url, jti="b"))))
    await asyncio.sleep(0)  # the renewing request runs until it waits on the fetch
    assert source._lock.locked()
    got = await validator.validate(sign(key, claims(iss=issuer.url, jti="c")))
    assert got.subject == "alice"
    assert not renewing.done()
    issuer.hold.set()
    assert (await renewing).subject == "alice"


@pytest.mark.parametrize(
    "discovery",
    [["a list"], {"issuer": "https://another.test", "jwks_uri": "x"}, {"issuer": 7},
     {"jwks_uri": ["http://127.0.0.1:1/jwks"]}, "text"],
)  # fmt: skip
async def test_a_discovery_document_of_any_shape_is_an_invalid_token(
    issuer: Issuer, key: ECKey, discovery: Any
) -> None:
    issuer.keys = [key.as_dict(private=False)]
    issuer.discovery = discovery
    validator = JwtValidator(rules(issuer.url), RemoteKeys(issuer.url, None), clock=lambda: NOW)
    with pytest.raises(TokenInvalid, match="could not be fetched"):
        await validator.validate(sign(key, claims(iss=issuer.url)))
