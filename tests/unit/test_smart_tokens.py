"""smart/keys.py, smart/tokens.py, smart/grants.py on the embedded store: real joserfc
JWTs, signed and checked; revocation and replay seen through the store."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from typing import Any

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey
from pymongo import AsyncMongoClient

from fhir_server.repository import Repository
from smart.claims import TokenInvalid
from smart.grants import Grants
from smart.keys import SigningKeys
from smart.tokens import Grant, TokenService

ISSUER = "http://127.0.0.1:9/auth"
AUDIENCE = "http://127.0.0.1:9/fhir"


class Clock:
    """A clock the test moves: time is an input here, not something to wait for."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def repository(mongo: AsyncMongoClient[dict[str, Any]], database_name: str) -> Repository:
    return Repository(mongo, database_name)


@pytest.fixture
async def keys(repository: Repository) -> SigningKeys:
    signing = SigningKeys(repository)
    await signing.load()
    return signing


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def tokens(repository: Repository, keys: SigningKeys, clock: Clock) -> TokenService:
    service = TokenService(repository, keys, lambda: ISSUER, lambda: AUDIENCE, 3600, 30, clock)
    await service.ensure_indexes()
    return service


GRANT = Grant("app", "alice", "patient/*.rs openid fhirUser", patient="p1", fhir_user="Patient/p1")


def _header(token: str) -> dict[str, Any]:
    part = token.split(".")[0]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


async def test_first_start_generates_one_rs384_key_others_reuse_it(
    repository: Repository, keys: SigningKeys
) -> None:
    again = SigningKeys(repository, "ES384")  # a second process: the stored key wins
    await again.load()
    assert [k["kid"] for k in again.jwks()["keys"]] == [k["kid"] for k in keys.jwks()["keys"]]
    (public,) = keys.jwks()["keys"]
    assert public["kty"] == "RSA"
    assert public["alg"] == "RS384"
    assert "d" not in public  # the JWKS never shows the private half


async def test_rotation_newest_signs_older_still_verifies(
    keys: SigningKeys, tokens: TokenService
) -> None:
    before = await tokens.mint(GRANT)
    new_kid = await keys.add("ES384")
    after = await tokens.mint(GRANT)
    assert _header(after.token)["kid"] == new_kid
    assert _header(after.token)["alg"] == "ES384"
    assert len(keys.jwks()["keys"]) == 2
    assert (await tokens.validate(before.token)).subject == "alice"
    assert (await tokens.validate(after.token)).subject == "alice"


async def test_a_key_made_by_another_process_is_learned_from_its_first_token(
    repository: Repository, keys: SigningKeys, tokens: TokenService, clock: Clock
) -> None:
    other_keys = SigningKeys(repository)
    await other_keys.load()
    await other_keys.add("ES384")  # the other process rotates
    other = TokenService(repository, other_keys, lambda: ISSUER, lambda: AUDIENCE, clock=clock)
    signed_there = await other.mint(GRANT)
    assert not keys.knows(other_keys.signing.kid)
    assert (await tokens.validate(signed_there.token)).subject == "alice"
    assert keys.knows(other_keys.signing.kid)


async def test_minted_token_carries_the_grant(tokens: TokenService) -> None:
    minted = await tokens.mint(GRANT)
    claims = await tokens.validate(minted.token)
    assert claims.issuer == ISSUER
    assert claims.client_id == "app"
    assert claims.scopes == frozenset({"patient/*.rs", "openid", "fhirUser"})
    assert claims.patient == "p1"
    assert claims.fhir_user == "Patient/p1"
    assert claims.token_id == minted.token_id
    assert minted.expires_in == 3600
    assert _header(minted.token)["typ"] == "at+jwt"


async def test_backend_lifetime_is_capped_by_the_setting(tokens: TokenService) -> None:
    assert (await tokens.mint(GRANT, lifetime=300)).expires_in == 300
    assert (await tokens.mint(GRANT, lifetime=99_999)).expires_in == 3600


async def test_expiry_with_clock_skew(tokens: TokenService, clock: Clock) -> None:
    minted = await tokens.mint(GRANT)
    clock.now += 3600 + 20  # inside the 30 s skew
    await tokens.validate(minted.token)
    clock.now += 20
    with pytest.raises(TokenInvalid, match="expired"):
        await tokens.validate(minted.token)
    assert await tokens.introspect(minted.token) == {"active": False}


@pytest.mark.parametrize(
    ("issuer", "audience"),
    [
        (ISSUER, AUDIENCE + "/"),  # trailing-slash variant of the FHIR base
        (ISSUER, "http://127.0.0.1:9/other"),
        ("http://127.0.0.1:9/auth/", AUDIENCE),
        ("https://elsewhere.example/auth", AUDIENCE),
    ],
)
async def test_another_issuer_or_audience_is_refused(
    repository: Repository, keys: SigningKeys, tokens: TokenService, issuer: str, audience: str
) -> None:
    other = TokenService(repository, keys, lambda: issuer, lambda: audience)
    foreign = (await other.mint(GRANT)).token
    with pytest.raises(TokenInvalid, match="not for this server"):
        await tokens.validate(foreign)
    assert await tokens.introspect(foreign) == {"active": False}


