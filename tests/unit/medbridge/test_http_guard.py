"""HttpGuard alone, over plain ASGI messages: HEAD, Host, CORS and the safety headers."""

from __future__ import annotations

from typing import Any

from starlette.types import Message, Receive, Scope, Send

from medbridge.http_guard import HttpGuard

ORIGIN = "https://portal.example"


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    """Answers GET with a body and records the method it saw."""
    body = f"seen {scope['method']}".encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def call(method: str, headers: list[tuple[bytes, bytes]]) -> list[Message]:
    scope: dict[str, Any] = {"type": "http", "method": method, "path": "/fhir/x",
                             "headers": headers, "query_string": b""}  # fmt: skip
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    await HttpGuard(app, [ORIGIN])(scope, receive, send)
    return sent


def header(messages: list[Message], name: bytes) -> bytes | None:
    return dict(messages[0]["headers"]).get(name)


async def test_head_runs_get_without_a_body() -> None:
    got = await call("GET", [(b"host", b"a")])
    head = await call("HEAD", [(b"host", b"a")])
    assert got[1]["body"] == b"seen GET"
    assert head[1]["body"] == b""
    assert header(head, b"content-length") == header(got, b"content-length") == b"8"


async def test_every_answer_is_no_store_and_nosniff() -> None:
    answer = await call("GET", [(b"host", b"a")])
    assert header(answer, b"cache-control") == b"no-store"
    assert header(answer, b"x-content-type-options") == b"nosniff"
    assert header(answer, b"access-control-allow-origin") is None


async def test_two_host_headers_are_refused() -> None:
    answer = await call("GET", [(b"host", b"a"), (b"host", b"b")])
    assert answer[0]["status"] == 400
    assert b"MB-1062" in b"".join(m.get("body", b"") for m in answer)


async def test_cors_only_for_listed_origins() -> None:
    ask = [(b"access-control-request-method", b"PUT")]
    allowed = await call("OPTIONS", [(b"origin", ORIGIN.encode()), *ask])
    assert allowed[0]["status"] == 204
    assert header(allowed, b"access-control-allow-origin") == ORIGIN.encode()
    refused = await call("OPTIONS", [(b"origin", b"https://evil.example"), *ask])
    assert refused[0]["status"] == 403
    read = await call("GET", [(b"origin", ORIGIN.encode())])
    assert header(read, b"access-control-allow-origin") == ORIGIN.encode()
