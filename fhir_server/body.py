"""Reading a FHIR JSON body within the request budget, keeping decimals as sent.

R4 JSON: an object has no duplicate keys, strings have no C0 controls other than TAB,
CR and LF and at most 1 MB, and a decimal keeps its precision (`1.50` is not `1.5`).
orjson turns decimals into floats and keeps the last of two equal keys, so bodies are
parsed by the standard library: numbers with a fraction or exponent become `Decimal`
(written back by `dumps` as the text they were sent as), and a duplicate key is caught
while its object is built. Then one walk checks every count and size of the budget,
before any validation or store work. Only writes pay for this: reads serve stored bytes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import orjson

from access.budget import Budget
from access.errors import AccessError
from profiles.base64binary import is_base64

# a JSON escape of a C0 control other than TAB (\u0009), LF (\u000a), CR (\u000d); raw
# controls inside strings are refused by the parser itself
_ESCAPED_CONTROL = re.compile(rb"\\u00(?:0[0-8bBcCeEfF]|1[0-9a-fA-F])")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
# base64Binary elements (Binary.data, Attachment.data, Signature.data, extensions) may be
# longer than a string; they stay under the resource limit
_BASE64_KEYS = frozenset({"data", "valueBase64Binary"})
_INT64_MIN, _UINT64_MAX = -(2**63), 2**64 - 1


class _DuplicateKey(ValueError):
    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return result


def _integer(text: str) -> int | Decimal:
    # orjson writes 64-bit integers only; a larger one is kept as its digits
    if len(text) < 19:
        return int(text)
    number = Decimal(text)
    return int(number) if _INT64_MIN <= number <= _UINT64_MAX else number


def _constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


#: bodies from this size are first looked at by orjson, for a refusal before the strict parse
EARLY_CHECK_BYTES = 64 * 1024

_DECODER = json.JSONDecoder(
    object_pairs_hook=_object, parse_float=Decimal, parse_int=_integer, parse_constant=_constant
)


def loads(body: bytes, budget: Budget, base64_seen: set[int] | None = None) -> Any:
    """The JSON value of a request body, refused (AccessError) if it breaks R4 or the budget.
    `base64_seen` gets the `id` of every base64 value checked here, so that validation
    (`profiles.validator.validate`) need not check those megabytes again."""
    # only a Bundle has entries to count early; a large Binary or Patient would pay
    # orjson's whole parse (~45 ms for 8 MiB) for nothing
    if len(body) >= EARLY_CHECK_BYTES and b'"Bundle"' in body:
        _refuse_early(body, budget)
    try:
        text = body.decode("utf-8")
        value = _DECODER.decode(text)
    except _DuplicateKey as error:
        raise AccessError(
            "MB-1040", f"the JSON object key {error.key[:100]!r} appears twice"
        ) from error
    except RecursionError as error:
        raise _too_deep(budget, "$") from error
    except (UnicodeDecodeError, ValueError) as error:
        raise AccessError("MB-1005", f"request body is not valid JSON: {error}") from error
    # the regex only where its literal start occurs: `in` is a vectorised search, ~0.5 ms
    # for 8 MiB against the regex's ~4 ms
    controls_possible = b"\\u00" in body and bool(_ESCAPED_CONTROL.search(body))
    check_within(value, budget, controls_possible, base64_seen)
    return value


def _refuse_early(body: bytes, budget: Budget) -> None:
    """Refuse a Bundle over the entry cap by orjson's view of it (C, about ten times the
    strict parser below, which calls back into Python for every object): a 100,000-entry
    transaction was refused only after the full strict parse (issue 17, M4). A body
    orjson cannot read (a big integer, deep nesting, bad JSON) goes on to the strict
    parse, which names the problem."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return
    _check_entries(value, budget)


def _check_entries(value: Any, budget: Budget) -> None:
    if isinstance(value, dict) and value.get("resourceType") == "Bundle":
        entries = value.get("entry")
        if isinstance(entries, list) and len(entries) > budget.max_bundle_entries:
            raise AccessError(
                "MB-1043",
                f"Bundle.entry has {len(entries)} entries, over the limit of "
                f"{budget.max_bundle_entries} (max_bundle_entries, "
                f"MEDBRIDGE_LIMIT_BUNDLE_ENTRIES)",
                expression="Bundle.entry",
            )


