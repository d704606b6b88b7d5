"""`_summary` and `_elements`: cut a stored resource down, marked SUBSETTED as the spec asks."""

from __future__ import annotations

from functools import cache
from typing import Any

import orjson

from profiles.models import model_for

SUBSETTED = {
    "system": "http://terminology.hl7.org/CodeSystem/v3-ObservationValue",
    "code": "SUBSETTED",
}
ALWAYS = frozenset({"resourceType", "id", "meta"})


def shape(raw: bytes, summary: str | None, elements: tuple[str, ...]) -> orjson.Fragment:
    """The bytes to serve for a match: stored bytes untouched unless a subset is asked."""
    if summary in (None, "false") and not elements:
        return orjson.Fragment(raw)
    resource: dict[str, Any] = orjson.loads(raw)
    if summary == "data":
        resource.pop("text", None)
    elif summary == "text":
        resource = {k: v for k, v in resource.items() if k in ALWAYS or k == "text"}
    elif summary == "true":
        keep = summary_elements(resource["resourceType"])
        resource = {k: v for k, v in resource.items() if k in keep or k in ALWAYS}
    elif elements:
        resource = {k: v for k, v in resource.items() if k in ALWAYS or k in elements}
    meta = dict(resource.get("meta") or {})
    meta["tag"] = [*meta.get("tag", []), SUBSETTED]
    resource["meta"] = meta
    return orjson.Fragment(orjson.dumps(resource))


@cache
def summary_elements(resource_type: str) -> frozenset[str]:
    """Top-level elements marked isSummary in the R4 definition of `resource_type`."""
    model = model_for(resource_type)
    if model is None:
        return frozenset()
    return frozenset(
        field.alias or name
        for name, field in model.model_fields.items()
        if isinstance(field.json_schema_extra, dict)
        and field.json_schema_extra.get("summary_element_property")
    )
