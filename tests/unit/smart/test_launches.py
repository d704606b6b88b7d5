"""smart/launches.py and smart/patient_context.py on the embedded store: a launch is
found while fresh, spent once, bound to its client; a RelatedPerson's patient is the
one its stored resource names."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from pymongo import AsyncMongoClient

from fhir_server.repository import Repository
from smart.accounts import Account
from smart.grants import digest
from smart.launches import LAUNCHES, LaunchContext, Launches, LaunchRefused
from smart.patient_context import NoPatientContext, own_patient


class Clock:
    """A clock the test moves: expiry is an input here, not something to wait for."""

    def __init__(self) -> None:
        self.now = 1_900_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def repository(mongo: AsyncMongoClient[dict[str, Any]], database_name: str) -> Repository:
    return Repository(mongo, database_name)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def launches(repository: Repository, clock: Clock) -> Launches:
    return Launches(repository, 300, clock)


async def test_a_launch_carries_its_context_and_is_stored_only_as_a_digest(
    launches: Launches, repository: Repository
) -> None:
    value = await launches.create(LaunchContext("p1", "e1", "doc", None))
    assert len(value) >= 43
    found = await launches.find(value, "any-app")
    assert found == LaunchContext("p1", "e1", "doc", None)
    stored = await repository.db[LAUNCHES].find_one({"_id": digest(value)})
    assert stored is not None
    assert value not in orjson.dumps(stored, default=str).decode()


async def test_a_launch_is_spent_by_its_first_redemption(launches: Launches) -> None:
    value = await launches.create(LaunchContext("p1"))
    assert (await launches.redeem(value, "app")).patient == "p1"
    with pytest.raises(LaunchRefused, match="used already"):
        await launches.redeem(value, "app")
    with pytest.raises(LaunchRefused, match="used already"):
        await launches.find(value, "app")


async def test_an_expired_launch_is_refused(launches: Launches, clock: Clock) -> None:
    value = await launches.create(LaunchContext("p1"))
    clock.now += 299
    assert (await launches.find(value, "app")).patient == "p1"
    clock.now += 1
    with pytest.raises(LaunchRefused, match="expired"):
        await launches.redeem(value, "app")


async def test_a_bound_launch_is_unknown_to_other_clients_and_not_spent_by_them(
    launches: Launches,
) -> None:
    value = await launches.create(LaunchContext("p1", client_id="ehr-app"))
    with pytest.raises(LaunchRefused, match="unknown launch"):
        await launches.redeem(value, "other-app")
    assert (await launches.redeem(value, "ehr-app")).client_id == "ehr-app"


@pytest.mark.parametrize("value", ["", "nope", "x" * 5000])
async def test_unknown_values_are_refused(launches: Launches, value: str) -> None:
    with pytest.raises(LaunchRefused, match="unknown launch"):
        await launches.find(value, "app")


@pytest.mark.parametrize("bad", [{"patient": "../x"}, {"patient": "p", "encounter": "a b"}])
async def test_a_launch_names_fhir_ids(launches: Launches, bad: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="FHIR id"):
        await launches.create(LaunchContext(**bad))


@pytest.mark.parametrize(
    ("fhir_user", "patient"),
    [("Patient/p7", "p7"), ("Practitioner/d1", None)],
)
async def test_own_patient_of_patients_and_practitioners(
    repository: Repository, fhir_user: str, patient: str | None
) -> None:
    assert await own_patient(Account("u", fhir_user), repository) == patient


async def test_a_related_persons_patient_is_the_one_its_resource_names(
    repository: Repository,
) -> None:
    mum = Account("mum", "RelatedPerson/rp1")
    with pytest.raises(NoPatientContext, match="no RelatedPerson/rp1"):
        await own_patient(mum, repository)
    resource = {"resourceType": "RelatedPerson", "id": "rp1",
                "patient": {"reference": "Patient/child-1"}}  # fmt: skip
    await repository.create(resource, "rp1")
    assert await own_patient(mum, repository) == "child-1"


@pytest.mark.parametrize(
    "patient", [None, {"reference": "Group/g1"}, {"display": "child"}, "Patient/p"]
)
async def test_a_related_person_without_a_patient_reference_gives_no_context(
    repository: Repository, patient: Any
) -> None:
    resource: dict[str, Any] = {"resourceType": "RelatedPerson", "id": "rp2"}
    if patient is not None:
        resource["patient"] = patient
    await repository.create(resource, "rp2")
    with pytest.raises(NoPatientContext, match="names no Patient"):
        await own_patient(Account("dad", "RelatedPerson/rp2"), repository)
