"""Modality Worklist C-FIND answered from scheduled (active) FHIR ServiceRequests.

The orders the RIS sent over HL7 are ServiceRequests in the repository; each active one
becomes a worklist record through the table in `worklist.yaml`, read by the small engine
below. The FHIR search goes through the router as a child of the MWL access (its
parent link, actor and request id), so every hook applies to it too, and what the MWL
access may see (its restriction) is part of that search; keys FHIR search cannot
express (sequence items, wildcards) are matched in memory by `matching`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import orjson
import yaml
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset

from access.context import RequestContext
from access.errors import AccessError
from access.restriction import Restriction
from fhir_server.exchange import FhirRequest
from fhir_server.router import FhirRouter
from imaging.dimse.door import Within
from imaging.dimse.matching import matches
from imaging.dimse.query import text_of
from mappings.dicom.imagingstudy import issuer_of

Record = dict[str, Any]  # keyword -> text, plus "step": keyword -> text
STEP = "ScheduledProcedureStepSequence"
PAGE, MAX_RECORDS = 200, 5_000
REQUESTS = "worklist.requests"  # FHIR requests the MWL access made so far (their ids)
# allowed patients named in the FHIR search itself; more (a site-wide consent list) would
# run into the search's value caps (MEDBRIDGE_LIMIT_SEARCH_VALUES), so they are matched
# on each order's subject instead
QUERY_PATIENTS = 100


@cache
def table() -> dict[str, dict[str, Any]]:
    """worklist.yaml: top-level and scheduled-step rows, and coding scheme designators."""
    text = (resources.files("imaging.dimse") / "worklist.yaml").read_text(encoding="utf-8")
    loaded: dict[str, dict[str, Any]] = yaml.safe_load(text)
    return loaded


@dataclass(slots=True)
class WorklistQuery:
    top: list[DataElement] = field(default_factory=list)
    step: list[DataElement] = field(default_factory=list)

    def wanted(self, keyword: str) -> str:
        for element in (*self.top, *self.step):
            if element.keyword == keyword:
                return text_of(element)
        return ""


def parse_worklist(identifier: Dataset) -> WorklistQuery:
    query = WorklistQuery()
    for element in identifier:
        if element.keyword == STEP:
            items = element.value or []
            query.step = list(items[0]) if items else []
        elif element.keyword and element.keyword != "SpecificCharacterSet":
            query.top.append(element)
    if not any(e.keyword == STEP for e in identifier):
        query.step = []
    return query


class Worklist:
    """Searches active ServiceRequests for one C-FIND and turns them into records."""

    def __init__(self, router: FhirRouter) -> None:
        self.router = router

    async def _get(self, path: str, query: list[tuple[str, str]], within: Within) -> Any:
        request = FhirRequest("GET", path, query, {"accept": "application/fhir+json"}, None)
        response = await self.router.handle(request, child_context(within))
        if response.status == 404:
            return None
        if response.status != 200 or response.body is None:
            raise AccessError("MB-4004", f"worklist search answered {response.status}")
        return orjson.loads(response.body)

    async def records(self, query: WorklistQuery, within: Within) -> list[Record]:
        """The worklist records matching every key of `query`, of those the MWL access
        may see (`within.restriction`)."""
        restriction = within.restriction
        if restriction.nothing:
            return []
        search = [("status", "active"), ("_count", str(PAGE)), *_restricted(restriction)]
        start = query.wanted("ScheduledProcedureStepStartDate")
        if start:
            search += _date_search(start)
        accession = query.wanted("AccessionNumber")
        if accession and "*" not in accession and "?" not in accession:
            search.append(("identifier", accession))
        patients: dict[str, Any] = {}
        out: list[Record] = []
        page: list[tuple[str, str]] | None = search
        while page is not None and len(out) < MAX_RECORDS:
            bundle = await self._get("ServiceRequest", page, within)
            for entry in (bundle or {}).get("entry", []):
                order = entry.get("resource", {})
                reference = str(order.get("subject", {}).get("reference", ""))
                if not _allowed(reference, restriction):
                    continue
                if reference.startswith("Patient/") and reference not in patients:
                    patients[reference] = await self._get(reference, [], within)
                record = build_record(order, patients.get(reference) or {})
                if record_matches(record, query) and _in_studies(record, restriction):
                    out.append(record)
            page = _next_page(bundle)
        return out


def child_context(within: Within) -> RequestContext:
    """The context of one FHIR request the MWL access makes: its actor, peer and purpose,
    a request id of its own under the MWL's, and the MWL access as the parent."""
    parent = within.context
    number = parent.notes[REQUESTS] = parent.notes.get(REQUESTS, 0) + 1
    return RequestContext(
        parent.door,
        actor=within.access.actor,
        purpose_of_use=within.access.purpose_of_use,
        peer=parent.peer,
        request_id=f"{parent.request_id}.{number}",
        access=within.access,
    )


