"""The thin HTTP adapter: Starlette request -> FhirRequest -> router -> HTTP response."""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request
from starlette.responses import Response

from access.context import Door, RequestContext
from access.errors import AccessError
from access.loop_turns import joined
from fhir_server.errors import challenge, outcome
from fhir_server.exchange import FhirRequest, FhirResponse
from fhir_server.router import FhirRouter

FHIR_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
AUTHORIZATION = "authorization"


class BodyTooLarge(Exception):
    pass


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refusing to buffer more than `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise BodyTooLarge
        chunks.append(chunk)
    # a 32 MiB body's join held the loop 15-20 ms (issue 17, largest-fhir)
    return await joined(chunks, size)


def to_http(response: FhirResponse) -> Response:
    media = response.content_type
    if media.endswith("json"):
        media += "; charset=utf-8"
    headers = dict(response.headers)
    if response.body is None:
        return Response(None, response.status, headers)
    return Response(response.body, response.status, headers, media_type=media)


def error_response(error: AccessError) -> Response:
    return to_http(FhirResponse.of(error.status, outcome(error), challenge(error)))


def socket_base(request: Request) -> str:
    """`scheme://address:port` of the socket the request came in on, never its Host header
    (a client chooses that one: Host-built Location and Bundle links point anywhere)."""
    server = request.scope.get("server")
    scheme = request.scope.get("scheme", "http")
    if not server:
        return f"{scheme}://localhost"
    host, port = server[0], server[1]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}" if port is None else f"{scheme}://{host}:{port}"


def credentials_of(request: Request) -> str | None:
    """The Authorization header as sent, for `RequestContext.credentials`: the token
    travels there only, never in the request's headers, which hooks and logs may read."""
    return request.headers.get(AUTHORIZATION)


def request_of(request: Request, base_url: str, body: bytes | None = None) -> FhirRequest:
    """The framework-free request of a Starlette one; `base_url` is the public base of its
    door (configured, see `PublicBase`), from which every absolute URL we answer is built.
    Without the Authorization header: see `credentials_of`."""
    return FhirRequest(
        method=request.method,
        path=request.path_params.get("path", ""),
        query=request.query_params.multi_items(),
        headers={
            name: v.decode("latin-1")
            for k, v in request.scope["headers"]
            if (name := k.decode("latin-1").lower()) != AUTHORIZATION
        },
        body=body,
        base_url=base_url,
    )


class FhirEndpoint:
    """ASGI endpoint for everything under the FHIR base (`/fhir`)."""

    def __init__(
        self,
        router: FhirRouter,
        base_path: str,
        max_body_bytes: int,
        public_base: Callable[[], str] | None = None,
    ) -> None:
        self.router = router
        self.base_path = base_path
        self.max_body_bytes = max_body_bytes
        self.public_base = public_base

    async def handle(self, request: Request) -> Response:
        # below the base (a type, an instance, an operation) a body is one resource or
        # one JSON Patch: past the resource cap it is refused while it streams in, not
        # after 32 MiB were read for a refusal decided by the first 12 (issue 17, M4)
        resource_limit = self.router.services.budget.max_resource_bytes
        one_resource = request.path_params.get("path", "").strip("/") != ""
        limit = min(self.max_body_bytes, resource_limit) if one_resource else self.max_body_bytes
        try:
            body = await read_body(request, limit)
        except BodyTooLarge:
            if one_resource and limit == resource_limit:
                return error_response(
                    AccessError(
                        "MB-1046",
                        f"the request body is over the limit of {resource_limit} bytes for "
                        "one resource (max_resource_bytes, MEDBRIDGE_LIMIT_RESOURCE_BYTES)",
                    )
                )
            return error_response(
                AccessError(
                    "MB-1009",
                    f"request body over {self.max_body_bytes} bytes (max_body_bytes, "
                    "MEDBRIDGE_MAX_BODY_BYTES)",
                )
            )
        base = self.public_base() if self.public_base else socket_base(request)
        fhir_request = request_of(request, base + self.base_path, body or None)
        peer = request.client.host if request.client else None
        context = RequestContext(Door.FHIR, peer=peer, credentials=credentials_of(request))
        return to_http(await self.router.handle(fhir_request, context))
