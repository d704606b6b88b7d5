"""Validate a resource: base FHIR R4 (the R4B models), then this server's profiles.

Both layers report `Issue`s whose `expression` names the element in FHIRPath form
(`Patient.name[0].given`), so a client sees which element is wrong, not a stack trace.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError as SchemaError
from pydantic import ValidationError as ModelError

from profiles.base64binary import is_base64
from profiles.models import model_for

PROFILE_BASE = "https://medbridge.example.org/fhir/StructureDefinition/"

# the element names base64Binary values have (Binary.data, Attachment.data, Signature.data,
# extensions); `SampledData.data` is a string, which the placeholder below also is
_BASE64_KEYS = frozenset({"data", "valueBase64Binary"})
# what the model sees instead of a checked base64 value: pydantic's `Base64Bytes` would
# decode the whole payload (6 MiB for an 8 MiB Binary) only to throw the bytes away
_CHECKED_BASE64 = "AAAA"


@dataclass(frozen=True, slots=True)
class Issue:
    """One problem found in a resource, in OperationOutcome terms."""

    code: str  # FHIR issue-type: required | value | structure | invalid | not-supported
    diagnostics: str
    expression: str


def validate(resource: dict[str, Any], base64_checked: Collection[int] = ()) -> list[Issue]:
    """Every problem with `resource`; an empty list means it may be stored. The strings
    whose `id` is in `base64_checked` were found base64 by `is_base64` already (the body
    parser checks them; they are not checked twice)."""
    resource_type = resource.get("resourceType")
    if not isinstance(resource_type, str) or model_for(resource_type) is None:
        return [Issue("structure", f"unknown resourceType {resource_type!r}", "resourceType")]
    issues = _base_issues(resource_type, resource, base64_checked)
    seen = {issue.expression for issue in issues}
    # the profile layer reads the raw JSON, so it can report alongside base errors
    issues += [i for i in _profile_issues(resource_type, resource) if i.expression not in seen]
    return issues


def profiles_for(resource_type: str) -> list[str]:
    """Canonical URLs of the server profiles every resource of this type must meet."""
    if _schema_for(resource_type) is None:
        return []
    return [PROFILE_BASE + _profile_ids()[resource_type]]


def _base_issues(
    resource_type: str, resource: dict[str, Any], base64_checked: Collection[int]
) -> list[Issue]:
    model = model_for(resource_type)
    assert model is not None
    try:
        model.model_validate(_payloads_checked(resource, base64_checked))
    except ModelError as error:
        return [_issue_from_model_error(resource_type, e) for e in error.errors()]
    except (ValueError, TypeError) as error:
        # fhir_core raises plain ValueErrors for some structural problems (a
        # resourceType that does not match the model); they carry no location.
        return [Issue("structure", str(error).splitlines()[0][:500], resource_type)]
    return []


def _payloads_checked(value: Any, checked: Collection[int]) -> Any:
    """`value` with every base64 value that `is_base64` accepts replaced by a short one
    (copies only the objects on the way to one; `value` itself is left as it is). A
    value it refuses stays for the model to judge and name, as before."""
    if isinstance(value, list):
        items = [_payloads_checked(item, checked) for item in value]
        return (
            items if any(new is not old for new, old in zip(items, value, strict=True)) else value
        )
    if not isinstance(value, dict):
        return value
    changed: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, str):
            if key not in _BASE64_KEYS or len(item) <= len(_CHECKED_BASE64):
                continue
            if id(item) in checked or is_base64(item):
                changed[key] = _CHECKED_BASE64
        elif isinstance(item, dict | list):
            new = _payloads_checked(item, checked)
            if new is not item:
                changed[key] = new
    return {**value, **changed} if changed else value


def _issue_from_model_error(resource_type: str, error: Any) -> Issue:
    location: Sequence[str | int] = error.get("loc", ())
    kind: str = error.get("type", "")
    message: str = error.get("msg", "invalid value")
    if kind == "missing":
        code = "required"
    elif kind == "extra_forbidden":
        code = "structure"
        message = "unknown element"
    else:
        code = "value"
    return Issue(code, message, fhirpath(resource_type, location))


def fhirpath(resource_type: str, location: Iterable[str | int]) -> str:
    """`("name", 0, "given")` -> `Patient.name[0].given`."""
    path = resource_type
    for part in location:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part.startswith("function-") or part.startswith("constrained-"):
            # pydantic names wrapped validators in the location; they are not elements
            continue
        else:
            path += f".{part}"
    return path


@cache
def _profile_ids() -> dict[str, str]:
    ids: dict[str, str] = {}
    folder = resources.files("profiles") / "structuredefinitions"
    for entry in folder.iterdir():
        if entry.name.endswith(".json"):
            definition = json.loads(entry.read_text(encoding="utf-8"))
            ids[definition["type"]] = definition["id"]
    return ids


@cache
def _schema_for(resource_type: str) -> Draft202012Validator | None:
    entry = resources.files("profiles") / "schemas" / f"{resource_type}.schema.json"
    if not entry.is_file():
        return None
    schema = json.loads(entry.read_text(encoding="utf-8"))
    Draft202012Validator.check_schema(schema)
    return Draft202012Validator(schema)


def _profile_issues(resource_type: str, resource: dict[str, Any]) -> Iterable[Issue]:
    validator = _schema_for(resource_type)
    if validator is None:
        return
    for error in sorted(validator.iter_errors(resource), key=lambda e: list(e.absolute_path)):
        yield from _issues_from_schema_error(resource_type, error, validator.schema)


def _issues_from_schema_error(resource_type: str, error: SchemaError, root: Any) -> Iterable[Issue]:
    path = fhirpath(resource_type, list(error.absolute_path))
    profile = f"profile {PROFILE_BASE}{_profile_ids()[resource_type]}"
    required = error.validator_value
    if (
        error.validator == "required"
        and isinstance(error.instance, dict)
        and isinstance(required, list)
    ):
        for name in required:
            if name not in error.instance:
                element = f"{path}.{name}"
                yield Issue("required", f"{element} is required by {profile}", element)
        return
    if error.validator == "anyOf" and not error.absolute_path:
        message = root.get("x-medbridge-anyOf-message", error.message)
        expression = root.get("x-medbridge-anyOf-expression", path)
        yield Issue("required", f"{message} ({profile})", expression)
        return
    schema = error.schema if isinstance(error.schema, dict) else {}
    message = schema.get("x-medbridge-message", error.message)
    yield Issue("value", f"{path}: {message} ({profile})", path)
