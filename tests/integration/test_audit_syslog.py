"""The audit sink (issue 15): every AuditEvent of a real `medbridge serve` also reaches a
syslog collector over TLS (RFC 5424 messages, RFC 5425 octet counting, IHE ATNA), in
chain order, exactly once, across a collector that is stopped and started again, that
refuses our certificate, or whose certificate we do not trust; a wrong setting stops
the start.

The collector is a real asyncio TLS server (tests/support/syslog_collector.py) with the
test CA of tests/support/pki.py; the events are read back from the store with pymongo.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pymongo import MongoClient

from access.tls import TlsFiles, server_context
from medbridge.embedded_mongo import free_port
from tests.support.pki import Pki, make_pki
from tests.support.servers import RunningServer, start_server
from tests.support.syslog_collector import Message, SyslogCollector

pytestmark = pytest.mark.integration

Event = dict[str, Any]
AUTHPRIV = 10
START_SECONDS = 180.0  # a shared, busy machine: the start is not what is tested here


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("syslog-pki"))


@pytest.fixture(scope="module")
def stranger(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    """Another CA: certificates neither side trusts."""
    return make_pki(tmp_path_factory.mktemp("syslog-stranger"))


def collector_context(certificates: Pki, client_ca: Path) -> Any:
    return server_context(TlsFiles(certificates.server_cert, certificates.server_key, client_ca))


def sink_env(pki: Pki, port: int) -> dict[str, str]:
    return {
        "MEDBRIDGE_AUDIT_SYSLOG": f"tls://localhost:{port}",
        "MEDBRIDGE_AUDIT_SYSLOG_CA": str(pki.ca),
        "MEDBRIDGE_AUDIT_SYSLOG_CERT": str(pki.client_cert),
        "MEDBRIDGE_AUDIT_SYSLOG_KEY": str(pki.client_key),
        "MEDBRIDGE_AUDIT_SYSLOG_POLL_SECONDS": "0.2",
        "MEDBRIDGE_AUDIT_SYSLOG_RETRY_MAX_SECONDS": "0.5",
    }


def serve(tmp_path: Path, store: Any, pki: Pki, port: int) -> RunningServer:
    """`medbridge serve` sending its audit trail to the collector on `port`."""
    env = sink_env(pki, port)
    return start_server(tmp_path / "server", store.uri, env=env, timeout=START_SECONDS)


@pytest.fixture
def collector(pki: Pki) -> Iterator[SyslogCollector]:
    running = SyslogCollector(collector_context(pki, pki.ca)).start()
    yield running
    running.close()


def stored(server: RunningServer) -> list[tuple[str, bytes]]:
    """(id, raw JSON) of every stored AuditEvent, in chain order."""
    with MongoClient(server.mongodb_uri) as client:
        found = client[server.database]["AuditEvent"].find({}, {"raw": 1}).sort("_id", 1)
        return [(str(doc["_id"]), bytes(doc["raw"])) for doc in found]


def outbox_sent(server: RunningServer) -> int:
    with MongoClient(server.mongodb_uri) as client:
        found = client[server.database]["audit_outbox"].find_one({"_id": "syslog"})
        return int(found["sent"]) if found is not None else 0


def log_says(server: RunningServer, text: str, timeout: float = 60.0) -> None:
    """Wait until the server's log has `text` (a condition, not a fixed time)."""
    deadline = time.monotonic() + timeout
    while text not in server.log():
        assert time.monotonic() < deadline, f"the log never said {text!r}"
        time.sleep(0.1)


def create_patients(server: RunningServer, count: int) -> None:
    for _ in range(count):
        body = {"resourceType": "Patient", "active": True}
        created = httpx.post(f"{server.fhir_base}/Patient", json=body, timeout=30)
        assert created.status_code == 201, created.text


def all_arrived(collector: SyslogCollector, server: RunningServer) -> list[Message]:
    """What the collector got once it got as many messages as the store holds events,
    checked to be those events, each once, in chain order, byte for byte."""
    events = stored(server)
    messages = collector.wait_for(len(events))
    assert collector.framing_errors == []
    sequences = [int(m.structured["meta"]["sequenceId"]) for m in messages]
    assert sequences == list(range(1, len(events) + 1))
    assert [m.event()["id"] for m in messages] == [identifier for identifier, _ in events]
    assert [m.msg[3:] for m in messages] == [raw for _, raw in events]
    return messages


