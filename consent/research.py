"""Rule 7 for queries: research reads patients de-identified, so it may not find them by
what the de-identification hides. Without this, `Patient?name=X` or
`Observation?subject.identifier=MRN` would return the pseudonymized id of a known person,
and every record linked to that id would be theirs again. Pure; the table is
consent/research.json.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import cache
from pathlib import Path

import orjson

TABLE = Path(__file__).with_name("research.json")


@cache
def _table() -> tuple[frozenset[str], frozenset[str]]:
    table = orjson.loads(TABLE.read_bytes())
    return frozenset(table["identifying_parameters"]), frozenset(table["directories"])


def identifying(resource_type: str | None, query: Iterable[tuple[str, str]]) -> list[str]:
    """The query's parameters that would find a patient by an identity research does not
    see, sorted; empty when the query may run. A search of a staff or site directory
    (Practitioner, Organization, ...) may name anyone by its own parameters, but a chain
    (`_has`, `a.b`) from it may not reach a patient's."""
    parameters, directories = _table()
    found: set[str] = set()
    for name, _ in query:
        links = _links(name)
        if resource_type in directories and len(links) == 1:
            continue
        if any(link in parameters for link in links):
            found.add(name)
    return sorted(found)


def _links(name: str) -> list[str]:
    """The search parameters a query name uses: `subject:Patient.name:exact` -> subject,
    name; `_has:Observation:patient:identifier` -> patient, identifier."""
    if name.startswith("_has:"):
        # _has:Type:reference:parameter, the parameter possibly a further _has
        parts = name.split(":", 3)
        return [parts[2], *_links(parts[3])] if len(parts) == 4 else [name]
    return [link.split(":", 1)[0] for link in name.split(".")]
