"""`/admin/{name}`: operations the admin commands run inside the running server.

Packages offer plain async handlers (JSON object in, JSON object out); the composition
root registers them here, so `hl7_bridge` and `imaging` never import this package. Every
call must carry the admin token of `server.json` (medbridge/running.py). A call with the
token is one access of the local operator (`Action.ADMIN`, or `REPLAY` for a replay)
through a pipeline sharing the router's hooks, so an authorize hook can refuse it before
the handler reads or writes anything, and an audit hook sees every call.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from access.access import Access, Action
from access.context import Actor, Door, RequestContext
from access.errors import AccessError
from access.pipeline import Exchange, Pipeline

AdminHandler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
# the operation names whose access has an action of its own; every other one is ADMIN
ACTIONS: dict[str, Action] = {"hl7/replay": Action.REPLAY}
# who the command says runs it (`medbridge.running.call_admin`): the token proves the
# operator of the data directory, this names which one for the audit
OPERATOR_HEADER = "x-medbridge-operator"


@dataclass(frozen=True, slots=True)
class AdminCall:
    name: str
    payload: dict[str, Any]


@dataclass(frozen=True, slots=True)
class AdminAnswer:
    body: dict[str, Any]
    status: int = 200


AdminExchange = Exchange[AdminCall, AdminAnswer]


class AdminApi:
    def __init__(self, share_hooks_with: Pipeline[Any, Any] | None = None) -> None:
        self.token = ""  # set once server.json is written; empty refuses every call
        self.handlers: dict[str, AdminHandler] = {}
        self.pipeline: Pipeline[AdminCall, AdminAnswer] = Pipeline(
            _describe, self._act, _refused, share_hooks_with=share_hooks_with
        )

    def add(self, name: str, handler: AdminHandler) -> None:
        self.handlers[name] = handler

    async def handle(self, request: Request) -> Response:
        offered = request.headers.get("authorization", "")
        if not self.token or not hmac.compare_digest(offered, f"Bearer {self.token}"):
            return _answer(AdminAnswer({"error": "admin token missing or wrong"}, 401))
        name = request.path_params["name"]
        if name not in self.handlers:
            return _answer(AdminAnswer({"error": "no such admin operation"}, 404))
        try:
            payload = orjson.loads(await request.body() or b"{}")
        except orjson.JSONDecodeError:
            return _answer(AdminAnswer({"error": "the body is not JSON"}, 400))
        if not isinstance(payload, dict):
            return _answer(AdminAnswer({"error": "the body is not a JSON object"}, 400))
        claimed = request.headers.get(OPERATOR_HEADER, "")[:64] or "admin-token"
        context = RequestContext(
            Door.INTERNAL,
            actor=Actor("operator", claimed, display="holder of the admin token"),
            peer=request.client.host if request.client else None,
        )
        return _answer(await self.pipeline.handle(Exchange(AdminCall(name, payload), context)))

    async def _act(self, exchange: AdminExchange) -> AdminAnswer:
        call = exchange.request
        try:
            return AdminAnswer(await self.handlers[call.name](call.payload))
        except (KeyError, ValueError) as error:
            raise AccessError("MB-1004", str(error)) from error


def _describe(exchange: AdminExchange) -> None:
    context, name = exchange.context, exchange.request.name
    exchange.access = Access(
        Door.INTERNAL,
        ACTIONS.get(name, Action.ADMIN),
        context.actor,
        event=name,
        client_address=context.peer,
        request_id=context.request_id,
    )


def _refused(exchange: AdminExchange, error: AccessError) -> AdminAnswer:
    """The door's JSON error: the catalog code beside what went wrong."""
    return AdminAnswer({"error": error.diagnostics, "code": error.code}, error.status)


def _answer(answer: AdminAnswer) -> Response:
    return Response(orjson.dumps(answer.body), answer.status, media_type="application/json")
