"""The patient's record as the timeline shows it, read through the FHIR API with the
patient's token (what consent hides from them is not there to show)."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from importlib import resources
from typing import Any

from portal.api import Answer, Api

DICOM_UID_SYSTEM = "urn:dicom:uid"


@cache
def table() -> dict[str, Any]:
    text = resources.files("portal").joinpath("timeline.json").read_text("utf-8")
    loaded: dict[str, Any] = json.loads(text)
    return loaded


@dataclass(frozen=True, slots=True)
class Item:
    resource_type: str
    id: str
    date: str  # FHIR date/dateTime as stored, "" when undated
    title: str
    study_uid: str | None = None
    pdfs: tuple[int, ...] = ()  # indexes of presentedForm entries that are PDFs
    organizations: tuple[str, ...] = ()
    categories: tuple[str, ...] = ()  # "system|code" (or "code") of `category`

    @property
    def reference(self) -> str:
        return f"{self.resource_type}/{self.id}"


@dataclass(slots=True)
class Record:
    patient: dict[str, Any]
    items: list[Item] = field(default_factory=list)
    problems: list[int] = field(default_factory=list)  # statuses of searches that failed

    @property
    def organizations(self) -> list[str]:
        return sorted({o for item in self.items for o in item.organizations})

    @property
    def categories(self) -> list[str]:
        return sorted({c for item in self.items for c in item.categories})


def element(resource: dict[str, Any], path: str) -> Any:
    value: Any = resource
    for name in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(name)
    return value


def _text(concept: Any) -> str:
    if not isinstance(concept, dict):
        return ""
    if isinstance(concept.get("text"), str):
        return str(concept["text"])
    for coding in concept.get("coding", ()):
        if isinstance(coding, dict):
            shown = coding.get("display") or coding.get("code")
            if isinstance(shown, str):
                return shown
    return ""


def _title(resource: dict[str, Any]) -> str:
    kind = resource["resourceType"]
    if kind == "ImagingStudy":
        modalities = [m.get("code", "") for m in resource.get("modality", ()) if "code" in m]
        return str(resource.get("description") or " ".join(modalities))
    if kind == "Encounter":
        types = resource.get("type") or [{}]
        return _text(types[0]) or _text(resource.get("class"))
    return _text(resource.get("code"))


def _organizations(resource: dict[str, Any], paths: list[str]) -> tuple[str, ...]:
    found: list[str] = []
    for path in paths:
        value = resource.get(path)
        for reference in value if isinstance(value, list) else [value]:
            if isinstance(reference, dict):
                target = reference.get("reference")
                if isinstance(target, str) and target.startswith("Organization/"):
                    found.append(target)
    return tuple(found)


def _categories(resource: dict[str, Any]) -> tuple[str, ...]:
    found: list[str] = []
    concepts = resource.get("category")
    for concept in concepts if isinstance(concepts, list) else [concepts]:
        for coding in concept.get("coding", ()) if isinstance(concept, dict) else ():
            code, system = coding.get("code"), coding.get("system")
            if isinstance(code, str):
                found.append(f"{system}|{code}" if isinstance(system, str) else code)
    return tuple(found)


def _study_uid(resource: dict[str, Any]) -> str:
    for identifier in resource.get("identifier", ()):
        if isinstance(identifier, dict) and identifier.get("system") == DICOM_UID_SYSTEM:
            return str(identifier.get("value", "")).removeprefix("urn:oid:")
    return str(resource.get("id", ""))


def item_of(resource: dict[str, Any]) -> Item:
    kind = str(resource["resourceType"])
    row = table()["types"][kind]
    dated = next((v for p in row["dates"] if isinstance(v := element(resource, p), str)), "")
    pdfs = tuple(
        index for index, form in enumerate(resource.get("presentedForm", ()))
        if isinstance(form, dict) and form.get("contentType") == "application/pdf"
    )  # fmt: skip
    return Item(
        kind, str(resource.get("id", "")), dated, _title(resource),
        _study_uid(resource) if kind == "ImagingStudy" else None, pdfs,
        _organizations(resource, row["organizations"]), _categories(resource),
    )  # fmt: skip


async def read_record(api: Api, token: str, patient: str, count: int, before: str | None) -> Record:
    """The Patient and, per type of the table, its newest `count` records (dated
    before `before` when given), newest first."""
    searches = []
    for kind, row in table()["types"].items():
        params = {"patient": f"Patient/{patient}", "_count": str(count), "_sort": row["sort"]}
        if before:
            params[row["sort"].lstrip("-")] = f"lt{before}"
        searches.append(api.get(token, kind, params))
    found: list[Answer] = await asyncio.gather(api.get(token, f"Patient/{patient}"), *searches)
    own, answers = found[0], found[1:]
    record = Record(own.body if own.status == 200 else {})
    for answer in answers:
        if answer.status != 200:
            record.problems.append(answer.status)
            continue
        for entry in answer.body.get("entry", ()):
            resource = entry.get("resource", {})
            if (
                entry.get("search", {}).get("mode", "match") == "match"
                and resource.get("resourceType") in table()["types"]
            ):
                record.items.append(item_of(resource))
    record.items.sort(key=lambda i: i.date, reverse=True)
    return record


def birth_date(patient: dict[str, Any]) -> date | None:
    try:
        return date.fromisoformat(str(patient.get("birthDate", ""))[:10])
    except ValueError:
        return None


def name_of(patient: dict[str, Any]) -> str:
    for name in patient.get("name", ()):
        if not isinstance(name, dict):
            continue
        if isinstance(name.get("text"), str):
            return str(name["text"])
        parts = [*name.get("given", ()), name.get("family", "")]
        shown = " ".join(p for p in parts if isinstance(p, str) and p)
        if shown:
            return shown
    return str(patient.get("id", ""))


def birthday(born: date, age: int) -> date:
    """The day `born` turns `age` (29 February births on 1 March in other years)."""
    try:
        return born.replace(year=born.year + age)
    except ValueError:
        return date(born.year + age, 3, 1)
