"""The parts of `Resource.meta` the server owns, whatever a client sends (issue 14,
"mass assignment"; docs/smart.md "What a client cannot set").

Security labels decide who may see a record, so a client that could write them could
hide a record from its own patient's consent or unlock one for itself: `meta.security`,
and `meta.tag` codings from the security-label code systems, are carried over from the
version being replaced (none on a create) and never taken from the body. A client that
round-trips what it read (labels included) therefore changes nothing, and one that adds
or removes labels is ignored rather than refused. `versionId` and `lastUpdated` are the
repository's (`Repository._write`), `id` on create the interaction's.
"""

from __future__ import annotations

import json
from functools import cache
from importlib import resources
from typing import Any

from fhir_server.body import loads_stored
from fhir_server.repository import Stored


@cache
def security_label_systems() -> frozenset[str]:
    text = (resources.files("fhir_server") / "security_labels.json").read_text("utf-8")
    return frozenset(json.loads(text)["systems"])


def own_meta(resource: dict[str, Any], previous: Stored | None) -> None:
    """Replace the body's security labels by those of `previous` (in place)."""
    kept = _labels(loads_stored(previous.raw)) if previous and previous.raw else ([], [])
    meta = resource.get("meta")
    meta = dict(meta) if isinstance(meta, dict) else {}
    meta.pop("security", None)
    tags = meta.get("tag")
    tags = [t for t in tags if not _is_label(t)] if isinstance(tags, list) else []
    security, label_tags = kept
    if security:
        meta["security"] = security
    if tags or label_tags:
        meta["tag"] = [*tags, *label_tags]
    else:
        meta.pop("tag", None)
    if meta:
        resource["meta"] = meta
    else:
        resource.pop("meta", None)


def _labels(stored: Any) -> tuple[list[Any], list[Any]]:
    meta = stored.get("meta") if isinstance(stored, dict) else None
    if not isinstance(meta, dict):
        return [], []
    security = meta.get("security")
    tags = meta.get("tag")
    return (
        list(security) if isinstance(security, list) else [],
        [t for t in tags if _is_label(t)] if isinstance(tags, list) else [],
    )


def _is_label(coding: Any) -> bool:
    return isinstance(coding, dict) and coding.get("system") in security_label_systems()
