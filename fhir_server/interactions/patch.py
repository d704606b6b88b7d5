"""patch: JSON Patch (RFC 6902) on /{type}/{id} or conditionally on /{type}?criteria."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

import jsonpatch
import jsonpointer

from access.budget import Budget
from access.errors import AccessError
from fhir_server.body import check_resource_size, check_within, dumps, loads, loads_stored
from fhir_server.exchange import FhirExchange, FhirResponse
from fhir_server.interactions.common import check_valid, checked_body, off_loop
from fhir_server.interactions.conditional import resolve_one
from fhir_server.interactions.update import check_if_match, store_version
from fhir_server.services import FhirServices


async def patch(exchange: FhirExchange, services: FhirServices) -> FhirResponse:
    route, request = exchange.route, exchange.request
    assert route is not None
    assert route.resource_type
    content_type = (request.header("content-type") or "").split(";")[0].strip().lower()
    if content_type != "application/json-patch+json":
        raise AccessError(
            "MB-1014",
            f"PATCH needs Content-Type application/json-patch+json, not {content_type or 'none'!r}",
        )
    budget = services.budget
    size = len(request.body or b"")
    check_resource_size(size, budget, "the JSON Patch document")
    operations = await off_loop(size, _operations, checked_body(request), budget)
    if route.resource_id is None:
        previous = await resolve_one(
            services.repository, route.resource_type, request.query, "patch"
        )
        reference = f"{route.resource_type}?{'&'.join(f'{k}={v}' for k, v in request.query)}"
    else:
        previous = await services.repository.read(route.resource_type, route.resource_id)
        reference = f"{route.resource_type}/{route.resource_id}"
    if previous is None:
        raise AccessError("MB-1002", f"{reference} is not known")
    if previous.raw is None:
        raise AccessError("MB-1003", f"{reference} was deleted")
    raw, resource_type, resource_id = previous.raw, route.resource_type, previous.id
    check_if_match(
        request.header("if-match"), previous, {"resourceType": resource_type, "id": resource_id}
    )
    bound = work_bound(len(raw) + size, operations, budget)
    patched = await off_loop(bound, _patched, raw, operations, budget, resource_type, resource_id)
    return await store_version(exchange, services, patched, previous)


def _operations(body: bytes, budget: Budget) -> list[Any]:
    operations = loads(body, budget)
    if not isinstance(operations, list):
        raise AccessError("MB-1005", "a JSON Patch document is a JSON array of operations")
    if len(operations) > budget.max_patch_operations:
        raise AccessError(
            "MB-1047",
            f"the JSON Patch has {len(operations)} operations, over the limit of "
            f"{budget.max_patch_operations} (max_patch_operations, "
            f"MEDBRIDGE_LIMIT_PATCH_OPERATIONS)",
        )
    return operations


def work_bound(size: int, operations: list[Any], budget: Budget) -> int:
    """The most bytes applying `operations` can handle: each `copy` may double the
    document (up to the resource cap), so a 1 KB patch of a 1 KB resource can mean
    12 MB of copying; sized by its input alone it ran on the event loop (issue 17, C3)."""
    copies = sum(1 for op in operations if isinstance(op, dict) and op.get("op") == "copy")
    return min(size << min(copies, 32), max(size, budget.max_resource_bytes))


def _patched(
    raw: bytes, operations: list[Any], budget: Budget, resource_type: str, resource_id: str
) -> dict[str, Any]:
    patched = apply_within(loads_stored(raw), operations, budget, len(raw))
    if patched.get("resourceType") != resource_type or patched.get("id") != resource_id:
        raise AccessError("MB-1017", "a patch may not change resourceType or id", expression="id")
    base64_seen: set[int] = set()
    check_within(patched, budget, base64_seen=base64_seen)
    check_valid(patched, base64_seen)
    return patched


def apply_within(
    resource: dict[str, Any], operations: list[Any], budget: Budget, size: int
) -> dict[str, Any]:
    """`resource` patched in place, one operation at a time, refusing the operation that
    would take it over `max_resource_bytes` before it is applied: each `copy` or `add`
    can double a document, so the size is bounded during the patch, not after it."""
    limit = budget.max_resource_bytes
    estimate = size  # serialized bytes, an upper bound: what is removed is not counted
    document: Any = resource
    for index, operation in enumerate(operations):
        estimate += _added_bytes(document, operation, index)
        if estimate > limit:
            estimate = len(dumps(document)) + _added_bytes(document, operation, index)
            if estimate > limit:
                raise AccessError(
                    "MB-1048",
                    f"JSON Patch operation {index} would make the resource about {estimate} "
                    f"bytes, over the limit of {limit} (max_resource_bytes, "
                    f"MEDBRIDGE_LIMIT_RESOURCE_BYTES)",
                )
        document = _apply_one(document, operation, index)
    if not isinstance(document, dict):
        raise AccessError("MB-1017", "the patch did not leave a resource")
    return document


def _added_bytes(document: Any, operation: Any, index: int) -> int:
    """How much one operation can grow the serialized document: what it adds (with the
    key it adds under) less what it removes; an upper bound within a few bytes."""
    if not isinstance(operation, dict):
        raise AccessError("MB-1017", f"JSON Patch operation {index} is not an object")
    op, path = operation.get("op"), operation.get("path")
    key_bytes = len(path) + 4 if isinstance(path, str) else 0
    if op == "add" and "value" in operation:
        return len(dumps(operation["value"])) + key_bytes
    if op == "replace" and "value" in operation:
        return len(dumps(operation["value"])) - _bytes_at(document, path, index)
    if op == "remove":
        return -_bytes_at(document, path, index)
    if op == "copy":
        return _bytes_at(document, operation.get("from"), index) + key_bytes
    return key_bytes  # move (the value only changes place), test


def _bytes_at(document: Any, pointer: Any, index: int) -> int:
    if not isinstance(pointer, str):
        raise AccessError("MB-1017", f"JSON Patch operation {index} needs a JSON Pointer")
    try:
        return len(dumps(jsonpointer.resolve_pointer(document, pointer)))
    except (jsonpointer.JsonPointerException, TypeError, KeyError, IndexError) as error:
        raise AccessError("MB-1017", f"JSON Patch operation {index}: {error}") from error


class _Add(jsonpatch.AddOperation):
    """`add` without jsonpatch's deep copy of the value: each value of a freshly parsed
    patch document is used once, so the document cannot share it with anything."""

    def _apply(self, obj: Any, journal: Any) -> Any:
        if "value" not in self.operation:
            raise jsonpatch.InvalidJsonPatch("The operation does not contain a 'value' member")
        # `_add` and `_from_pointer` are jsonpatch's own (1.47, pinned), not in its stubs
        return self._add(obj, self.operation["value"], journal)  # type: ignore[attr-defined]


class _Copy(jsonpatch.CopyOperation):
    """`copy` through serialized JSON instead of `copy.deepcopy` (~10 us per node): a
    document copied into itself near the resource cap is a million small containers,
    and a copy by the JSON scanner, written in C, takes a tenth of the time."""

    def _apply(self, obj: Any, journal: Any) -> Any:
        try:
            value = self._from_pointer().resolve(obj)  # type: ignore[attr-defined]
        except jsonpointer.JsonPointerException as error:
            raise jsonpatch.JsonPatchConflict(str(error)) from error
        add = jsonpatch.AddOperation({"op": "add", "path": self.location}, self.pointer_cls)
        return add._add(obj, loads_stored(dumps(value)), journal)  # type: ignore[attr-defined]


class _Patch(jsonpatch.JsonPatch):
    operations = MappingProxyType(dict(jsonpatch.JsonPatch.operations, add=_Add, copy=_Copy))


def _apply_one(document: Any, operation: dict[str, Any], index: int) -> Any:
    try:
        return _Patch([operation]).apply(document, in_place=True)
    except (
        jsonpatch.JsonPatchException,
        jsonpointer.JsonPointerException,
        TypeError,
        KeyError,
        IndexError,
        ValueError,
        AttributeError,
    ) as error:
        raise AccessError("MB-1017", f"JSON Patch operation {index} failed: {error}") from error