def loads_stored(raw: bytes) -> Any:
    """A stored resource, decimals as `Decimal` so that writing it back keeps them."""
    return json.loads(raw, parse_float=Decimal, parse_int=_integer)


def fragment(value: Any) -> Any:
    """orjson's `default`: a `Decimal` as the JSON text it was read from."""
    if isinstance(value, Decimal):
        return orjson.Fragment(str(value).encode())
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(value: Any) -> bytes:
    """JSON bytes of a parsed resource; each `Decimal` is written as its own text."""
    return orjson.dumps(value, default=fragment)


def check_within(
    value: Any,
    budget: Budget,
    controls_possible: bool = True,
    base64_seen: set[int] | None = None,
) -> None:
    """Refuse a parsed body over the budget: bundle entries, nesting, list items, string
    bytes, C0 controls. The error names the limit and the element (FHIRPath-like)."""
    _check_entries(value, budget)
    root = value.get("resourceType") if isinstance(value, dict) else None
    seen = set() if base64_seen is None else base64_seen
    for path, text in _strings(value, str(root) if isinstance(root, str) else "$", 1, budget, seen):
        _check_string(path, text, budget, controls_possible)


def _strings(
    value: Any, path: str, depth: int, budget: Budget, base64_seen: set[int]
) -> Iterator[tuple[str, str]]:
    """Every string below `value` with its path, refusing nesting and lists over the caps;
    a base64 value is not one (it may pass the string limit) but is added to `base64_seen`."""
    if depth > budget.max_json_depth:
        raise _too_deep(budget, path)
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, str):
                if key in _BASE64_KEYS and is_base64(item):
                    base64_seen.add(id(item))
                else:
                    yield f"{path}.{key}", item
            elif isinstance(item, dict | list):
                yield from _strings(item, f"{path}.{key}", depth + 1, budget, base64_seen)
        return
    if len(value) > budget.max_list_items:
        raise AccessError(
            "MB-1044",
            f"{path} has {len(value)} items, over the limit of {budget.max_list_items} "
            f"(max_list_items, MEDBRIDGE_LIMIT_LIST_ITEMS)",
            expression=path,
        )
    for index, item in enumerate(value):
        if isinstance(item, str):
            yield f"{path}[{index}]", item
        elif isinstance(item, dict | list):
            yield from _strings(item, f"{path}[{index}]", depth + 1, budget, base64_seen)


def _check_string(path: str, text: str, budget: Budget, controls_possible: bool) -> None:
    limit = budget.max_string_bytes
    if len(text) * 4 > limit and (len(text) > limit or len(text.encode()) > limit):
        raise AccessError(
            "MB-1042",
            f"{path} is a string of more than {limit} bytes (max_string_bytes, "
            f"MEDBRIDGE_LIMIT_STRING_BYTES; R4: strings SHALL NOT exceed 1 MB)",
            expression=path,
        )
    if controls_possible:
        found = _CONTROL.search(text)
        if found is not None:
            raise AccessError(
                "MB-1041",
                f"{path} contains the control character U+{ord(found.group()):04X} "
                f"(R4 allows only TAB, CR and LF below U+0020)",
                expression=path,
            )


def _too_deep(budget: Budget, path: str) -> AccessError:
    return AccessError(
        "MB-1045",
        f"the JSON body nests deeper than {budget.max_json_depth} levels at {path[:200]} "
        f"(max_json_depth, MEDBRIDGE_LIMIT_JSON_DEPTH)",
        expression=path[:200],
    )


def check_resource_size(size: int, budget: Budget, what: str = "the resource") -> None:
    """Refuse a resource body over `max_resource_bytes` (BSON ends at 16 MiB) with 413."""
    if size > budget.max_resource_bytes:
        raise AccessError(
            "MB-1046",
            f"{what} is {size} bytes, over the limit of {budget.max_resource_bytes} "
            f"(max_resource_bytes, MEDBRIDGE_LIMIT_RESOURCE_BYTES)",
        )
