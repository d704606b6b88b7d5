"""The embedded store and its clients' transactions (medbridge/embedded_store.py
`abort_transactions_of`): nx-27017 runs every session of a database on one SQLite
connection, so a transaction whose client died must not stay open there."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from nx_27017.handler import NeoSQLiteHandler
from pymongo import MongoClient

from medbridge import embedded_store
from medbridge.embedded_mongo import EmbeddedMongo

LEAVE_OPEN = """
import sys
from pymongo import MongoClient
client = MongoClient(sys.argv[1])
session = client.start_session()
session.start_transaction()
client["d"]["rows"].insert_one({"_id": "never committed"}, session=session)
print("in transaction", flush=True)
sys.stdin.read()  # held open until the test kills this process
"""


def _ids(uri: str) -> list[Any]:
    with MongoClient(uri) as client:
        return sorted(row["_id"] for row in client["d"]["rows"].find())


@pytest.fixture
def store(tmp_path: Path) -> Iterator[EmbeddedMongo]:
    """A store process with one row, `seed`, in `d.rows`."""
    running = EmbeddedMongo(tmp_path / "store")
    running.start()
    try:
        with MongoClient(running.uri) as client:
            client["d"]["rows"].insert_one({"_id": "seed"})
        yield running
    finally:
        running.stop()


def test_a_killed_clients_transaction_is_aborted_and_later_writes_stay(tmp_path: Path) -> None:
    """A client killed inside a transaction (as `kill -9` of a MedBridge process): its
    writes are gone, and what others commit after it is committed, also across a
    restart of the store. Before, the dead transaction stayed open on the database's
    connection and took every later write into itself, lost when the store stopped."""
    store = EmbeddedMongo(tmp_path / "store")
    store.start()
    try:
        with MongoClient(store.uri) as client:
            client["d"]["rows"].insert_one({"_id": "before"})
        child = subprocess.Popen(
            [sys.executable, "-c", textwrap.dedent(LEAVE_OPEN), store.uri],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None
        assert child.stdin is not None
        with child.stdin, child.stdout:
            assert child.stdout.readline() == b"in transaction\n"
            child.kill()
            child.wait(30)
        with MongoClient(store.uri) as client:
            rows = client["d"]["rows"]
            with client.start_session() as session:
                session.start_transaction()
                rows.insert_one({"_id": "committed after"}, session=session)
                session.commit_transaction()
            rows.insert_one({"_id": "written after"})
        assert _ids(store.uri) == ["before", "committed after", "written after"]
    finally:
        store.stop()
    store = EmbeddedMongo(tmp_path / "store")
    store.start()
    try:
        assert _ids(store.uri) == ["before", "committed after", "written after"]
    finally:
        store.stop()


def test_another_connection_closing_leaves_a_transaction_open(store: EmbeddedMongo) -> None:
    """Only the connection a transaction's commands came over counts."""
    with MongoClient(store.uri) as client:
        rows = client["d"]["rows"]
        with client.start_session() as session:
            session.start_transaction()
            rows.insert_one({"_id": "in transaction"}, session=session)
            for _ in range(3):  # other clients come and go meanwhile
                with MongoClient(store.uri) as other:
                    assert other["d"]["rows"].find_one({"_id": "seed"}) is not None
            session.commit_transaction()
    assert _ids(store.uri) == ["in transaction", "seed"]


LSID = {"id": b"\x02" * 16}


def _msg(body: dict[str, Any]) -> dict[str, Any]:
    return {"request_id": 1, "sections": [("body", body)], "_conn_id": "client-1"}


def test_a_database_first_read_during_a_transaction_answers(handler: NeoSQLiteHandler) -> None:
    """A reader connection opened while a transaction holds the database's write lock:
    neosqlite sets `auto_vacuum` on each connection it opens, which waits for that lock
    (and failed with 'database is locked'); the reader only reads it."""
    _, inserted = handler.handle_insert(
        _msg({"insert": "rows", "documents": [{"_id": 1}], "$db": "d"})
    )
    assert inserted["ok"] == 1
    _, opened = handler.handle_insert(
        _msg({"insert": "rows", "documents": [{"_id": 2}], "$db": "d", "lsid": LSID,
              "txnNumber": 1, "startTransaction": True, "autocommit": False})
    )  # fmt: skip
    assert opened["ok"] == 1
    answers: list[Any] = []
    reading = threading.Thread(
        target=lambda: answers.append(handler.handle_command(_msg({"find": "rows", "$db": "d"})))
    )
    reading.start()
    reading.join(timeout=3)  # under SQLite's busy timeout of 5 s
    assert not reading.is_alive(), "the first read waited for the open transaction"
    assert answers[0][1]["cursor"]["firstBatch"] == [{"_id": 1}]
    assert embedded_store.abort_transactions_of(handler, "client-1") == 1
    _, found = handler.handle_command(_msg({"find": "rows", "$db": "d", "lsid": LSID}))
    assert found["cursor"]["firstBatch"] == [{"_id": 1}]


