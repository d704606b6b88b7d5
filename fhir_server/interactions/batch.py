"""batch and transaction: POST a Bundle to the service base.

Every entry becomes a `FhirRequest` that goes back through the router, so it passes
the same pipeline (authorization, consent, audit) as a request of its own. A
transaction runs its entries in the spec's order (DELETE, POST, PUT/PATCH, GET) as one
atomic repository unit, with `urn:uuid:` and conditional references resolved across
entries; any failing entry rolls everything back. A transaction of plain writes is
deferred (its writes staged, then committed as one bulkWrite); one with reads,
searches or conditions joins an open transaction, so it sees its own writes. A batch
answers each entry on its own, failures as OperationOutcomes.
"""

from __future__ import annotations

import asyncio
import base64
import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson

from access.access import Access
from access.context import RequestContext
from access.errors import AccessError
from access.restriction import Restriction
from access.unit import unit_of_work
from fhir_server.body import dumps
from fhir_server.bundle import bundle_in_steps
from fhir_server.errors import outcome
from fhir_server.exchange import FhirExchange, FhirRequest, FhirResponse
from fhir_server.interactions.common import parse_http_date, parsed_body
from fhir_server.registry import is_served
from fhir_server.repository import instant
from fhir_server.services import FhirServices

Dispatch = Callable[
    [FhirRequest, RequestContext, Access | None, Restriction], Awaitable[FhirResponse]
]
Handler = Callable[[FhirExchange, FhirServices], Awaitable[FhirResponse]]
ORDER = {"DELETE": 0, "POST": 1, "PUT": 2, "PATCH": 2, "GET": 3, "HEAD": 3}
STATUS_TEXT = {200: "OK", 201: "Created", 204: "No Content", 304: "Not Modified"}
_CONDITIONAL = re.compile(r"^([A-Z][A-Za-z]+)\?(.+)$")


def bundle_handler(dispatch: Dispatch) -> Handler:
    """The BATCH/TRANSACTION handler, re-entering the router through `dispatch`."""

    async def handle(exchange: FhirExchange, services: FhirServices) -> FhirResponse:
        request, budget = exchange.request, services.budget
        document = request.document  # parsed by the router, to name the action
        if document is None:
            document = await parsed_body(request, budget)
        if not isinstance(document, dict) or document.get("resourceType") != "Bundle":
            raise AccessError("MB-1004", "POST to the base takes a batch or transaction Bundle")
        kind = document.get("type")
        entries = document.get("entry") or []
        if kind not in ("batch", "transaction") or not isinstance(entries, list):
            raise AccessError(
                "MB-1004", "Bundle.type must be batch or transaction", expression="Bundle.type"
            )
        if services.repository.in_bundle:
            raise AccessError("MB-1004", "a Bundle entry cannot itself be a batch or transaction")
        check_distinct(entries, kind == "transaction")
        if kind == "batch":
            responses = await _Processor(exchange, services, dispatch, entries).batch()
        else:
            deferred = all(writes_blind(entry) for entry in entries)
            # the store transaction opens and commits inside the unit: the entries'
            # post-commit hooks run once it committed, their audits once it ended
            async with unit_of_work() as unit:

                async def run() -> list[dict[str, Any]]:
                    # a run that lost a write conflict answered nothing: run_bundle may
                    # run it again, and only the last run's accesses happened
                    unit.attempt()
                    return await _Processor(exchange, services, dispatch, entries).transaction()

                responses = await services.repository.run_bundle(deferred, run)
        return FhirResponse(200, await bundle_in_steps(f"{kind}-response", responses))

    return handle


