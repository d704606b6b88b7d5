"""Apply a translation through the FHIR router as ONE transaction Bundle per message.

First a plan: each upsert finds its current resource by identifier (search), merges
the message into it and becomes a `PUT Type/id` entry with `ifMatch` on the version it
read; a new resource gets an id derived from its key identifier, so two processes
creating the same patient collide on one id instead of making two patients. Then the
Bundle goes through the same router and pipeline as a REST transaction, so a message's
writes (an A40 merge and all its repointed references included) apply together or not
at all. A version conflict (another writer in between) replans; resources the message
leaves unchanged are not rewritten.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import orjson

from access.context import RequestContext
from access.errors import AccessError
from fhir_server.exchange import FhirRequest, FhirResponse
from fhir_server.group_commit import Write
from fhir_server.interactions.batch import writes_blind
from fhir_server.router import FhirRouter
from hl7_bridge.errors import Hl7Error, Interrupted
from mappings.hl7v2.actions import REPORT_KEY, Merge, Report, Translation, Upsert

Resource = dict[str, Any]
Recorder = Callable[[list[str]], list[Write]]
ID_NAMESPACE = uuid.UUID("6f1e2a8c-3c1e-4b7e-9a57-0d3c2b1a4e5f")
RETRIES = 6
CONFLICTS = (409, 412)
UNION_ELEMENTS = ("identifier", "link")
# Types whose `subject` follows a merged patient (ADT^A40).
REPOINT = ("Encounter", "ServiceRequest", "ImagingStudy", "DiagnosticReport", "Observation")
PAGE = "1000"  # references repointed per type and merge (docs/hl7.md)
REPORTS_PER_ORDER = "100"  # stored reports an ORU's OBR is compared with
# report statuses that a later report on the same order and code still revises
OPEN_REPORT = frozenset({"registered", "partial", "preliminary", "unknown"})


@dataclass(slots=True)
class _Plan:
    """The entries of one message's transaction, keyed by `Type/id` in first-seen order."""

    resolved: dict[str, str] = field(default_factory=dict)  # "Type?criteria" -> "Type/id"
    resources: dict[str, Resource] = field(default_factory=dict)  # "Type/id" -> to write
    versions: dict[str, str | None] = field(default_factory=dict)  # "Type/id" -> version read
    unchanged: list[str] = field(default_factory=list)  # "Type/id/_history/n" kept as is
    found: dict[str, Resource | None] = field(default_factory=dict)  # looked up up front
    fallbacks: dict[str, list[str]] = field(default_factory=dict)  # reference -> next tries


