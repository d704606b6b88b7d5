"""The DIMSE door's access rules as pipeline hooks, driven through the composition:
the peers table's per-service rule is the `dimse.ae-titles` authorize hook, and the
worklist's FHIR search is a child of the MWL access, under its actor and restriction."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from pydicom.dataset import Dataset

from access.access import Access, Action
from access.context import Door, RequestContext
from access.errors import AccessError
from access.pipeline import Exchange, Stage
from access.restriction import Restriction
from fhir_server.exchange import FhirRequest
from fhir_server.repository import Repository
from imaging.dimse.config import DimseConfig, Peer
from imaging.dimse.door import DimseDoor, Within
from imaging.dimse.worklist import QUERY_PATIENTS, Worklist, parse_worklist
from medbridge.compose import HOOK_ORDER, HookSpec, compose
from medbridge.settings import Settings

PEERS = {
    "FINDONLY": Peer("FINDONLY", services=frozenset({"echo", "find"})),
    "MODALITY": Peer("MODALITY", services=frozenset({"echo", "store", "worklist"})),
}


async def test_the_ae_title_rules_are_an_authorize_hook_of_the_composition(
    mongo: object, database_name: str
) -> None:
    repository = Repository(mongo, database_name)  # type: ignore[arg-type]
    closed = DimseConfig(peers=PEERS, open=False)
    router = (await compose(Settings(), repository, dimse=closed)).router
    assert "dimse.ae-titles" in HOOK_ORDER
    assert "dimse.ae-titles" in router.pipeline.hooks(Stage.AUTHORIZE)
    # without a DIMSE listener there is nothing to register
    bare = (await compose(Settings(), repository)).router
    assert "dimse.ae-titles" not in bare.pipeline.hooks(Stage.AUTHORIZE)

    door = DimseDoor(share_hooks_with=router.pipeline)
    acted: list[Action] = []

    async def work(within: Within) -> str:
        acted.append(within.access.action)
        return "done"

    assert await door.run(Action.C_FIND, "FINDONLY", work) == "done"
    refusals = []
    for action, ae in ((Action.C_STORE, "FINDONLY"), (Action.C_GET, "FINDONLY"),
                       (Action.C_ECHO, "STRANGER"), (Action.MWL, "FINDONLY")):  # fmt: skip
        with pytest.raises(AccessError) as refused:
            await door.run(action, ae, work)
        refusals.append((refused.value.code, refused.value.entry.dimse))
    assert refusals == [("MB-4001", 0x0124)] * 4
    assert acted == [Action.C_FIND]  # a refused service never reaches its act
    # an open server lets unknown titles use the open services, never C-MOVE
    opened = DimseConfig(peers=PEERS, open=True)
    router = (await compose(Settings(), repository, dimse=opened)).router
    door = DimseDoor(share_hooks_with=router.pipeline)
    assert await door.run(Action.C_GET, "VIEWER", work) == "done"
    with pytest.raises(AccessError):
        await door.run(Action.C_MOVE, "VIEWER", work)
    await mongo.drop_database(database_name)  # type: ignore[attr-defined]


async def test_the_worklist_search_is_a_child_of_the_mwl_access(
    mongo: object, database_name: str, tmp_path: Path
) -> None:
    rule: dict[str, Any] = {}
    seen: list[Access] = []

    async def authorize(exchange: Exchange[Any, Any]) -> None:
        access = exchange.access
        assert access is not None
        if access.door is not Door.DIMSE:
            return
        seen.append(access)
        if access.action is Action.MWL and rule.get("only") is not None:
            # narrows the MWL access only: its FHIR children must follow it
            exchange.narrow(Restriction(patients=frozenset(rule["only"])))

    repository = Repository(mongo, database_name)  # type: ignore[arg-type]
    await repository.ensure_indexes()
    spec = HookSpec(Stage.AUTHORIZE, authorize, "test.record")
    router = (await compose(Settings(), repository, hooks=[spec])).router
    patients = []
    for family in ("Alpha", "Beta"):
        patients.append(await _create(router, "Patient", {"name": [{"family": family}]}))
        subject = {"reference": f"Patient/{patients[-1]}"}
        order = {"status": "active", "intent": "order", "subject": subject,
                 "identifier": [{"type": {"coding": [{"code": "ACSN"}]},
                                 "value": f"ACC{family}{database_name[-6:]}"}]}  # fmt: skip
        await _create(router, "ServiceRequest", order)
    door = DimseDoor(share_hooks_with=router.pipeline)
    orders = Worklist(router)
    identifier = Dataset()
    identifier.PatientName = ""
    identifier.AccessionNumber = f"ACC*{database_name[-6:]}"
    parsed = parse_worklist(identifier)

    async def work(within: Within) -> list[dict[str, Any]]:
        return await orders.records(parsed, within)

    everyone = await door.run(Action.MWL, "MODALITY", work)
    assert sorted(str(r["PatientName"]) for r in everyone) == ["Alpha", "Beta"]
    mwl, children = seen[0], seen[1:]
    assert mwl.action is Action.MWL
    assert children  # the ServiceRequest search and the Patient reads
    for child in children:
        assert child.parent is mwl
        assert child.actor == mwl.actor
        assert child.actor.identifier == "MODALITY"
        assert child.request_id.startswith(mwl.request_id + ".")
    assert len({child.request_id for child in children}) == len(children)

    rule["only"] = [patients[1]]
    narrowed = await door.run(Action.MWL, "MODALITY", work)
    assert [str(r["PatientName"]) for r in narrowed] == ["Beta"]
    # more allowed patients than the search names: matched on each order's subject
    rule["only"] = [patients[1], *(f"elsewhere{n}" for n in range(QUERY_PATIENTS))]
    narrowed = await door.run(Action.MWL, "MODALITY", work)
    assert [str(r["PatientName"]) for r in narrowed] == ["Beta"]
    rule["only"] = []
    assert await door.run(Action.MWL, "MODALITY", work) == []
    await mongo.drop_database(database_name)  # type: ignore[attr-defined]


async def _create(router: Any, resource_type: str, body: dict[str, Any]) -> str:
    request = FhirRequest(
        "POST", resource_type, [], {"content-type": "application/fhir+json"},
        orjson.dumps({"resourceType": resource_type, **body}),
    )  # fmt: skip
    response = await router.handle(request, RequestContext(Door.FHIR))
    assert response.status == 201, response.body
    created: dict[str, Any] = orjson.loads(response.body)
    return str(created["id"])
