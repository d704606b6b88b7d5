"""A replay a hook refuses leaves the archive as it was: the dead letter stays a dead
letter (found by issue 12's enumeration: the message used to be claimed, its dead-letter
status given up, before its access reached the hooks)."""

from __future__ import annotations

from typing import Any

from pymongo import AsyncMongoClient

from access.access import Action
from access.errors import AccessError
from access.pipeline import Exchange, Stage
from fhir_server.repository import Repository
from medbridge.compose import HookSpec
from tests.integration.test_mllp import orm
from tests.integration.test_units_of_work import bridged


async def test_a_refused_replay_keeps_the_dead_letter(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str, unique: str
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()

    async def deny_replays(exchange: Exchange[Any, Any]) -> None:
        if exchange.access is not None and exchange.access.action == Action.REPLAY:
            raise AccessError("MB-4001", "no replays today")

    _, processor = await bridged(
        repository, [HookSpec(Stage.AUTHORIZE, deny_replays, "test.deny-replays")]
    )
    cancel = orm(unique, f"P{unique}", "CA", f"PL-{unique}", f"ACC-{unique}")
    assert (await processor.handle(cancel.encode(), "127.0.0.1:5003")).code == "AE"
    [dead] = await processor.archive.failed_ids()
    before = await processor.archive.get(dead)
    refused = await processor.replay(dead)
    assert refused.code == "AR"
    assert refused.ack is not None
    assert "MB-4001" in refused.ack.decode()
    assert await processor.archive.get(dead) == before
    assert await processor.archive.failed_ids() == [dead]
