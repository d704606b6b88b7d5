"""A transaction Bundle is one unit of work: its entries are child exchanges with their
own contexts; their post-commit hooks run only once it committed, and its audit (the
Bundle's and every entry's) runs outside its store transaction, so a rolled-back
transaction is still audited."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
from pymongo import AsyncMongoClient

from access.access import Access, Action
from access.context import Door, RequestContext, operator
from access.errors import AccessError
from access.pipeline import Exchange, Stage
from fhir_server.exchange import FhirExchange, FhirRequest
from fhir_server.group_commit import Write
from fhir_server.repository import Repository
from fhir_server.router import FhirRouter
from hl7_bridge.listener import Limits
from hl7_bridge.processor import Processor
from hl7_bridge.service import BridgeOptions
from imaging.import_door import ImportDoor
from imaging.services import Imaging
from imaging.sources import Source
from medbridge.compose import HookSpec, ImagingPlan, compose
from medbridge.settings import Settings
from tests.support.dicom import base_dataset, part10

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
        # the Bundle's type names the action, before any hook runs
        assert top[0] == (Action.TRANSACTION if kind == "transaction" else Action.BATCH)
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
        [Action.CREATE, Action.CREATE, Action.SEARCH_TYPE, Action.TRANSACTION]
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
    assert by_action[Action.TRANSACTION]["status"] == failed.status
    assert by_action[Action.CREATE]["parent"] == context.request_id
    assert by_action[Action.READ]["status"] == 404
    assert len(recorded) == 4


ADT = (
    "MSH|^~\\&|UNITS|WARD|MEDBRIDGE|HOSP|20261122101500||ADT^A01|{control}|P|2.5\r"
    "EVN|A01|20261122101500\r"
    "PID|1||{mrn}^^^HOSP^MR||Unit^Hl7||19800101|F\r"
)


async def bridged(repository: Repository, hooks: list[HookSpec]) -> tuple[FhirRouter, Processor]:
    bridge = BridgeOptions("127.0.0.1", 0, Limits())
    composition = await compose(Settings(), repository, bridge=bridge, hooks=hooks)
    assert composition.processor is not None
    return composition.router, composition.processor


async def test_an_hl7_message_is_one_access_and_its_writes_are_its_children(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str, unique: str
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    audited: list[Access] = []

    async def audit(exchange: Exchange[Any, Any]) -> None:
        assert exchange.access is not None
        audited.append(exchange.access)

    _, processor = await bridged(repository, [HookSpec(Stage.AUDIT, audit, "test.audit")])
    raw = ADT.format(control=f"U-{unique}", mrn=f"M-{unique}").encode()
    result = await processor.handle(raw, "127.0.0.1:5000")
    assert result.code == "AA"
    top = [a for a in audited if a.parent is None]
    assert len(top) == 1
    message = top[0]
    assert message.door == Door.HL7V2
    assert message.action == Action.HL7_EVENT
    assert message.event == "ADT^A01"
    assert message.actor.identifier == "UNITS^WARD"
    writes = [a for a in audited if a.action in (Action.CREATE, Action.UPDATE)]
    assert writes  # the Patient at least
    for access in audited[:-1]:
        root = access
        while root.parent is not None:
            root = root.parent
        assert root is message


async def test_an_unparseable_hl7_message_is_audited_and_refused(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    audited: list[tuple[Access, str]] = []

    async def audit(exchange: Exchange[Any, Any]) -> None:
        assert exchange.access is not None
        assert exchange.response is not None
        audited.append((exchange.access, exchange.response.code))

    _, processor = await bridged(repository, [HookSpec(Stage.AUDIT, audit, "test.audit")])
    # MSH-12 (version) missing: refused before anything is parsed out of it
    raw = b"MSH|^~\\&|BROKEN|SITE|MEDBRIDGE|HOSP|20261122101500||ADT^A01|X1|P\rPID|1\r"
    result = await processor.handle(raw, "127.0.0.1:5001")
    assert result.code == "AR"
    assert len(audited) == 1
    access, code = audited[0]
    assert access.door == Door.HL7V2
    assert access.action == Action.HL7_EVENT
    assert access.event is None  # unknown: the message did not parse
    assert access.client_address == "127.0.0.1:5001"
    assert code == "AR"


async def test_an_authorize_hook_refuses_an_hl7_message_with_nothing_written(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str, unique: str
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()

    async def deny_hl7(exchange: Exchange[Any, Any]) -> None:
        if exchange.access is not None and exchange.access.door == Door.HL7V2:
            raise AccessError("MB-1030", "no HL7 from this peer")

    router, processor = await bridged(
        repository, [HookSpec(Stage.AUTHORIZE, deny_hl7, "test.deny-hl7")]
    )
    raw = ADT.format(control=f"D-{unique}", mrn=f"D-{unique}").encode()
    result = await processor.handle(raw, "127.0.0.1:5002")
    assert result.code in ("AE", "AR")
    request = FhirRequest("GET", "Patient", [("identifier", f"D-{unique}")], {}, None, BASE)
    found = await router.handle(request, RequestContext(Door.FHIR))
    assert orjson.loads(found.body or b"{}").get("entry", []) == []


async def imaging_with(repository: Repository, objects: Path, hooks: list[HookSpec]) -> Imaging:
    plan = ImagingPlan(objects, lambda: "http://test/dicomweb", parse_workers=0)
    imaging = (await compose(Settings(), repository, imaging=plan, hooks=hooks)).imaging
    assert imaging is not None
    await imaging.index.ensure_indexes()
    return imaging


async def test_an_import_is_an_access_of_the_operator_and_a_deny_hook_refuses_it(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str, tmp_path: Path
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    audited: list[Access] = []
    denying: list[bool] = [True]

    async def deny_all(exchange: Exchange[Any, Any]) -> None:
        if denying[0]:
            raise AccessError("MB-1030", "imports are not allowed")

    async def audit(exchange: Exchange[Any, Any]) -> None:
        assert exchange.access is not None
        audited.append(exchange.access)

    hooks = [
        HookSpec(Stage.AUTHORIZE, deny_all, "test.deny-all"),
        HookSpec(Stage.AUDIT, audit, "test.audit"),
    ]
    imaging = await imaging_with(repository, tmp_path / "objects", hooks)
    try:
        datasets = [base_dataset() for _ in range(2)]
        batch = [Source(f"f{n}.dcm", part10(ds)) for n, ds in enumerate(datasets)]
        door = ImportDoor(imaging)
        refused = await door.ingest(batch)
        assert [o.ok for o in refused] == [False, False]
        assert {o.code for o in refused} == {"MB-1030"}
        for ds in datasets:
            assert await imaging.index.find_instance(str(ds.SOPInstanceUID)) is None
        assert [a.action for a in audited] == [Action.IMPORT]
        assert audited[0].actor == operator()

        denying[0] = False
        audited.clear()
        stored = await door.ingest(batch)
        assert [o.ok for o in stored] == [True, True]
        for ds in datasets:
            assert await imaging.index.find_instance(str(ds.SOPInstanceUID)) is not None
        assert Action.IMPORT in [a.action for a in audited]
    finally:
        imaging.ingestor.parser.stop()