class _Processor:
    def __init__(
        self, exchange: FhirExchange, services: FhirServices, dispatch: Dispatch, entries: list[Any]
    ) -> None:
        self.exchange = exchange
        self.services = services
        self.dispatch = dispatch
        self.entries = entries
        self.resolved: dict[str, str] = {}  # fullUrl (urn:uuid:...) -> Type/id

    async def batch(self) -> list[dict[str, Any]]:
        responses = []
        for index, entry in enumerate(self.entries):
            try:
                request = await self._request(index, entry)
                response = await self._dispatch(index, request)
            except AccessError as error:
                response = FhirResponse.of(error.status, outcome(error))
            responses.append(_response_entry(response, outcome_on_error=True))
            await _let_others_run()
        return responses

    async def transaction(self) -> list[dict[str, Any]]:
        order = sorted(range(len(self.entries)), key=lambda i: self._rank(i))
        self._assign_ids(order)
        responses: dict[int, dict[str, Any]] = {}
        for index in order:
            entry = self.entries[index]
            request = await self._request(index, entry)
            response = await self._dispatch(index, request)
            if response.status >= 400:
                raise _failed(index, entry, response)
            responses[index] = _response_entry(response, outcome_on_error=False)
            self._learn(entry, response)
            await _let_others_run()
        return [responses[i] for i in range(len(self.entries))]

    async def _dispatch(self, index: int, request: FhirRequest) -> FhirResponse:
        """The entry as a child exchange: its own context (what its stages note stays
        its own; its request id names the bundle's and the entry's index), its access a
        child of the bundle's, seeing no more than the bundle's access may."""
        return await self.dispatch(
            request,
            entry_context(self.exchange.context, index),
            self.exchange.access,
            self.exchange.restriction,
        )

    def _rank(self, index: int) -> int:
        entry = self.entries[index]
        method = (entry.get("request") or {}).get("method", "") if isinstance(entry, dict) else ""
        return ORDER.get(str(method).upper(), 4)

    def _assign_ids(self, order: list[int]) -> None:
        """Server ids for POSTed entries up front, so references to them resolve in any order."""
        for index in order:
            entry = self.entries[index]
            if not isinstance(entry, dict):
                continue
            request = entry.get("request") or {}
            resource = entry.get("resource")
            full_url = entry.get("fullUrl")
            if str(request.get("method", "")).upper() != "POST" or not isinstance(resource, dict):
                continue
            if isinstance(full_url, str) and full_url.startswith("urn:uuid:"):
                if request.get("ifNoneExist"):
                    continue  # known only once the condition is evaluated
                self.resolved[full_url] = f"{resource.get('resourceType')}/{uuid.uuid4()}"

    def _learn(self, entry: dict[str, Any], response: FhirResponse) -> None:
        full_url = entry.get("fullUrl")
        location = response.headers.get("Location")
        if isinstance(full_url, str) and location:
            parts = location.split("/_history/")[0].rsplit("/", 2)
            self.resolved[full_url] = f"{parts[-2]}/{parts[-1]}"

    async def _request(self, index: int, entry: Any) -> FhirRequest:
        where = f"Bundle.entry[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
            raise AccessError("MB-1004", f"{where} has no request", expression=f"{where}.request")
        spec = entry["request"]
        method = str(spec.get("method", "")).upper()
        url = str(spec.get("url", ""))
        if method not in ORDER or not url:
            raise AccessError(
                "MB-1004", f"{where}.request needs method and url", expression=f"{where}.request"
            )
        split = urlsplit(url)
        path = split.path.lstrip("/")
        query = parse_qsl(split.query, keep_blank_values=True)
        headers = {"content-type": "application/fhir+json"}
        for field, header in (
            ("ifNoneExist", "if-none-exist"),
            ("ifMatch", "if-match"),
            ("ifNoneMatch", "if-none-match"),
            ("ifModifiedSince", "if-modified-since"),
        ):
            if spec.get(field):
                headers[header] = str(spec[field])
        body: bytes | None = None
        asked = None
        resource = entry.get("resource")
        if (
            method == "PATCH"
            and isinstance(resource, dict)
            and resource.get("resourceType") == "Binary"
        ):
            headers["content-type"] = str(resource.get("contentType", ""))
            body = _binary_data(resource)
        elif resource is not None:
            resource = await self._resolve_references(resource, where)
            full_url = entry.get("fullUrl")
            if method == "POST" and isinstance(full_url, str) and full_url in self.resolved:
                # a pre-assigned id: the POST becomes a create-on-update at that id
                asked, method, path = method, "PUT", self.resolved[full_url]
                resource["id"] = path.split("/", 1)[1]
            body = dumps(resource)
        prefer = self.exchange.request.header("prefer")
        if prefer:
            headers["prefer"] = prefer
        return FhirRequest(
            method, path, query, headers, body, self.exchange.request.base_url,
            entry_method=asked,
        )  # fmt: skip

    async def _resolve_references(self, value: Any, where: str) -> Any:
        if isinstance(value, dict):
            resolved = {k: await self._resolve_references(v, where) for k, v in value.items()}
            reference = resolved.get("reference")
            if isinstance(reference, str):
                resolved["reference"] = await self._target(reference, where)
            return resolved
        if isinstance(value, list):
            return [await self._resolve_references(v, where) for v in value]
        return value

    async def _target(self, reference: str, where: str) -> str:
        if reference in self.resolved:
            return self.resolved[reference]
        if reference.startswith("urn:uuid:"):
            raise AccessError(
                "MB-1004", f"{where}: {reference} names no entry of this Bundle", expression=where
            )
        match = _CONDITIONAL.match(reference)
        if match is None or not is_served(match.group(1)):
            return reference
        resource_type = match.group(1)
        criteria = parse_qsl(match.group(2), keep_blank_values=True)
        ids = await self.services.repository.matching_ids(resource_type, criteria)
        if len(ids) != 1:
            raise AccessError(
                "MB-1102",
                f"{where}: conditional reference {reference[:200]} matches {len(ids)} resources",
                expression=where,
            )
        self.resolved[reference] = f"{resource_type}/{ids[0]}"
        return self.resolved[reference]


def entry_context(bundle: RequestContext, index: int) -> RequestContext:
    """The context of entry `index`: who asks is the bundle's, what stages learn is not."""
    return replace(bundle, request_id=f"{bundle.request_id}.{index}", notes={}, access=None)


