"""smart/accounts.py and smart/clients.py on the embedded store."""

from __future__ import annotations

from typing import Any

import pytest
from joserfc.jwk import ECKey, RSAKey
from pymongo import AsyncMongoClient

from fhir_server.repository import Repository
from smart.accounts import AccountLocked, Accounts
from smart.clients import Clients
from smart.hashing import N, hash_secret, verify_secret


class Clock:
    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def repository(mongo: AsyncMongoClient[dict[str, Any]], database_name: str) -> Repository:
    return Repository(mongo, database_name)


def test_scrypt_hash_is_salted_and_verifies() -> None:
    one, two = hash_secret("correct horse"), hash_secret("correct horse")
    assert one["hash"] != two["hash"]  # salted
    assert one["n"] == N
    assert "correct horse" not in str(one)
    assert verify_secret("correct horse", one)
    assert not verify_secret("correct horsE", one)
    assert not verify_secret("x" * 5000, one)  # refused before hashing


async def test_user_signs_in_and_names_its_fhir_user(repository: Repository) -> None:
    accounts = Accounts(repository)
    await accounts.add("alice", "s3cret-password", "Patient/p1")
    account = await accounts.authenticate("alice", "s3cret-password")
    assert account is not None
    assert account.fhir_user == "Patient/p1"
    assert account.patient == "p1"
    assert await accounts.authenticate("alice", "wrong-password") is None
    assert await accounts.authenticate("nobody", "s3cret-password") is None
    stored = await repository.db["smart_users"].find_one({"_id": "alice"})
    assert stored is not None
    assert "s3cret-password" not in str(stored)


async def test_lockout_after_failures_then_released(repository: Repository) -> None:
    clock = Clock()
    accounts = Accounts(repository, lockout_failures=3, lockout_minutes=10, clock=clock)
    await accounts.add("bob", "bob-password", "Practitioner/d1")
    for _ in range(3):
        assert await accounts.authenticate("bob", "guess-guess") is None
    with pytest.raises(AccountLocked):
        await accounts.authenticate("bob", "bob-password")  # even the right one
    clock.now += 601
    account = await accounts.authenticate("bob", "bob-password")
    assert account is not None
    assert account.patient is None


async def test_a_success_resets_the_failure_count(repository: Repository) -> None:
    accounts = Accounts(repository, lockout_failures=3)
    await accounts.add("carol", "carol-password", "RelatedPerson/r1")
    for _ in range(2):
        await accounts.authenticate("carol", "nope-nope")
    assert await accounts.authenticate("carol", "carol-password") is not None
    for _ in range(2):
        await accounts.authenticate("carol", "nope-nope")
    assert await accounts.authenticate("carol", "carol-password") is not None


@pytest.mark.parametrize(
    ("name", "password", "fhir_user", "complaint"),
    [
        ("dave", "dave-password", "Observation/1", "fhir user"),
        ("dave", "dave-password", "Patient/", "fhir user"),
        ("dave", "short", "Patient/1", "password"),
        ("da ve", "dave-password", "Patient/1", "user name"),
    ],
)
async def test_bad_account_values_are_refused(
    repository: Repository, name: str, password: str, fhir_user: str, complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        await Accounts(repository).add(name, password, fhir_user)


async def test_a_user_name_is_taken_once(repository: Repository) -> None:
    accounts = Accounts(repository)
    await accounts.add("erin", "erin-password", "Patient/e")
    with pytest.raises(ValueError, match="exists"):
        await accounts.add("erin", "other-password", "Patient/f")


async def test_three_kinds_of_client(repository: Repository) -> None:
    clients = Clients(repository)
    public = await clients.add("portal", ["https://portal.example/cb"], "patient/*.rs openid")
    assert public.kind == "public"
    assert public.auth_methods == ("none",)
    secret = "a-long-client-secret-value"
    await clients.add("ehr", ["https://ehr.example/cb"], "user/*.cruds", secret=secret)
    ehr = await clients.get("ehr")
    assert ehr is not None
    assert ehr.kind == "confidential-symmetric"
    assert ehr.check_secret(secret)
    assert not ehr.check_secret(secret + "x")
    assert secret not in str(await repository.db["smart_clients"].find_one({"_id": "ehr"}))
    jwks = {"keys": [ECKey.generate_key("P-384", {"kid": "k1"}).as_dict(private=False)]}
    await clients.add("backend", [], "system/*.rs", jwks=jwks)
    backend = await clients.get("backend")
    assert backend is not None
    assert backend.auth_methods == ("private_key_jwt",)
    assert backend.jwks == jwks
    await clients.add("remote", [], "system/*.rs", jwks_url="https://backend.example/jwks")
    assert (await clients.get("remote")) is not None
    assert await clients.get("nobody") is None
    assert await clients.get("bad id with spaces") is None


@pytest.mark.parametrize(
    ("uris", "extra", "complaint"),
    [
        (["http://app.example/cb"], {}, "https"),
        (["https://app.example/cb#frag"], {}, "fragment"),
        (["/relative"], {}, "absolute"),
        ([], {}, "redirect URI"),
        (["https://a.example/cb"], {"secret": "short"}, "16"),
        (["https://a.example/cb"], {"secret": "x" * 20, "jwks_url": "https://j"}, "at most one"),
        ([], {"jwks_url": "http://jwks.example/keys"}, "https"),
        ([], {"jwks": {"keys": []}}, "no keys"),
        ([], {"jwks": "private"}, "no keys"),
    ],
)
async def test_bad_client_registrations_are_refused(
    repository: Repository, uris: list[str], extra: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValueError, match=complaint):
        await Clients(repository).add("app", uris, "patient/*.rs", **extra)


async def test_a_private_key_is_never_registered(repository: Repository) -> None:
    private = RSAKey.generate_key(2048, {"kid": "k"}, private=True).as_dict(private=True)
    with pytest.raises(ValueError, match="private key"):
        await Clients(repository).add("app", [], "system/*.rs", jwks={"keys": [private]})
