"""What several interactions share: reading the body, headers of a stored version."""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from functools import lru_cache
from typing import Any, ParamSpec, TypeVar

from access.budget import Budget
from access.errors import AccessError
from fhir_server.body import check_resource_size, loads
from fhir_server.body_pool import sized
from fhir_server.errors import information_outcome
from fhir_server.exchange import FhirRequest, FhirResponse
from fhir_server.repository import Stored
from profiles.validator import validate

ID_PATTERN = re.compile(r"[A-Za-z0-9\-.]{1,64}")
P = ParamSpec("P")
T = TypeVar("T")
JSON_TYPES = ("application/fhir+json", "application/json", "application/json-patch+json")


def check_id(resource_id: str) -> str:
    if not ID_PATTERN.fullmatch(resource_id):
        raise AccessError(
            "MB-1018",
            f"{resource_id[:80]!r} is not a FHIR id ([A-Za-z0-9-.], 1-64 characters)",
            expression="id",
        )
    return resource_id


def checked_body(request: FhirRequest) -> bytes:
    """The body, once it is there and JSON; FHIR XML and other content types are refused (415)."""
    if not request.body:
        raise AccessError("MB-1019", "this interaction needs a request body")
    content_type = (request.header("content-type") or "application/fhir+json").lower()
    media = content_type.split(";", 1)[0].strip()
    if media not in JSON_TYPES and media not in ("", "*/*", "text/json"):
        raise AccessError(
            "MB-1014", f"Content-Type {media!r} is not supported; send application/fhir+json"
        )
    return request.body


def parse_body(request: FhirRequest, budget: Budget) -> Any:
    """The JSON body within the budget, parsed here (small bodies, tests)."""
    return loads(checked_body(request), budget)


async def parsed_body(request: FhirRequest, budget: Budget) -> Any:
    """The JSON body within the budget; a large one parsed on the body worker."""
    body = checked_body(request)
    return await off_loop(len(body), loads, body, budget)


async def off_loop(size: int, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`function(*args)`, on the FHIR body worker process when it handles `size` bytes
    from `body_pool.POOLED_BYTES` on (a thread would still hold the event loop's GIL)."""
    return await sized(size, function, *args, **kwargs)


async def resource_body(request: FhirRequest, resource_type: str, budget: Budget) -> dict[str, Any]:
    """The body as a resource of `resource_type`, validated (base FHIR + profiles)."""
    check_resource_size(len(request.body or b""), budget, "the request body")
    body = checked_body(request)
    return await off_loop(len(body), valid_resource, body, resource_type, budget)


def valid_resource(body: bytes, resource_type: str, budget: Budget) -> dict[str, Any]:
    """A body parsed within the budget and validated as a `resource_type`."""
    base64_seen: set[int] = set()
    resource = loads(body, budget, base64_seen)
    if not isinstance(resource, dict):
        raise AccessError("MB-1005", "request body must be a JSON object (a FHIR resource)")
    found = resource.get("resourceType")
    if found != resource_type:
        raise AccessError(
            "MB-1007",
            f"resourceType {found!r} does not match the URL's {resource_type}",
            expression="resourceType",
        )
    check_valid(resource, base64_seen)
    return resource


def check_valid(resource: dict[str, Any], base64_checked: Collection[int] = ()) -> None:
    issues = validate(resource, base64_checked)
    if issues:
        raise AccessError("MB-1006", issues[0].diagnostics, issues=issues)


def version_headers(request: FhirRequest, stored: Stored) -> dict[str, str]:
    location = f"{request.base_url}/{stored.resource_type}/{stored.id}/_history/{stored.version}"
    return {
        "ETag": f'W/"{stored.version}"',
        "Last-Modified": http_date(stored.last_updated_ms),
        "Location": location,
    }


def http_date(epoch_ms: int) -> str:
    return _http_date_of_second(epoch_ms // 1000)


# Formatting and parsing HTTP dates goes through `email.utils` (~3 us each), and one
# write's date is formatted and parsed again several times on its way out: remember a few.
@lru_cache(maxsize=256)
def _http_date_of_second(epoch_s: int) -> str:
    return format_datetime(datetime.fromtimestamp(epoch_s, UTC), usegmt=True)


@lru_cache(maxsize=256)
def parse_http_date(value: str) -> int | None:
    """Epoch milliseconds of an HTTP-date, or None when unparseable."""
    try:
        return int(parsedate_to_datetime(value).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


def parse_etag(value: str) -> int | None:
    """`W/"3"` or `"3"` -> 3."""
    text = value.strip()
    if text.startswith("W/"):
        text = text[2:]
    text = text.strip('"')
    return int(text) if text.isdigit() else None


def write_response(request: FhirRequest, stored: Stored, status: int, message: str) -> FhirResponse:
    """The answer to a write, as `Prefer: return=` asks (representation by default)."""
    headers = version_headers(request, stored)
    prefer = (request.header("prefer") or "").lower()
    if "return=minimal" in prefer:
        response = FhirResponse(status, None, headers)
    elif "return=operationoutcome" in prefer:
        response = FhirResponse.of(status, information_outcome(message), headers)
    else:
        response = FhirResponse(status, stored.raw, headers)
    response.last_updated = stored.last_updated
    return response