def _restricted(restriction: Restriction) -> list[tuple[str, str]]:
    """A patient restriction as part of the FHIR search: only allowed orders are read."""
    allowed = restriction.patients
    if allowed is None or len(allowed) > QUERY_PATIENTS:
        return []
    return [("subject", ",".join(f"Patient/{p}" for p in sorted(allowed)))]


def _allowed(subject: str, restriction: Restriction) -> bool:
    """The order's subject is an allowed patient (always checked: the search names the
    patients only up to `QUERY_PATIENTS`)."""
    if restriction.patients is None:
        return True
    kind, _, patient = subject.rstrip("/").rpartition("/")
    return kind.endswith("Patient") and patient in restriction.patients


def _in_studies(record: Record, restriction: Restriction) -> bool:
    """A study restriction: only orders whose StudyInstanceUID it allows (an order
    without one is not shown, nothing says it is allowed)."""
    if restriction.studies is None:
        return True
    return record.get("StudyInstanceUID") in restriction.studies


def _date_search(wanted: str) -> list[tuple[str, str]]:
    def fhir(day: str) -> str:
        return f"{day[:4]}-{day[4:6]}-{day[6:8]}"

    if "-" not in wanted:
        return [("occurrence", fhir(wanted))] if len(wanted) == 8 else []
    low, _, high = wanted.partition("-")
    out = [("occurrence", "ge" + fhir(low))] if len(low) == 8 else []
    return out + ([("occurrence", "le" + fhir(high))] if len(high) == 8 else [])


def _next_page(bundle: Any) -> list[tuple[str, str]] | None:
    for link in (bundle or {}).get("link", []):
        if link.get("relation") == "next" and link.get("url"):
            return parse_qsl(urlsplit(str(link["url"])).query, keep_blank_values=True)
    return None


def record_matches(record: Record, query: WorklistQuery) -> bool:
    for element in query.top:
        if element.VR != "SQ" and not matches(
            text_of(element), record.get(element.keyword), element.VR
        ):
            return False
    step = record.get("step", {})
    for element in query.step:
        if element.VR != "SQ" and not matches(
            text_of(element), step.get(element.keyword), element.VR
        ):
            return False
    return True


def response(record: Record, query: WorklistQuery) -> Dataset:
    answer = Dataset()
    answer.SpecificCharacterSet = "ISO_IR 192"
    for element in query.top:
        answer.add(_element(element, record.get(element.keyword)))
    if query.step:
        item = Dataset()
        for element in query.step:
            item.add(_element(element, record.get("step", {}).get(element.keyword)))
        answer.ScheduledProcedureStepSequence = [item]
    return answer


def _element(asked: DataElement, value: Any) -> DataElement:
    if asked.VR == "SQ":
        return DataElement(asked.tag, "SQ", value if isinstance(value, list) else [])
    return DataElement(asked.tag, asked.VR, value if value not in (None, "") else None)


# the engine over worklist.yaml --------------------------------------------------------


def build_record(order: dict[str, Any], patient: dict[str, Any]) -> Record:
    sources = {"order": order, "patient": patient}
    rules = table()
    record: Record = {k: _resolve(rule, sources) for k, rule in rules["top"].items()}
    record["step"] = {k: _resolve(rule, sources) for k, rule in rules["step"].items()}
    code = _first(_walk(order, "code.coding"))
    if isinstance(code, dict) and code.get("code"):
        item = Dataset()
        item.CodeValue = str(code["code"])[:16]
        item.CodingSchemeDesignator = rules["coding_schemes"].get(str(code.get("system")), "L")
        item.CodeMeaning = str(code.get("display", code["code"]))[:64]
        record["RequestedProcedureCodeSequence"] = [item]
    return {k: v for k, v in record.items() if v not in (None, "")}


