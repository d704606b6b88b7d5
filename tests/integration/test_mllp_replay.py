"""`medbridge hl7 replay`: a dead-lettered message applies once its cause is fixed."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from typing import Any

import httpx
from pymongo import MongoClient

from medbridge.embedded_mongo import EmbeddedMongo
from tests.integration.test_mllp import RIS, msa, one, orm, send
from tests.support.servers import RunningServer


def test_replay_applies_a_dead_letter(
    server: RunningServer, store: EmbeddedMongo, fhir: httpx.Client, unique: str
) -> None:
    order = f"PL-{unique}"
    cancel = orm(unique, f"P{unique}", "CA", order, f"ACC-{unique}")
    [refused] = asyncio.run(send(server, cancel))
    assert msa(refused)[1] == "AE"  # the order to cancel is not known yet
    [created] = asyncio.run(send(server, orm(unique, f"P{unique}", "NW", order, "A1")))
    assert msa(created)[1] == "AA"
    client: MongoClient[dict[str, Any]] = MongoClient(store.uri)
    try:
        messages = client[server.database]["hl7_messages"]
        dead = messages.find_one({"control_id": f"ORM-CA-{unique}"})
        assert dead is not None
        assert dead["status"] == "dead-letter"
        completed = subprocess.run(
            [sys.executable, "-m", "medbridge", "hl7", "replay", str(dead["_id"]),
             "--mongodb-uri", store.uri, "--database", server.database],
            capture_output=True, timeout=120, check=False,
        )  # fmt: skip
        assert completed.returncode == 0, completed.stderr.decode()[-2000:]
        assert f"{dead['_id']}: AA" in completed.stdout.decode()
        replayed = messages.find_one({"_id": dead["_id"]})
        assert replayed is not None
        assert replayed["status"] == "processed"
        assert replayed["attempts"] == 2
    finally:
        client.close()
    assert one(fhir, "ServiceRequest", identifier=f"{RIS}|{order}")["status"] == "revoked"


def test_replay_of_unknown_id_fails(server: RunningServer, store: EmbeddedMongo) -> None:
    completed = subprocess.run(
        [sys.executable, "-m", "medbridge", "hl7", "replay", "no-such-id",
         "--mongodb-uri", store.uri, "--database", server.database],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert completed.returncode == 1
    assert b"no such archived message" in completed.stderr
