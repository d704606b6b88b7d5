"""Concurrent writers of one version: exactly one wins, the rest are told why."""

from __future__ import annotations

import asyncio

import httpx

from tests.integration.test_fhir_crud import FHIR_JSON, create, patient
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
