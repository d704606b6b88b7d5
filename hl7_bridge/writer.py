"""Apply a translation through the FHIR router, the same pipeline as the REST API.

Upserts find the current resource by identifier (search), merge the message into it
and PUT it back with If-Match, retrying on a concurrent change; a new resource gets an
id derived from its key identifier, so two processes creating the same patient at once
collide on one id instead of making two patients. Resources a message leaves unchanged
are not rewritten.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson

from fhir_server.context import RequestContext
from fhir_server.errors import FhirError
from fhir_server.exchange import FhirRequest, FhirResponse
from fhir_server.router import FhirRouter
from hl7_bridge.errors import Hl7Error
from mappings.hl7v2.translate import Merge, Translation, Upsert

Resource = dict[str, Any]
ID_NAMESPACE = uuid.UUID("6f1e2a8c-3c1e-4b7e-9a57-0d3c2b1a4e5f")
RETRIES = 6
UNION_ELEMENTS = ("identifier", "link")
# Types whose `subject`/`patient` reference follows a merged patient (ADT^A40).
REPOINT = ("Encounter", "ServiceRequest", "ImagingStudy", "DiagnosticReport", "Observation")


class Writer:
    def __init__(self, router: FhirRouter, context: RequestContext) -> None:
        self.router = router
        self.context = context
        self.resolved: dict[str, str] = {}  # "Type?criteria" -> "Type/id"
        self.references: list[str] = []  # "Type/id/_history/n" written

    async def apply(self, translation: Translation) -> list[str]:
        for action in translation.actions:
            if isinstance(action, Upsert):
                await self._upsert(action)
            else:
                await self._merge(action)
        return self.references

    # upsert ---------------------------------------------------------------------

    async def _upsert(self, action: Upsert) -> str:
        resource_type = action.resource["resourceType"]
        conditional = f"{resource_type}?{action.criteria}"
        resource = await self._resolve_references(action.resource)
        for _ in range(RETRIES):
            current = await self._find(resource_type, action.criteria, action.location)
            if current is None and action.mode == "existing":
                raise Hl7Error(
                    "AE", "204", f"no {resource_type} matches the message's key", action.location
                )
            if current is None:
                merged = dict(resource)
                merged["id"] = _derived_id(conditional)
                version = None
            else:
                merged = _merge_into(current, resource, action.only)
                version = current["meta"]["versionId"]
                if _same(current, merged):
                    return self._remember(conditional, current)
            response = await self._put(merged, version)
            if response.status in (200, 201):
                return self._remember(conditional, orjson.loads(response.body or b"{}"))
            if response.status not in (409, 412):
                raise _failure(response, action.location)
        raise Hl7Error("AE", "206", f"{resource_type} kept changing; try again", action.location)

    def _remember(self, conditional: str, stored: Resource) -> str:
        reference = f"{stored['resourceType']}/{stored['id']}"
        self.resolved[conditional] = reference
        version = stored.get("meta", {}).get("versionId")
        self.references.append(f"{reference}/_history/{version}" if version else reference)
        return reference

    async def _find(self, resource_type: str, criteria: str, location: str) -> Resource | None:
        name, _, value = criteria.partition("=")
        found = await self._search(resource_type, [(name, value), ("_count", "2")])
        if len(found) > 1:
            raise Hl7Error(
                "AE", "207", f"the message's key matches several {resource_type}", location
            )
        return found[0] if found else None

    async def _search(self, resource_type: str, query: list[tuple[str, str]]) -> list[Resource]:
        response = await self.router.handle(
            FhirRequest("GET", resource_type, query=query), self.context
        )
        if response.status != 200:
            raise _failure(response, "")
        bundle = orjson.loads(response.body or b"{}")
        return [entry["resource"] for entry in bundle.get("entry", [])]

    async def _put(self, resource: Resource, version: str | None) -> FhirResponse:
        headers = {"content-type": "application/fhir+json", "prefer": "return=representation"}
        if version is not None:
            headers["if-match"] = f'W/"{version}"'
        request = FhirRequest(
            "PUT",
            f"{resource['resourceType']}/{resource['id']}",
            headers=headers,
            body=orjson.dumps(resource),
        )
        return await self.router.handle(request, self.context)

    async def _resolve_references(self, node: Any) -> Any:
        """Conditional references -> `Type/id`; optional ones stay logical when unmatched."""
        if isinstance(node, list):
            return [await self._resolve_references(item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: await self._resolve_references(value) for key, value in node.items()}
        reference = out.get("reference")
        if isinstance(reference, str) and "?" in reference:
            target = self.resolved.get(reference)
            if target is None:
                resource_type, _, criteria = reference.partition("?")
                name, _, value = criteria.partition("=")
                found = await self._search(resource_type, [(name, value), ("_count", "2")])
                if len(found) == 1:
                    target = f"{resource_type}/{found[0]['id']}"
                    self.resolved[reference] = target
            if target is not None:
                out["reference"] = target
            elif "identifier" in out:
                del out["reference"]
            else:
                raise Hl7Error("AE", "204", f"nothing matches {reference.partition('?')[0]}")
        return out

    # merge (ADT^A40) ------------------------------------------------------------------

    async def _merge(self, action: Merge) -> None:
        surviving = await self._find("Patient", action.surviving, action.location)
        merged = await self._find("Patient", action.merged, action.location)
        if merged is None:
            raise Hl7Error("AE", "204", "MRG-1 names no known patient", action.location)
        if surviving is None or surviving["id"] == merged["id"]:
            return
        surviving_ref, merged_ref = f"Patient/{surviving['id']}", f"Patient/{merged['id']}"
        await self._upsert(
            Upsert(
                {"resourceType": "Patient", "active": False,
                 "link": [{"other": {"reference": surviving_ref}, "type": "replaced-by"}]},
                f"_id={merged['id']}", action.location, "existing", ("active", "link"),
            )
        )  # fmt: skip
        await self._upsert(
            Upsert(
                {"resourceType": "Patient",
                 "link": [{"other": {"reference": merged_ref}, "type": "replaces"}]},
                f"_id={surviving['id']}", action.location, "existing", ("link",),
            )
        )  # fmt: skip
        for resource_type in REPOINT:
            await self._repoint(resource_type, merged_ref, surviving_ref)

    async def _repoint(self, resource_type: str, old: str, new: str) -> None:
        for _ in range(1000):  # each round rewrites a page; it stops matching once moved
            found = await self._search(resource_type, [("subject", old), ("_count", "100")])
            if not found:
                return
            for resource in found:
                moved = _replace_reference(resource, old, new)
                response = await self._put(moved, resource["meta"]["versionId"])
                if response.status not in (200, 201, 409, 412):
                    raise _failure(response, "MRG^1^1")
                if response.status in (200, 201):
                    self._remember(
                        f"{resource_type}?_id={resource['id']}",
                        orjson.loads(response.body or b"{}"),
                    )


def _derived_id(conditional: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, conditional))


def _merge_into(current: Resource, update: Resource, only: tuple[str, ...]) -> Resource:
    merged = {k: v for k, v in current.items() if k != "meta"}
    for key, value in update.items():
        if key in ("id", "meta", "resourceType") or (only and key not in only):
            continue
        if key in UNION_ELEMENTS and isinstance(value, list):
            existing = list(merged.get(key, []))
            seen = {_identity(item) for item in existing}
            existing.extend(item for item in value if _identity(item) not in seen)
            merged[key] = existing
        else:
            merged[key] = value
    return merged


def _identity(item: Any) -> str:
    if isinstance(item, dict) and "value" in item:
        return f"{item.get('system', '')}|{item['value']}"
    return orjson.dumps(item, option=orjson.OPT_SORT_KEYS).decode()


def _same(current: Resource, merged: Resource) -> bool:
    def plain(resource: Resource) -> bytes:
        body = {k: v for k, v in resource.items() if k != "meta"}
        return orjson.dumps(body, option=orjson.OPT_SORT_KEYS)

    return plain(current) == plain(merged)


def _replace_reference(node: Any, old: str, new: str) -> Any:
    if isinstance(node, list):
        return [_replace_reference(item, old, new) for item in node]
    if isinstance(node, dict):
        out = {key: _replace_reference(value, old, new) for key, value in node.items()}
        if out.get("reference") == old:
            out["reference"] = new
        return {k: v for k, v in out.items() if k != "meta"} if "resourceType" in out else out
    return node


def _failure(response: FhirResponse, location: str) -> Hl7Error:
    """The OperationOutcome of a failed write as an Hl7Error with the catalog's ERR-3."""
    try:
        outcome = orjson.loads(response.body or b"{}")
        issue = outcome["issue"][0]
        code = issue["details"]["coding"][0]["code"]
        error = FhirError(code, issue.get("diagnostics"))
    except (KeyError, IndexError, TypeError, ValueError, orjson.JSONDecodeError):
        error = FhirError("MB-1000", f"FHIR write answered {response.status}")
    return Hl7Error.from_fhir(error, location)