def check_distinct(entries: list[Any], transaction: bool) -> None:
    """Refuse two entries with one fullUrl (bdl-7) and, in a transaction, a PUT or
    DELETE of a target another PUT or DELETE names (R4: "if any resource identities
    overlap in steps 1-3 (DELETE, POST, PUT), then the transaction SHALL fail"; a POST's
    identity is new). A PATCH after a PUT of its target stays allowed: R4's sentence
    does not name PATCH, and it reads the PUT's staged version (test_group_commit)."""
    full_urls: dict[str, int] = {}
    targets: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if not isinstance(entry, dict):
            continue
        full_url = entry.get("fullUrl")
        if isinstance(full_url, str) and full_url:
            _distinct(full_urls, full_url, index, "have the fullUrl")
        request = entry.get("request")
        if not transaction or not isinstance(request, dict):
            continue
        method = str(request.get("method", "")).upper()
        url = str(request.get("url", ""))
        if method in ("PUT", "DELETE") and url:
            _distinct(targets, _target_key(url), index, f"{method} the same target")


def _distinct(seen: dict[str, int], key: str, index: int, what: str) -> None:
    first = seen.setdefault(key, index)
    if first != index:
        raise AccessError(
            "MB-1110",
            f"Bundle.entry[{first}] and Bundle.entry[{index}] {what} {key[:200]}",
            expression=f"Bundle.entry[{index}]",
        )


def _target_key(url: str) -> str:
    """`/Patient/x`, `Patient/x/`, `http://base/Patient/x` -> `Patient/x`; a conditional
    URL stays itself (its resolved identity is known only when it runs)."""
    split = urlsplit(url)
    if split.query:
        return f"{split.path.strip('/')}?{split.query}"
    parts = [p for p in split.path.split("/") if p]
    return "/".join(parts[-2:]) if len(parts) >= 2 else "/".join(parts)


async def _let_others_run() -> None:
    """Yield to the event loop between entries: a deferred transaction's entries only
    stage their writes, so thousands of them would otherwise run (parse, validate,
    index) without a single suspension while reads and HL7 ACKs wait."""
    await asyncio.sleep(0)


def writes_blind(entry: Any) -> bool:
    """Whether the entry is a write that needs no search over the bundle's own writes:
    no read or search entry, no conditional URL or ifNoneExist, no conditional reference.
    Such a transaction can stage its writes and commit them at once (one bulkWrite)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("request"), dict):
        return True  # answered as invalid before anything is written
    request = entry["request"]
    method = str(request.get("method", "")).upper()
    if method not in ("POST", "PUT", "PATCH", "DELETE") or request.get("ifNoneExist"):
        return False
    if "?" in str(request.get("url", "")):
        return False
    return not _conditional_reference(entry.get("resource"))


def _conditional_reference(value: Any) -> bool:
    if isinstance(value, dict):
        reference = value.get("reference")
        if isinstance(reference, str) and _CONDITIONAL.match(reference):
            return True
        return any(_conditional_reference(v) for v in value.values())
    if isinstance(value, list):
        return any(_conditional_reference(v) for v in value)
    return False


def _binary_data(resource: dict[str, Any]) -> bytes:
    return base64.b64decode(str(resource.get("data", "")))


def _response_entry(response: FhirResponse, outcome_on_error: bool) -> dict[str, Any]:
    status = f"{response.status} {STATUS_TEXT.get(response.status, '')}".strip()
    result: dict[str, Any] = {"status": status}
    for header, field in (("Location", "location"), ("ETag", "etag")):
        if header in response.headers:
            result[field] = response.headers[header]
    entry: dict[str, Any] = {"response": result}
    last_updated = _last_updated(response)
    if last_updated:
        result["lastModified"] = last_updated
    if response.body is not None:
        body = orjson.Fragment(response.body)
        if response.status >= 400 and outcome_on_error:
            result["outcome"] = body
        elif response.status < 400:
            entry["resource"] = body
    return entry


def _last_updated(response: FhirResponse) -> str | None:
    """The instant of the version written: as the write said it, else from the resource,
    else the HTTP date."""
    if response.last_updated is not None:
        return response.last_updated
    if response.body is not None and response.status < 400:
        meta = orjson.loads(response.body).get("meta") or {}
        if isinstance(meta.get("lastUpdated"), str):
            return str(meta["lastUpdated"])
    header = response.headers.get("Last-Modified")
    epoch_ms = parse_http_date(header) if header else None
    return instant(epoch_ms) if epoch_ms is not None else None


def _failed(index: int, entry: dict[str, Any], response: FhirResponse) -> AccessError:
    request = entry.get("request") or {}
    detail = ""
    if response.body:
        outcome = orjson.loads(response.body)
        issues = outcome.get("issue") or [{}]
        detail = f": {issues[0].get('diagnostics', '')}"
    return AccessError(
        "MB-1101",
        f"transaction failed at entry {index} ({request.get('method')} {request.get('url')})"
        f"{detail}; nothing was applied",
        expression=f"Bundle.entry[{index}]",
        status=response.status,
    )
