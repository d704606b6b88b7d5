"""Concurrent writers of one version: exactly one wins, the rest are told why."""

from __future__ import annotations

import asyncio

import httpx

from tests.integration.test_fhir_crud import FHIR_JSON, SYSTEM, create, patient
from tests.support.servers import RunningServer


async def test_concurrent_if_match_updates_have_one_winner(
    fhir: httpx.Client, server: RunningServer, unique: str
) -> None:
    body = create(fhir, patient(unique))
    url = f"{server.fhir_base}/Patient/{body['id']}"

    async def update(client: httpx.AsyncClient, n: int) -> int:
        changed = {**body, "name": [{"family": f"Writer{n}"}]}
        response = await client.put(url, json=changed, headers={**FHIR_JSON, "If-Match": 'W/"1"'})
        return response.status_code

    async with httpx.AsyncClient(timeout=30) as client:
        statuses = await asyncio.gather(*(update(client, n) for n in range(12)))
        final = (await client.get(url)).json()
        history = (await client.get(f"{url}/_history")).json()
    assert statuses.count(200) == 1, statuses
    assert set(statuses) - {200} <= {409, 412}
    assert final["meta"]["versionId"] == "2"
    assert history["total"] == 2


async def test_concurrent_blind_updates_never_share_a_version(
    fhir: httpx.Client, server: RunningServer, unique: str
) -> None:
    body = create(fhir, patient(unique))
    url = f"{server.fhir_base}/Patient/{body['id']}"

    async def update(client: httpx.AsyncClient, n: int) -> httpx.Response:
        changed = {**body, "name": [{"family": f"Writer{n}"}]}
        return await client.put(url, json=changed, headers=FHIR_JSON)

    async with httpx.AsyncClient(timeout=30) as client:
        responses = await asyncio.gather(*(update(client, n) for n in range(12)))
        history = (await client.get(f"{url}/_history", params={"_count": "100"})).json()
    winners = [r for r in responses if r.status_code == 200]
    assert {r.status_code for r in responses} <= {200, 409}
    versions = [r.json()["meta"]["versionId"] for r in winners]
    assert len(versions) == len(set(versions))
    assert history["total"] == 1 + len(winners)
    families = {e["resource"]["name"][0]["family"] for e in history["entry"][:-1]}
    assert families == {r.json()["name"][0]["family"] for r in winners}


async def test_racing_conditional_creates_make_one_resource(
    server: RunningServer, unique: str
) -> None:
    criteria = {"If-None-Exist": f"identifier={SYSTEM}|{unique}"}

    async def conditional_create(client: httpx.AsyncClient) -> httpx.Response:
        return await client.post(
            f"{server.fhir_base}/Patient", json=patient(unique), headers={**FHIR_JSON, **criteria}
        )

    async def conditional_update(client: httpx.AsyncClient) -> httpx.Response:
        return await client.put(
            f"{server.fhir_base}/Patient?identifier={SYSTEM}|{unique}",
            json=patient(unique),
            headers=FHIR_JSON,
        )

    async with httpx.AsyncClient(timeout=30) as client:
        creates = await asyncio.gather(*(conditional_create(client) for _ in range(8)))
        updates = await asyncio.gather(*(conditional_update(client) for _ in range(8)))
        found = (
            await client.get(
                f"{server.fhir_base}/Patient", params={"identifier": f"{SYSTEM}|{unique}"}
            )
        ).json()
    statuses = [r.status_code for r in creates]
    # exactly one creates; the others find it (200), or, if they kept losing the race,
    # are told to retry (409) — never a second resource
    assert statuses.count(201) == 1, statuses
    assert set(statuses) <= {200, 201, 409}, statuses
    assert len({r.json()["id"] for r in creates if r.status_code in (200, 201)}) == 1
    assert {r.status_code for r in updates} <= {200, 409}
    assert found["total"] == 1
