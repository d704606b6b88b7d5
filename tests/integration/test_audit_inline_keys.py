"""An AuditEvent keeps its index keys in its own document (fhir_server/search/inline.py):
every search finds the same events as when the keys were rows. Each event is stored
twice on the run's real store: once as the chain writes it now (`i-` id: keys in the
document, extra values as rows) and once as events were stored before (`r-` id: every
key a row); every query must find both twins or neither, and what it was meant to find."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient

from fhir_server.repository import Repository, _order, _stamp, _version_writes
from fhir_server.search.extract import index_entries

pytestmark = pytest.mark.integration

Client = AsyncMongoClient[dict[str, Any]]
AUDIT = "AuditEvent"
TYPE_SYSTEM = "http://terminology.hl7.org/CodeSystem/audit-event-type"
INTERACTION = "http://hl7.org/fhir/restful-interaction"
USER = "urn:medbridge:actor:user"


def audit_event(
    recorded: str,
    action: str,
    subtype: str,
    user: str,
    entities: list[dict[str, Any]],
    outcome: str = "0",
    type_code: str = "rest",
    who: str | None = None,
) -> dict[str, Any]:
    agent: dict[str, Any] = {"who": {"identifier": {"system": USER, "value": user}},
                             "requestor": True}  # fmt: skip
    if who is not None:
        agent["who"]["reference"] = who
    return {
        "resourceType": AUDIT,
        "type": {"system": TYPE_SYSTEM, "code": type_code, "display": f"{type_code} operation"},
        "subtype": [{"system": INTERACTION, "code": subtype}],
        "action": action,
        "recorded": recorded,
        "outcome": outcome,
        "agent": [agent, {"who": {"reference": "Device/app"}, "requestor": False}],
        "source": {"observer": {"reference": "Device/medbridge"}},
        "entity": entities,
    }


def patient(name: str) -> dict[str, Any]:
    return {"what": {"reference": f"Patient/{name}"}}


EVENTS: dict[str, dict[str, Any]] = {
    "read": audit_event("2026-12-01T10:00:00Z", "R", "read", "u1", [patient("a")]),
    "search": audit_event(
        "2026-12-03T10:00:00Z",
        "E",
        "search-type",
        "u2",
        [patient("a"), patient("b"), patient("c"), {"what": {"reference": "Observation/o1"}}],
    ),
    "create": audit_event(
        "2026-12-05T10:00:00.500Z",
        "C",
        "create",
        "u1",
        [patient("b")],
        outcome="4",
        who="Practitioner/x",
    ),
    "by-identifier": audit_event(
        "2026-12-06T10:00:00Z",
        "R",
        "read",
        "u3",
        [{"what": {"identifier": {"system": "urn:mrn", "value": "MRN-9"}}}],
    ),
    "sign-in": audit_event(
        "2026-12-07T08:00:00Z", "E", "login", "u4", [], outcome="8", type_code="110114"
    ),
}

QUERIES: list[tuple[list[tuple[str, str]], set[str]]] = [
    ([("patient", "a")], {"read", "search"}),
    ([("patient", "Patient/b")], {"search", "create"}),
    ([("patient", "c,a")], {"read", "search"}),
    ([("entity", "Observation/o1")], {"search"}),
    ([("entity:identifier", "urn:mrn|MRN-9")], {"by-identifier"}),
    ([("agent", "Practitioner/x")], {"create"}),
    ([("agent", "Device/app")], set(EVENTS)),
    ([("agent:identifier", f"{USER}|u1")], {"read", "create"}),
    ([("agent:identifier", "u2")], {"search"}),
    ([("source", "Device/medbridge")], set(EVENTS)),
    ([("action", "C")], {"create"}),
    ([("action", "R,E")], {"read", "search", "by-identifier", "sign-in"}),
    ([("subtype", f"{INTERACTION}|read")], {"read", "by-identifier"}),
    ([("subtype", "login")], {"sign-in"}),
    ([("type", "110114")], {"sign-in"}),
    ([("type", f"{TYPE_SYSTEM}|rest")], set(EVENTS) - {"sign-in"}),
    ([("type:text", "rest op")], set(EVENTS) - {"sign-in"}),
    ([("outcome", "4")], {"create"}),
    ([("outcome:not", "0")], {"create", "sign-in"}),
    ([("date", "2026-12-03")], {"search"}),
    ([("date", "ge2026-12-05")], {"create", "by-identifier", "sign-in"}),
    ([("date", "lt2026-12-03")], {"read"}),
    ([("date", "gt2026-12-05T10:00:00.400Z")], {"create", "by-identifier", "sign-in"}),
    ([("date", "sa2026-12-05")], {"by-identifier", "sign-in"}),
    ([("date", "eb2026-12-02")], {"read"}),
    ([("patient:missing", "true")], {"by-identifier", "sign-in"}),
    ([("_lastUpdated", "gt2000-01-01")], set(EVENTS)),
    # a selective clause first, then each candidate checked one by one
    ([("patient", "b"), ("date", "ge2026-12-04"), ("outcome", "4")], {"create"}),
    ([("agent:identifier", "u1"), ("action:not", "C")], {"read"}),
]


async def stored_twins(repository: Repository) -> None:
    for marker, event in EVENTS.items():
        stored, writes = repository.write_once(dict(event), f"i-{marker}")
        await repository.apply_writes(writes)
        # as an event was stored before its keys were kept inline: every key a row
        twin = dict(event)
        stored = _stamp(twin, f"r-{marker}", 1, "POST")
        index = index_entries(twin)
        rows, _ = _version_writes(stored, None, index.rows, _order(stored, index.order), False)
        await repository.apply_writes(rows)


@pytest.fixture
async def repository(mongo: Client, database_name: str) -> Repository:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    await stored_twins(repository)
    return repository


async def test_the_chain_keeps_a_read_event_in_one_document(repository: Repository) -> None:
    rows = repository.db[f"{AUDIT}_idx"]
    # the read names one patient: no row at all; the search names three patients and an
    # Observation: the values past the first of each code are rows
    assert await rows.count_documents({"r": "i-read"}) == 0
    extra = await rows.find({"r": "i-search"}, {"k": 1}).to_list()
    assert sorted(row["k"].split("\x1f")[0] for row in extra) == [
        "entity", "entity", "entity", "patient", "patient",
    ]  # fmt: skip
    assert await rows.count_documents({"r": "r-read"}) > 8


# ids from the query alone: a set's repr is ordered by the process's string hashes,
# which differ between xdist workers
QUERY_IDS = ["&".join(f"{name}={value}" for name, value in params) for params, _ in QUERIES]


@pytest.mark.parametrize(("params", "expected"), QUERIES, ids=QUERY_IDS)
async def test_every_search_finds_both_twins(
    repository: Repository, params: list[tuple[str, str]], expected: set[str]
) -> None:
    found = await repository.search_engine().criteria_ids(AUDIT, params)
    inline = {identifier[2:] for identifier in found if identifier.startswith("i-")}
    rows = {identifier[2:] for identifier in found if identifier.startswith("r-")}
    assert inline == expected
    assert rows == expected


async def test_ids_and_everything(repository: Repository) -> None:
    engine = repository.search_engine()
    assert await engine.criteria_ids(AUDIT, [("_id", "i-create,r-read")]) == {"i-create", "r-read"}
    everything = await engine.criteria_ids(AUDIT, [])
    assert everything == {f"{twin}-{marker}" for marker in EVENTS for twin in "ir"}


async def test_has_and_include_read_the_kept_keys(repository: Repository) -> None:
    engine = repository.search_engine()
    # patients referenced by a create event: through `_has`, which reads the keys back
    found = await engine.criteria_ids("Patient", [("_has:AuditEvent:patient:action", "C")])
    assert found == {"b"}
    found = await engine.criteria_ids("Patient", [("_has:AuditEvent:patient:action", "E")])
    assert found == {"a", "b", "c"}
    references = await engine.references(AUDIT, {"i-search"}, "patient\x1fPatient/")
    assert references == {"Patient/a", "Patient/b", "Patient/c"}
    assert await engine.references(AUDIT, {"r-search"}, "patient\x1fPatient/") == references