class Writer:
    def __init__(self, router: FhirRouter, context: RequestContext) -> None:
        self.router = router
        self.context = context
        self.recorded = False  # the caller's writes went with the translation's

    async def apply(
        self,
        translation: Translation,
        with_writes: Recorder | None = None,
        before_commit: Callable[[bool], Awaitable[None]] | None = None,
    ) -> list[str]:
        """Write the translation; the references (`Type/id/_history/n`) of what it touched.

        `with_writes(references)`: writes to commit in the same unit as the translation's
        (the message's archive record); `self.recorded` tells whether they were.
        `before_commit(rides)`: awaited once the writes are planned, before anything is
        written (the archive record of the message); `rides` tells whether `with_writes`
        will commit in the unit that applies them (the repository's group commit takes
        a bundle of plain writes whole), so that a record they make need not be stored
        first.
        """
        repository = self.router.services.repository
        for _ in range(RETRIES):
            # the transaction's PUTs re-read what the plan read: remembered, not re-fetched
            with repository.remembering_reads():
                actions, fallbacks = await self._expand(translation)
                plan = _Plan(found=await self._prefetch(actions), fallbacks=fallbacks)
                for action in actions:
                    if isinstance(action, Upsert):
                        await self._plan_upsert(plan, action)
                    else:
                        await self._plan_merge(plan, action)
                if not plan.resources:
                    return plan.unchanged
                entries = _entries(plan)
                if before_commit is not None:
                    blind = all(writes_blind(entry) for entry in entries)
                    await before_commit(with_writes is not None and repository.rides(blind))
                if with_writes is None:
                    response = await self._commit(entries)
                else:
                    make = _with_unchanged(with_writes, plan.unchanged)
                    with repository.riding_along(make) as rider:
                        response = await self._commit(entries)
                    if rider.collided:
                        raise Interrupted  # the message's record: a copy came first
                    self.recorded = rider.used
            if response.status == 200:
                return plan.unchanged + _locations(response)
            if response.status not in CONFLICTS:
                raise _failure(response, "")
        raise Hl7Error("AE", "206", "the records kept changing under this message; send it again")

    # reports ----------------------------------------------------------------------

    async def _expand(
        self, translation: Translation
    ) -> tuple[list[Upsert | Merge], dict[str, list[str]]]:
        """The translation with each Report's key decided against the reports stored."""
        actions: list[Upsert | Merge] = []
        fallbacks: dict[str, list[str]] = {}
        taken: set[tuple[str, str]] = set()  # (order, code) met earlier in this message
        for action in translation.actions:
            if not isinstance(action, Report):
                actions.append(action)
                continue
            fallbacks.update(action.fallbacks)
            key, report_id = await self._report_key(action, (action.order, action.code) in taken)
            taken.add((action.order, action.code))
            actions.extend(_with_key(action, key, report_id))
        return actions, fallbacks

    async def _report_key(self, report: Report, again: bool) -> tuple[str, str | None]:
        """(key, id of the stored report it updates or None): docs/hl7.md, "Reports"."""
        name, _, value = report.order.partition("=")
        stored = await self._search(
            "DiagnosticReport", [(name, value), ("_count", REPORTS_PER_ORDER)]
        )
        same = [r for r in stored if report.code in _codes(r)]
        if same and not again:
            newest = max(same, key=lambda r: str(r.get("meta", {}).get("lastUpdated", "")))
            if (
                report.correction
                or newest.get("status") in OPEN_REPORT
                or _same_content(newest, report)
            ):
                return _key_of(newest, report.base), str(newest["id"])
        if not stored and not again:
            return str(report.base["value"]), None  # the order's first report
        return report.fresh, None

    # planning ---------------------------------------------------------------------

    async def _plan_upsert(self, plan: _Plan, action: Upsert) -> str:
        resource_type = action.resource["resourceType"]
        conditional = f"{resource_type}?{action.criteria}"
        resource = await self._resolve_references(plan, action.resource)
        key = plan.resolved.get(conditional)
        current = plan.resources.get(key) if key else None
        if current is None:
            if conditional in plan.found:
                current = plan.found[conditional]
            else:
                current = await self._lookup(conditional, action)
        if current is None and action.mode == "existing":
            raise Hl7Error(
                "AE", "204", f"no {resource_type} matches the message's key", action.location
            )
        if current is None:
            given = action.criteria[4:] if action.criteria.startswith("_id=") else None
            merged = {**_without_nulls(resource), "id": given or _derived_id(conditional)}
            version = None
        else:
            merged = _merge_into(current, resource, action.only, fill=action.mode == "fill")
            version = current.get("meta", {}).get("versionId")
        key = f"{resource_type}/{merged['id']}"
        plan.resolved[conditional] = key
        if key not in plan.resources and current is not None and _same(current, merged):
            plan.unchanged.append(f"{key}/_history/{version}")
            return key
        plan.versions.setdefault(key, version)
        plan.resources[key] = merged
        return key

    async def _plan_merge(self, plan: _Plan, action: Merge) -> None:
        surviving = await self._current(plan, "Patient", action.surviving, action.location)
        merged = await self._current(plan, "Patient", action.merged, action.location)
        if merged is None:
            raise Hl7Error("AE", "204", "MRG-1 names no known patient", action.location)
        if surviving is None or surviving["id"] == merged["id"]:
            return
        surviving_ref, merged_ref = f"Patient/{surviving['id']}", f"Patient/{merged['id']}"
        links: list[tuple[Resource, Resource]] = [
            (merged, {"active": False, "link": [_link(surviving_ref, "replaced-by")]}),
            (surviving, {"link": [_link(merged_ref, "replaces")]}),
        ]
        for patient, change in links:
            self._stage(
                plan, patient, _merge_into(patient, {"resourceType": "Patient", **change}, ())
            )
        for resource_type in REPOINT:
            for resource in await self._search(
                resource_type, [("subject", merged_ref), ("_count", PAGE)]
            ):
                key = f"{resource_type}/{resource['id']}"
                current = plan.resources.get(key, resource)
                self._stage(plan, resource, _replace_reference(current, merged_ref, surviving_ref))
        for key, resource in list(plan.resources.items()):  # written earlier in this message
            if key.split("/")[0] in REPOINT:
                plan.resources[key] = _replace_reference(resource, merged_ref, surviving_ref)

    def _stage(self, plan: _Plan, current: Resource, updated: Resource) -> None:
        key = f"{current['resourceType']}/{current['id']}"
        plan.versions.setdefault(key, current.get("meta", {}).get("versionId"))
        plan.resources[key] = updated

    async def _current(
        self, plan: _Plan, resource_type: str, criteria: str, location: str
    ) -> Resource | None:
        key = plan.resolved.get(f"{resource_type}?{criteria}")
        if key and key in plan.resources:
            return plan.resources[key]
        return await self._find(resource_type, criteria, location)

    async def _prefetch(self, actions: list[Upsert | Merge]) -> dict[str, Resource | None]:
        """Every upsert's current resource, looked up concurrently (lookups are reads)."""
        upserts: dict[str, Upsert] = {}
        for action in actions:
            if isinstance(action, Upsert):
                upserts.setdefault(f"{action.resource['resourceType']}?{action.criteria}", action)
        found = await asyncio.gather(*(self._lookup(c, a) for c, a in upserts.items()))
        return dict(zip(upserts, found, strict=True))

    async def _lookup(self, conditional: str, action: Upsert) -> Resource | None:
        if action.criteria.startswith("_id="):  # a Binary by its content, a chosen report
            path = f"{action.resource['resourceType']}/{action.criteria[4:]}"
            response = await self.router.handle(FhirRequest("GET", path), self.context)
            if response.status != 200:
                return None
            read: Resource = orjson.loads(response.body or b"{}")
            return read
        current = await self._read_derived(conditional, action.criteria)
        if current is None:
            resource_type = action.resource["resourceType"]
            current = await self._find(resource_type, action.criteria, action.location)
        return current

    async def _read_derived(self, conditional: str, criteria: str) -> Resource | None:
        """The resource this bridge created for the key, by primary key: no index search.

        Only a fast path: it must still carry a key identifier, else the search decides.
        """
        resource_type = conditional.partition("?")[0]
        path = f"{resource_type}/{_derived_id(conditional)}"
        response = await self.router.handle(FhirRequest("GET", path), self.context)
        if response.status != 200:
            return None
        resource: Resource = orjson.loads(response.body or b"{}")
        name, _, values = criteria.partition("=")
        if name != "identifier":
            return None
        held = {f"{i.get('system', '')}|{i.get('value')}" for i in resource.get("identifier", [])}
        return resource if held & set(values.split(",")) else None

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

    async def _resolve_references(self, plan: _Plan, node: Any) -> Any:
        """Conditional references -> `Type/id`; optional ones stay logical when unmatched."""
        if isinstance(node, list):
            return [await self._resolve_references(plan, item) for item in node]
        if not isinstance(node, dict):
            return node
        out = {key: await self._resolve_references(plan, value) for key, value in node.items()}
        reference = out.get("reference")
        if isinstance(reference, str) and "?" in reference:
            target = plan.resolved.get(reference)
            # an ORU's order: by filler number, then placer number, then accession number
            for attempt in (
                [reference, *plan.fallbacks.get(reference, [])] if target is None else []
            ):
                resource_type, _, criteria = attempt.partition("?")
                name, _, value = criteria.partition("=")
                found = await self._search(resource_type, [(name, value), ("_count", "2")])
                if len(found) == 1:
                    target = f"{resource_type}/{found[0]['id']}"
                    plan.resolved[reference] = target
                    break
            if target is not None:
                out["reference"] = target
            elif "identifier" in out:
                del out["reference"]
            else:
                raise Hl7Error("AE", "204", f"nothing matches {reference.partition('?')[0]}")
        return out

    # commit -------------------------------------------------------------------------

    async def _commit(self, entries: list[dict[str, Any]]) -> FhirResponse:
        bundle = {"resourceType": "Bundle", "type": "transaction", "entry": entries}
        request_ = FhirRequest(
            "POST",
            "",
            headers={"content-type": "application/fhir+json", "prefer": "return=minimal"},
            body=orjson.dumps(bundle),
        )
        return await self.router.handle(request_, self.context)