def test_every_event_arrives_once_in_order_across_a_collector_restart(
    tmp_path: Path, store: Any, pki: Pki, collector: SyslogCollector
) -> None:
    server = serve(tmp_path, store, pki, collector.port)
    try:
        create_patients(server, 3)
        before = all_arrived(collector, server)
        assert len(before) >= 3

        collector.stop()  # the security log goes down mid-run
        create_patients(server, 4)
        held = len(stored(server))
        # the sink has tried while nobody listens and says the events wait
        log_says(server, "events wait in the store")
        assert len(collector.frames) == len(before)
        assert outbox_sent(server) == len(before)  # the rest waits in the store

        collector.start()
        create_patients(server, 2)
        messages = all_arrived(collector, server)
        assert len(messages) >= held + 2
        assert outbox_sent(server) == len(messages)
    finally:
        server.stop()
    log = server.log()
    assert "reached again" in log
    # the messages themselves: ITI-20's facility, the event's type, its outcome
    created = [m for m in messages if any(s.get("code") == "create"
                                          for s in m.event().get("subtype", []))]  # fmt: skip
    assert len(created) == 9
    for message in created:
        event = message.event()
        assert (message.facility, message.severity, message.version) == (AUTHPRIV, 5, 1)
        assert message.app_name == "medbridge"
        assert message.msgid == event["type"]["code"] == "rest"
        assert message.timestamp == event["recorded"]
        assert message.hostname == event["source"]["observer"]["display"]


def test_a_refused_request_is_a_warning(
    tmp_path: Path, store: Any, pki: Pki, collector: SyslogCollector
) -> None:
    server = serve(tmp_path, store, pki, collector.port)
    try:
        missing = httpx.get(f"{server.fhir_base}/Patient/no-such-patient", timeout=30)
        assert missing.status_code == 404
        messages = all_arrived(collector, server)
    finally:
        server.stop()
    [read] = [m for m in messages if m.event()["outcome"] == "4"]
    assert (read.facility, read.severity) == (AUTHPRIV, 4)


@pytest.mark.parametrize(
    "refusal",
    ["the collector refuses our certificate", "we do not trust the collector"],
)
def test_an_unaccepted_collector_gets_nothing_and_the_events_wait(
    tmp_path: Path, store: Any, pki: Pki, stranger: Pki, refusal: str
) -> None:
    if refusal == "the collector refuses our certificate":
        bad = SyslogCollector(collector_context(pki, client_ca=stranger.ca))
        expected_log = "closed the connection"
    else:
        bad = SyslogCollector(collector_context(stranger, client_ca=pki.ca))
        expected_log = "certificate not trusted"
    bad.start()
    server = serve(tmp_path, store, pki, bad.port)
    try:
        create_patients(server, 3)
        log_says(server, expected_log)  # it tried and was refused
        assert bad.frames == []
        assert outbox_sent(server) == 0
        assert expected_log in server.log()
        bad.close()

        good = SyslogCollector(collector_context(pki, pki.ca), port=bad.port).start()
        try:
            create_patients(server, 1)
            good.wait_for(len(stored(server)))
            assert len(good.frames) >= 4, server.log()[-3000:]
            messages = all_arrived(good, server)
            assert len(messages) >= 4
        finally:
            good.close()
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"MEDBRIDGE_AUDIT_SYSLOG": "udp://localhost:514"}, "must be tls://host:port"),
        ({"MEDBRIDGE_AUDIT_SYSLOG": "tls://siem.example"}, "needs a host and a port"),
        ({"MEDBRIDGE_AUDIT_SYSLOG": "tcp://siem.example:514"}, "only to a loopback collector"),
        ({"MEDBRIDGE_AUDIT_SYSLOG": "tls://localhost:6514", "MEDBRIDGE_AUDIT": "false"},
         "MEDBRIDGE_AUDIT=false"),
        ({"MEDBRIDGE_AUDIT_SYSLOG": "tls://localhost:6514",
          "MEDBRIDGE_AUDIT_SYSLOG_CA": "/nonexistent/ca.pem"}, "TLS files unusable"),
        ({"MEDBRIDGE_AUDIT_SYSLOG": "tls://localhost:6514",
          "MEDBRIDGE_AUDIT_SYSLOG_APP_NAME": "med bridge"}, "APP-NAME"),
    ],
)  # fmt: skip
def test_a_wrong_setting_stops_the_start_with_its_reason(
    tmp_path: Path, env: dict[str, str], reason: str
) -> None:
    command = [
        sys.executable, "-m", "medbridge", "serve", "--no-auth",
        "--data-dir", str(tmp_path), "--http-port", str(free_port()),
    ]  # fmt: skip
    finished = subprocess.run(
        command, env={**os.environ, **env}, capture_output=True, timeout=60, check=False
    )
    output = (finished.stdout + finished.stderr).decode()
    assert finished.returncode == 2, output
    assert "refusing to start: MEDBRIDGE_AUDIT" in output
    assert reason in output
    assert "Traceback" not in output


def test_a_client_certificate_without_its_key_stops_the_start(tmp_path: Path, pki: Pki) -> None:
    env = {"MEDBRIDGE_AUDIT_SYSLOG": "tls://localhost:6514",
           "MEDBRIDGE_AUDIT_SYSLOG_CERT": str(pki.client_cert)}  # fmt: skip
    finished = subprocess.run(
        [sys.executable, "-m", "medbridge", "serve", "--no-auth", "--data-dir", str(tmp_path)],
        env={**os.environ, **env}, capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    output = (finished.stdout + finished.stderr).decode()
    assert finished.returncode == 2, output
    assert "needs its private key" in output
