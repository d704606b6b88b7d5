"""audit/sink.py in process, on the run's real store and a real plain-TCP collector
(RFC 6587 octet counting): two senders on one chain (as two server processes) send one
stream, each event once, in chain order, and the second takes over when the first
stops or is killed (its lease lapses); a sender started again goes on from the cursor
in the store."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient

from audit import sink as sink_module
from audit.chain import AuditChain, event_id
from audit.sink import OUTBOX, OUTBOX_ID, SyslogSink
from audit.sink_transport import SinkConfig, sink_config
from fhir_server.repository import Repository
from tests.support.syslog_collector import SyslogCollector

pytestmark = pytest.mark.integration


def event(number: int) -> dict[str, Any]:
    return {
        "resourceType": "AuditEvent",
        "type": {"system": "http://terminology.hl7.org/CodeSystem/audit-event-type",
                 "code": "rest"},
        "action": "R",
        "recorded": f"2026-12-06T11:00:{number % 60:02d}.000Z",
        "outcome": "0",
        "agent": [{"requestor": True, "who": {"display": f"test {number}"}}],
        "source": {"observer": {"display": "test-host"}},
    }  # fmt: skip


@pytest.fixture
def collector() -> Iterator[SyslogCollector]:
    running = SyslogCollector(None).start()
    yield running
    running.close()


def config_for(collector: SyslogCollector) -> SinkConfig:
    return sink_config(f"tcp://127.0.0.1:{collector.port}", None, None, None, "mb-test", 0.1, 0.2)


async def arrived(collector: SyslogCollector, count: int) -> list[int]:
    messages = await asyncio.to_thread(collector.wait_for, count)
    assert collector.framing_errors == []
    return [int(m.structured["meta"]["sequenceId"]) for m in messages]


async def owner(repository: Repository) -> str:
    found = await repository.db[OUTBOX].find_one({"_id": OUTBOX_ID})
    assert found is not None
    return str(found["owner"])


async def test_two_senders_send_one_stream_and_hand_over_on_stop(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str, collector: SyslogCollector
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    chain = AuditChain(repository)
    senders = [SyslogSink(repository, config_for(collector)) for _ in range(2)]
    for sender in senders:
        sender.start()
    try:
        await asyncio.gather(*(chain.append(event(n)) for n in range(1, 6)))
        assert await arrived(collector, 5) == [1, 2, 3, 4, 5]
        [holder] = [s for s in senders if s.owner == await owner(repository)]
        [other] = [s for s in senders if s is not holder]
        await holder.stop()  # hands the lease on at once

        for n in range(6, 11):
            await chain.append(event(n))
        assert await arrived(collector, 10) == list(range(1, 11))
        assert await owner(repository) == other.owner
    finally:
        for sender in senders:
            await sender.stop()
    messages = collector.messages()
    assert len(messages) == 10  # nothing came twice
    displays = sorted(m.event()["agent"][0]["who"]["display"] for m in messages)
    assert displays == sorted(f"test {n}" for n in range(1, 11))
    assert [m.event()["id"] for m in messages] == [event_id(n) for n in range(1, 11)]
    assert {m.app_name for m in messages} == {"mb-test"}
    assert {m.hostname for m in messages} == {"test-host"}


async def test_a_sender_started_again_goes_on_from_the_cursor(
    mongo: AsyncMongoClient[dict[str, Any]], database_name: str, collector: SyslogCollector
) -> None:
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    chain = AuditChain(repository)
    first = SyslogSink(repository, config_for(collector))
    first.start()
    for n in range(1, 4):
        await chain.append(event(n))
    assert await arrived(collector, 3) == [1, 2, 3]
    await first.stop()

    for n in range(4, 7):  # while no sender runs: they wait in the store
        await chain.append(event(n))
    again = SyslogSink(repository, config_for(collector))
    again.start()
    try:
        assert await arrived(collector, 6) == [1, 2, 3, 4, 5, 6]
    finally:
        await again.stop()
    assert again.sent == 6


async def test_a_killed_senders_lease_lapses_and_another_goes_on(
    mongo: AsyncMongoClient[dict[str, Any]],
    database_name: str,
    collector: SyslogCollector,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a short lease, so the lapse takes a second rather than half a minute
    monkeypatch.setattr(sink_module, "LEASE_SECONDS", 1.0)
    monkeypatch.setattr(sink_module, "RENEW_SECONDS", 0.3)
    repository = Repository(mongo, database_name)
    await repository.ensure_indexes()
    chain = AuditChain(repository)
    killed = SyslogSink(repository, config_for(collector))
    killed.start()
    for n in range(1, 4):
        await chain.append(event(n))
    assert await arrived(collector, 3) == [1, 2, 3]
    assert await owner(repository) == killed.owner
    assert killed._task is not None
    killed._task.cancel()  # as a process killed: no hand-over, the lease stays taken
    await asyncio.gather(killed._task, return_exceptions=True)
    await killed._drop_connection()

    survivor = SyslogSink(repository, config_for(collector))
    survivor.start()
    try:
        for n in range(4, 7):
            await chain.append(event(n))
        assert await arrived(collector, 6) == [1, 2, 3, 4, 5, 6]
        assert await owner(repository) == survivor.owner
    finally:
        await survivor.stop()