def _entries(plan: _Plan) -> list[dict[str, Any]]:
    """The transaction entries that apply `plan`: a PUT of each resource, guarded by the
    version read."""
    entries = []
    for key, resource in plan.resources.items():
        request: dict[str, str] = {"method": "PUT", "url": key}
        version = plan.versions.get(key)
        if version is not None:
            request["ifMatch"] = f'W/"{version}"'
        body = {k: v for k, v in resource.items() if k != "meta"}
        entries.append({"fullUrl": key, "resource": body, "request": request})
    return entries


def _with_unchanged(record: Recorder, unchanged: list[str]) -> Recorder:
    """References of what the message left as it was come first, as in `apply`'s result."""

    def make(written: list[str]) -> list[Write]:
        return record(unchanged + written)

    return make


def _locations(response: FhirResponse) -> list[str]:
    bundle = orjson.loads(response.body or b"{}")
    locations = []
    for entry in bundle.get("entry", []):
        location = str(entry.get("response", {}).get("location", ""))
        locations.append(location.lstrip("/"))
    return locations


def _with_key(report: Report, key: str, report_id: str | None) -> list[Upsert]:
    """The Report's upserts with REPORT_KEY replaced; `report_id`: update that report."""
    # the report's own criteria, whole: `...|{{report}}-obx2` (its Observations) starts
    # with the same text and must keep its identifier
    own = re.compile(re.escape(f"identifier={report.base['system']}|{REPORT_KEY}") + '(?=$|")')

    def fill(text: str, value: str) -> str:
        if report_id is not None:
            text = own.sub(lambda _: f"_id={report_id}", text)
        return text.replace(REPORT_KEY, value)

    quoted = orjson.dumps(key).decode()[1:-1]  # inside a JSON string
    upserts = []
    for action in report.actions:
        resource = orjson.loads(fill(orjson.dumps(action.resource).decode(), quoted))
        if "identifier" in resource:  # the order's first report: its key is the order's
            resource["identifier"] = _distinct(resource["identifier"])
        criteria = fill(action.criteria, key)
        upserts.append(Upsert(resource, criteria, action.location, action.mode, action.only))
    return upserts


