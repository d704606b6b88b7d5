"""A transaction Bundle is one unit of work: its entries are child exchanges with their
own contexts; their post-commit hooks run only once it committed, and its audit (the
Bundle's and every entry's) runs outside its store transaction, so a rolled-back
transaction is still audited."""

from __future__ import annotations

from typing import Any

import orjson
from pymongo import AsyncMongoClient

from access.access import Action
from access.context import Door, RequestContext
from access.pipeline import Stage
from fhir_server.exchange import FhirExchange, FhirRequest
from fhir_server.group_commit import Write
from fhir_server.repository import Repository
from fhir_server.router import FhirRouter
from medbridge.compose import HookSpec, compose
from medbridge.settings import Settings

BASE = "http://test/fhir"
AUDIT = "test_audit"
PROBE = "probe"  # the requests the hooks make themselves


def patient(family: str) -> dict[str, Any]:
    return {"resourceType": "Patient", "name": [{"family": family}]}


def bundle(kind: str, *entries: tuple[str, str, dict[str, Any] | None]) -> FhirRequest:
    document = {
        "resourceType": "Bundle",
        "type": kind,
        "entry": [
            {"request": {"method": m, "url": u}, **({"resource": r} if r else {})}
            for m, u, r in entries
        ],
    }
    headers = {"content-type": "application/fhir+json"}
    return FhirRequest("POST", "", [], headers, orjson.dumps(document), BASE)


async def patients_named(router: FhirRouter, family: str) -> int:
    request = FhirRequest("GET", "Patient", [("family:exact", family)], {}, None, BASE)
    response = await router.handle(request, RequestContext(Door.FHIR, request_id=PROBE))
    assert response.status == 200
    return len(orjson.loads(response.body or b"{}").get("entry", []))


async def test_entries_are_child_exchanges_with_contexts_of_their_own(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    seen: list[tuple[str, str, str | None, dict[str, Any]]] = []

    async def authorize(exchange: FhirExchange) -> None:
        access = exchange.access
        assert access is not None
        parent = access.parent.request_id if access.parent is not None else None
        seen.append(
            (access.action, exchange.context.request_id, parent, dict(exchange.context.notes))
        )
        # what a stage notes about one entry must not leak into the next
        exchange.context.notes["mine"] = exchange.context.request_id

    spec = HookSpec(Stage.AUTHORIZE, authorize, "test.authorize")
    router = (await compose(Settings(), repository, hooks=[spec])).router
    for kind in ("batch", "transaction"):
        seen.clear()
        context = RequestContext(Door.FHIR)
        entries = (("POST", "Patient", patient("Child1")), ("POST", "Patient", patient("Child2")))
        response = await router.handle(bundle(kind, *entries), context)
        assert response.status == 200
        top, *children = seen
        assert top[0] == Action.BATCH  # the route of a POST to the base, whatever its type
        assert top[1] == context.request_id
        assert top[2] is None
        assert [c[0] for c in children] == [Action.CREATE, Action.CREATE]
        ids = [c[1] for c in children]
        assert len(set(ids)) == 2
        assert context.request_id not in ids
        assert all(c[2] == context.request_id for c in children)  # parent: the bundle
        assert all(c[3] == {} for c in children)  # the bundle's notes are not theirs


async def test_post_commit_after_commit_never_after_rollback_and_audit_survives(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    committed_seen: list[int] = []  # patients of the family visible at post-commit time
    notified: list[str] = []

    async def post_commit(exchange: FhirExchange) -> None:
        access = exchange.access
        assert access is not None
        if exchange.context.request_id == PROBE:
            return
        notified.append(access.action)
        if access.action == Action.CREATE:
            committed_seen.append(await patients_named(router, "Unit"))

    async def audit(exchange: FhirExchange) -> None:
        access = exchange.access
        assert access is not None
        if exchange.context.request_id == PROBE:
            return
        document = {
            "request_id": exchange.context.request_id,
            "action": str(access.action),
            "parent": access.parent.request_id if access.parent is not None else None,
            "status": exchange.response.status if exchange.response is not None else None,
        }
        # through the repository: inside the transaction this would join (and be
        # rolled back with) the bundle's unit
        await repository.apply_writes([Write(AUDIT, "insert", document)])

    hooks = [
        HookSpec(Stage.POST_COMMIT, post_commit, "test.post-commit", intervene=False),
        HookSpec(Stage.AUDIT, audit, "test.audit"),
    ]
    router = (await compose(Settings(), repository, hooks=hooks)).router
    audits = repository.db[AUDIT]

    # committed: every entry notified after the commit, so each sees all of them
    ok = await router.handle(
        bundle(
            "transaction",
            ("POST", "Patient", patient("Unit")),
            ("POST", "Patient", patient("Unit")),
            ("GET", "Patient?family:exact=Unit", None),  # a read: an open store transaction
        ),
        RequestContext(Door.FHIR),
    )
    assert ok.status == 200
    assert committed_seen == [2, 2]
    assert sorted(notified) == sorted(
        [Action.CREATE, Action.CREATE, Action.SEARCH_TYPE, Action.BATCH]
    )

    # rolled back on its last entry: no notification, nothing written, all audited
    notified.clear()
    context = RequestContext(Door.FHIR)
    failed = await router.handle(
        bundle(
            "transaction",
            ("POST", "Patient", patient("Gone")),
            ("GET", "Patient?family:exact=Gone", None),
            ("GET", "Patient/no-such-patient", None),  # the last entry run: 404
        ),
        context,
    )
    assert failed.status >= 400
    assert notified == []
    assert await patients_named(router, "Gone") == 0
    recorded = await audits.find(
        {"$or": [{"request_id": context.request_id}, {"parent": context.request_id}]}
    ).to_list()
    by_action = {d["action"]: d for d in recorded}
    assert by_action[Action.BATCH]["status"] == failed.status
    assert by_action[Action.CREATE]["parent"] == context.request_id
    assert by_action[Action.READ]["status"] == 404
    assert len(recorded) == 4
