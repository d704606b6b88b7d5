"""Every /admin call with the token is one access through the pipeline the doors share:
a hook sees it (door, action, event, operator) and may refuse it before the handler
runs; a refusal is the door's JSON error with the catalog code and HTTP status."""

from __future__ import annotations

from typing import Any

import httpx
from starlette.applications import Starlette
from starlette.routing import Route

from access.access import Access, Action
from access.context import Door
from access.errors import AccessError
from access.pipeline import Exchange, Pipeline, Stage
from medbridge.admin import AdminApi


def _shared() -> Pipeline[Any, Any]:
    async def act(exchange: Exchange[Any, Any]) -> None:
        return None

    return Pipeline(lambda e: None, act, lambda e, error: None)


async def _client(admin: AdminApi) -> httpx.AsyncClient:
    app = Starlette(routes=[Route("/admin/{name:path}", admin.handle, methods=["POST"])])
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://admin")


async def test_a_call_is_one_access_a_hook_may_refuse_before_the_handler_runs() -> None:
    shared = _shared()
    seen: list[Access] = []
    ran: list[dict[str, Any]] = []
    refuse = [False]

    async def authorize(exchange: Exchange[Any, Any]) -> None:
        assert exchange.access is not None
        seen.append(exchange.access)
        if refuse[0]:
            raise AccessError("MB-4001", "no admin today")

    async def handler(payload: dict[str, Any]) -> dict[str, Any]:
        ran.append(payload)
        return {"done": True}

    shared.intervene(Stage.AUTHORIZE, authorize, "test.authorize")
    admin = AdminApi(share_hooks_with=shared)
    admin.token = "t" * 43
    admin.add("hl7/replay", handler)
    admin.add("status", handler)
    headers = {"authorization": f"Bearer {admin.token}", "x-medbridge-operator": "ona"}
    async with await _client(admin) as client:
        answer = await client.post("/admin/hl7/replay", json={"failed": True}, headers=headers)
        assert answer.status_code == 200
        assert answer.json() == {"done": True}
        refuse[0] = True
        refused = await client.post("/admin/status", json={}, headers=headers)
        assert refused.status_code == 403
        assert refused.json() == {"error": "no admin today", "code": "MB-4001"}
        # no token: not an access at all, refused before any hook
        assert (await client.post("/admin/status", json={})).status_code == 401
    assert ran == [{"failed": True}]
    assert [(a.door, a.action, a.event) for a in seen] == [
        (Door.INTERNAL, Action.REPLAY, "hl7/replay"),
        (Door.INTERNAL, Action.ADMIN, "status"),
    ]
    assert {(a.actor.kind, a.actor.identifier) for a in seen} == {("operator", "ona")}


async def test_a_handler_refusing_its_payload_answers_400_with_the_code() -> None:
    admin = AdminApi(share_hooks_with=_shared())
    admin.token = "t" * 43

    async def handler(payload: dict[str, Any]) -> dict[str, Any]:
        raise ValueError("give ids")

    admin.add("hl7/replay", handler)
    async with await _client(admin) as client:
        answer = await client.post(
            "/admin/hl7/replay", json={}, headers={"authorization": f"Bearer {admin.token}"}
        )
    assert answer.status_code == 400
    assert answer.json() == {"error": "give ids", "code": "MB-1004"}