def _distinct(identifiers: list[Resource]) -> list[Resource]:
    seen: set[str] = set()
    kept = []
    for identifier in identifiers:
        if _identity(identifier) not in seen:
            seen.add(_identity(identifier))
            kept.append(identifier)
    return kept


def _codes(report: Resource) -> set[str]:
    code = report.get("code", {})
    return {str(c.get("code", "")) for c in code.get("coding", [])} | {str(code.get("text", ""))}


def _key_of(report: Resource, base: Resource) -> str:
    """A stored report's key: `order^…` for an order's later reports, else the order's."""
    prefix = f"{base['value']}^"
    for identifier in report.get("identifier", []):
        value = str(identifier.get("value", ""))
        if value.startswith(prefix):
            return value
    return str(base["value"])


def _same_content(stored: Resource, report: Report) -> bool:
    incoming = next(
        a.resource for a in report.actions if a.resource["resourceType"] == "DiagnosticReport"
    )
    return all(stored.get(k) == incoming.get(k) for k in ("status", "presentedForm", "conclusion"))


def _link(reference: str, kind: str) -> Resource:
    return {"other": {"reference": reference}, "type": kind}


def _derived_id(conditional: str) -> str:
    return str(uuid.uuid5(ID_NAMESPACE, conditional))


def _merge_into(
    current: Resource, update: Resource, only: tuple[str, ...], fill: bool = False
) -> Resource:
    """`update` over `current`: None removes an element (HL7 `""`); with `fill`, only
    elements `current` lacks are set (identifiers and links are still joined)."""
    merged = {k: v for k, v in current.items() if k != "meta"}
    for key, value in update.items():
        if key in ("id", "meta", "resourceType") or (only and key not in only):
            continue
        if fill and key in merged and key not in UNION_ELEMENTS:
            continue
        if value is None:
            if not fill:
                merged.pop(key, None)
        elif key in UNION_ELEMENTS and isinstance(value, list):
            existing = list(merged.get(key, []))
            seen = {_identity(item) for item in existing}
            existing.extend(item for item in value if _identity(item) not in seen)
            merged[key] = existing
        else:
            merged[key] = value
    return merged


def _without_nulls(resource: Resource) -> Resource:
    return {k: v for k, v in resource.items() if v is not None}


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
        return out
    return node


def _failure(response: FhirResponse, location: str) -> Hl7Error:
    """The OperationOutcome of a failed request as an Hl7Error with the catalog's ERR-3."""
    try:
        outcome = orjson.loads(response.body or b"{}")
        issue = outcome["issue"][0]
        code = issue["details"]["coding"][0]["code"]
        error = AccessError(code, issue.get("diagnostics"))
    except (KeyError, IndexError, TypeError, ValueError, orjson.JSONDecodeError):
        error = AccessError("MB-1000", f"FHIR request answered {response.status}")
    return Hl7Error.from_fhir(error, location)