def test_a_second_transaction_waits_for_the_first_and_its_abort_keeps_nothing(
    store: EmbeddedMongo,
) -> None:
    """Two clients' transactions on one database: the second begins once the first has
    committed, and its abort discards its own write. Before, it began inside the first
    as a SAVEPOINT, the first's commit committed it, and its abort kept its write."""
    events: list[str] = []
    with (
        MongoClient(store.uri) as first,
        MongoClient(store.uri) as second,
        first.start_session() as one,
        second.start_session() as two,
    ):
        one.start_transaction()
        first["d"]["rows"].insert_one({"_id": "first"}, session=one)

        def other() -> None:
            two.start_transaction()
            second["d"]["rows"].insert_one({"_id": "second"}, session=two)
            events.append("second wrote")
            two.abort_transaction()

        thread = threading.Thread(target=other)
        thread.start()
        thread.join(timeout=1)
        assert thread.is_alive(), "the second transaction did not wait"
        events.append("first commits")
        one.commit_transaction()
        thread.join(timeout=30)
    assert events == ["first commits", "second wrote"]
    assert _ids(store.uri) == ["first", "seed"]


def test_a_write_outside_a_transaction_waits_and_outlives_its_abort(
    store: EmbeddedMongo,
) -> None:
    """A plain write while another client's transaction is open used to join that
    transaction and vanish with its abort."""
    with (
        MongoClient(store.uri) as first,
        MongoClient(store.uri) as second,
        first.start_session() as one,
    ):
        one.start_transaction()
        first["d"]["rows"].insert_one({"_id": "aborted"}, session=one)
        thread = threading.Thread(target=lambda: second["d"]["rows"].insert_one({"_id": "plain"}))
        thread.start()
        thread.join(timeout=1)
        assert thread.is_alive(), "the plain write did not wait"
        one.abort_transaction()
        thread.join(timeout=30)
    assert _ids(store.uri) == ["plain", "seed"]


def test_a_transaction_held_too_long_is_a_transient_write_conflict(
    handler: NeoSQLiteHandler, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After WAIT_SECONDS the waiting command is refused as MongoDB refuses a conflicting
    transaction (code 112, TransientTransactionError: the driver and
    fhir_server/store_errors.py run the transaction again)."""
    monkeypatch.setattr(embedded_store, "WAIT_SECONDS", 0.2)
    _, opened = handler.handle_insert(
        _msg({"insert": "rows", "documents": [{"_id": 1}], "$db": "d", "lsid": LSID,
              "txnNumber": 1, "startTransaction": True, "autocommit": False})
    )  # fmt: skip
    assert opened["ok"] == 1
    other = {"id": b"\x03" * 16}
    _, refused = handler.handle_insert(
        _msg({"insert": "rows", "documents": [{"_id": 2}], "$db": "d", "lsid": other,
              "txnNumber": 1, "startTransaction": True, "autocommit": False})
    )  # fmt: skip
    assert refused["code"] == 112
    assert refused["errorLabels"] == ["TransientTransactionError"]
    _, plain = handler.handle_insert(
        _msg({"insert": "rows", "documents": [{"_id": 3}], "$db": "d"})
    )
    assert plain["code"] == 112
    assert "errorLabels" not in plain
    _, committed = handler.handle_command(
        _msg({"commitTransaction": 1, "lsid": LSID, "txnNumber": 1, "autocommit": False,
              "$db": "admin"})
    )  # fmt: skip
    assert committed["ok"] == 1
    _, written = handler.handle_insert(
        _msg({"insert": "rows", "documents": [{"_id": 3}], "$db": "d"})
    )
    assert written["ok"] == 1
    _, found = handler.handle_command(_msg({"find": "rows", "$db": "d"}))
    assert [row["_id"] for row in found["cursor"]["firstBatch"]] == [1, 3]