def _resolve(rule: dict[str, Any], sources: dict[str, Any]) -> Any:
    value, step = _raw(rule, sources), rule
    while value is None and "fallback" in step:
        step = step["fallback"]
        value = _raw(step, sources)
    if value is None:
        return None
    text = str(value)
    if "strip" in rule:
        text = text.removeprefix(rule["strip"])
    if "map" in rule:
        text = rule["map"].get(text, "")
    return text[: rule["max"]] if "max" in rule else text


def _raw(rule: dict[str, Any], sources: dict[str, Any]) -> Any:
    order, patient = sources["order"], sources["patient"]
    if "constant" in rule:
        return rule["constant"]
    if "identifier_type" in rule:
        return _identifier(order, lambda i: rule["identifier_type"] in _type_codes(i))
    if "identifier_system" in rule:
        return _identifier(order, lambda i: i.get("system") == rule["identifier_system"])
    if "patient_identifier" in rule:
        chosen = _patient_identifier(patient, rule["patient_identifier"])
        return chosen["value"] if chosen else None
    if "patient_issuer" in rule:
        chosen = _patient_identifier(patient, rule["patient_issuer"])
        return issuer_of(str(chosen.get("system", ""))) if chosen else None
    if "coding_system" in rule:
        for path in _paths(rule["path"]):
            for coding in _walk(order, f"{path}.coding"):
                if isinstance(coding, dict) and coding.get("system") == rule["coding_system"]:
                    return coding.get("code")
        return None
    if "when_system" in rule:
        parent, _, leaf = rule["order"].rpartition(".")
        for item in _walk(order, parent):
            if isinstance(item, dict) and item.get("system") == rule["when_system"]:
                return item.get(leaf)
        return None
    for kind in ("date", "time", "name"):
        if kind in rule:
            value = _first_of(rule[kind], sources)
            return None if value is None else _convert(kind, value)
    for name in ("order", "patient"):
        if name in rule:
            return _first_of([f"{name}.{p}" for p in _paths(rule[name])], sources)
    return None


def _convert(kind: str, value: Any) -> str | None:
    if kind == "name":
        return _person_name(value) if isinstance(value, dict) else None
    text = str(value)
    if kind == "date":
        return text[:10].replace("-", "") if len(text) >= 10 else None
    clock = text[11:19].replace(":", "") if "T" in text else ""
    return clock or None


def _person_name(name: dict[str, Any]) -> str | None:
    """FHIR HumanName -> DICOM PN family^given^middle^prefix^suffix: the HL7 XPN's
    second and further given names (given[1:]) are the middle name component."""
    given = [str(g) for g in name.get("given", [])]
    components = [
        str(name.get("family", "")),
        given[0] if given else "",
        " ".join(given[1:]),
        " ".join(str(p) for p in name.get("prefix", [])),
        " ".join(str(s) for s in name.get("suffix", [])),
    ]
    return "^".join(components).rstrip("^") or name.get("text")


def _first_of(paths: Any, sources: dict[str, Any]) -> Any:
    for path in _paths(paths):
        source, _, rest = path.partition(".")
        value = _first(_walk(sources[source], rest))
        if value not in (None, ""):
            return value
    return None


def _paths(value: Any) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


def _walk(node: Any, path: str) -> list[Any]:
    """Every value at a dotted path, flattening arrays on the way."""
    current = [node]
    for part in path.split("."):
        following: list[Any] = []
        for item in current:
            value = item.get(part) if isinstance(item, dict) else None
            if isinstance(value, list):
                following.extend(value)
            elif value is not None:
                following.append(value)
        current = following
    return current


def _first(values: list[Any]) -> Any:
    return values[0] if values else None


def _type_codes(identifier: dict[str, Any]) -> set[str]:
    return {str(c.get("code")) for c in identifier.get("type", {}).get("coding", [])}


def _patient_identifier(patient: dict[str, Any], type_code: str) -> dict[str, Any] | None:
    """The identifier of that v2-0203 type, else the first one with a value."""
    usable = [i for i in patient.get("identifier", []) if isinstance(i, dict) and i.get("value")]
    typed = [i for i in usable if type_code in _type_codes(i)]
    chosen = typed or usable
    return chosen[0] if chosen else None


def _identifier(resource: dict[str, Any], accept: Callable[[dict[str, Any]], bool]) -> Any:
    for identifier in resource.get("identifier", []):
        if isinstance(identifier, dict) and accept(identifier) and identifier.get("value"):
            return identifier["value"]
    return None