async def test_tampered_and_foreign_signatures_are_refused(
    keys: SigningKeys, tokens: TokenService
) -> None:
    minted = (await tokens.mint(GRANT)).token
    header, payload, signature = minted.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["patient"] = "someone-else"
    tampered = f"{header}.{_b64(json.dumps(claims).encode())}.{signature}"
    with pytest.raises(TokenInvalid, match="signature"):
        await tokens.validate(tampered)
    # alg none
    none_header = _b64(json.dumps({"alg": "none", "typ": "at+jwt"}).encode())
    unsigned = f"{none_header}.{payload}."
    with pytest.raises(TokenInvalid):
        await tokens.validate(unsigned)
    # HS384 keyed with the server's public key (algorithm confusion), built by hand
    # because joserfc itself refuses to make one
    public = keys.signing.as_pem(private=False)
    confused_header = _b64(json.dumps({"alg": "HS384", "typ": "at+jwt"}).encode())
    signing_input = f"{confused_header}.{payload}".encode()
    mac = hmac.new(public, signing_input, hashlib.sha384).digest()
    confused = f"{confused_header}.{payload}.{_b64(mac)}"
    with pytest.raises(TokenInvalid):
        await tokens.validate(confused)
    # a well-formed token signed by another key under our kid
    stranger = RSAKey.generate_key(2048, private=True)
    forged = jwt.encode(
        {"alg": "RS384", "typ": "at+jwt", "kid": keys.signing.kid},
        claims,
        stranger,
        algorithms=["RS384"],
    )
    with pytest.raises(TokenInvalid):
        await tokens.validate(forged)
    for junk in ("", "abc", "a.b.c", "x" * 20_000):
        with pytest.raises(TokenInvalid):
            await tokens.validate(junk)
        assert await tokens.introspect(junk) == {"active": False}


async def test_revocation_takes_effect_on_the_next_validation(tokens: TokenService) -> None:
    minted = await tokens.mint(GRANT)
    active = await tokens.introspect(minted.token)
    assert active["active"] is True
    assert active["sub"] == "alice"
    assert active["patient"] == "p1"
    assert await tokens.revoke_access(minted.token) is True
    with pytest.raises(TokenInvalid, match="revoked"):
        await tokens.validate(minted.token)
    assert await tokens.introspect(minted.token) == {"active": False}
    assert await tokens.revoke_access("not-a-token") is False


async def test_a_code_is_single_use_and_its_replay_revokes_what_it_issued(
    repository: Repository, tokens: TokenService
) -> None:
    grants = Grants(repository, tokens)
    code = await grants.save_code(GRANT, "https://app.example/cb", "c" * 43, "S256", None)
    record = await grants.redeem_code(code, "app")
    assert record is not None
    assert record.redirect_uri == "https://app.example/cb"
    issued = await tokens.mint(record.grant)
    refresh = await grants.issue_refresh(record.grant)
    assert await grants.redeem_code(code, "app") is None  # replay
    with pytest.raises(TokenInvalid, match="revoked"):
        await tokens.validate(issued.token)
    assert await grants.redeem_refresh(refresh, "app") is None


async def test_a_code_of_another_client_or_expired_is_refused(
    repository: Repository, tokens: TokenService, clock: Clock
) -> None:
    grants = Grants(repository, tokens, clock=clock)
    code = await grants.save_code(GRANT, "https://app.example/cb", None, None, None)
    assert await grants.redeem_code(code, "other-app") is None
    late = await grants.save_code(GRANT, "https://app.example/cb", None, None, None)
    clock.now += 61
    assert await grants.redeem_code(late, "app") is None
    assert await grants.redeem_code("never-issued", "app") is None


async def test_refresh_rotates_and_reuse_revokes_the_family(
    repository: Repository, tokens: TokenService
) -> None:
    grants = Grants(repository, tokens)
    grant = await grants.open(GRANT)
    first = await grants.issue_refresh(grant)
    carried = await grants.redeem_refresh(first, "app")
    assert carried == grant
    assert carried is not None
    second = await grants.issue_refresh(carried)
    issued = await tokens.mint(carried)
    assert await grants.redeem_refresh(first, "app") is None  # the rotated one, replayed
    assert await grants.redeem_refresh(second, "app") is None  # its family is gone
    with pytest.raises(TokenInvalid, match="revoked"):
        await tokens.validate(issued.token)


async def test_refresh_of_another_client_and_revocation(
    repository: Repository, tokens: TokenService
) -> None:
    grants = Grants(repository, tokens)
    grant = await grants.open(GRANT)
    stolen = await grants.issue_refresh(grant)
    assert await grants.redeem_refresh(stolen, "other-app") is None
    kept = await grants.issue_refresh(grant)
    assert await grants.revoke_refresh(kept) is True
    assert await grants.redeem_refresh(kept, "app") is None
    assert await grants.revoke_refresh("unknown") is False


async def test_start_purges_what_expired_and_keeps_what_still_decides(
    repository: Repository, tokens: TokenService, clock: Clock
) -> None:
    from smart.authority import purge_expired

    old = await tokens.mint(GRANT, lifetime=60)
    await tokens.revoke_access(old.token)
    clock.now += 3600
    fresh = await tokens.mint(GRANT)
    await tokens.revoke_access(fresh.token)
    removed = await purge_expired(repository, clock.now)
    assert removed == 1
    assert await repository.db["smart_revoked"].find_one({"_id": old.token_id}) is None
    with pytest.raises(TokenInvalid, match="revoked"):
        await tokens.validate(fresh.token)


async def test_a_token_checked_before_is_still_refused_once_revoked_or_expired(
    tokens: TokenService, clock: Clock
) -> None:
    """The signature and claims of a token are checked once per process; its revocation
    and its expiry are judged on every validation all the same."""
    revoked, expiring = (await tokens.mint(GRANT)).token, (await tokens.mint(GRANT)).token
    for token in (revoked, expiring):
        assert (await tokens.validate(token)).subject == "alice"
        assert (await tokens.validate(token)).patient == "p1"
    assert await tokens.revoke_access(revoked) is True
    with pytest.raises(TokenInvalid, match="revoked"):
        await tokens.validate(revoked)
    clock.now += 3600 + 31  # past the 30 s skew
    with pytest.raises(TokenInvalid, match="expired"):
        await tokens.validate(expiring)
