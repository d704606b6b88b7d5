"""The embedded store's reader connections (medbridge/embedded_store.py `plain_read`): a
read outside a transaction is answered from a second SQLite connection of its database,
so it never waits for the writer's lock; it still sees every committed write and never
an open transaction's."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path
from typing import Any

import pytest
from nx_27017.handler import NeoSQLiteHandler
from pymongo import MongoClient

from medbridge import embedded_store
from medbridge.embedded_mongo import EmbeddedMongo


def _msg(body: dict[str, Any], *payloads: dict[str, Any]) -> dict[str, Any]:
    sections: list[tuple[str, Any]] = [("body", body)]
    sections += [("payload", payload) for payload in payloads]
    return {"request_id": 1, "sections": sections}


LSID = {"id": b"\x01" * 16}


@pytest.mark.parametrize(
    ("body", "database"),
    [
        ({"find": "rows", "filter": {}, "$db": "d", "lsid": LSID}, "d"),
        ({"count": "rows", "query": {}, "$db": "d"}, "d"),
        ({"distinct": "rows", "key": "n", "$db": "d"}, "d"),
        ({"aggregate": "rows", "pipeline": [{"$match": {}}], "cursor": {}, "$db": "d"}, "d"),
        # a read inside a transaction must see the transaction's own writes
        ({"find": "rows", "$db": "d", "lsid": LSID, "txnNumber": 3}, None),
        ({"find": "rows", "$db": "d", "txnNumber": 3, "startTransaction": True}, None),
        ({"aggregate": "rows", "pipeline": [{"$out": "copy"}], "cursor": {}, "$db": "d"}, None),
        ({"aggregate": "rows", "pipeline": [{"$merge": {"into": "c"}}], "$db": "d"}, None),
        ({"aggregate": "rows", "pipeline": "not a list", "$db": "d"}, None),
        ({"insert": "rows", "documents": [{}], "$db": "d"}, None),
        ({"update": "rows", "updates": [], "$db": "d"}, None),
        ({"find": "rows", "$db": "admin"}, None),
        ({"listCollections": 1, "$db": "d"}, None),
        ({"bulkWrite": 1, "ops": [], "nsInfo": [{"ns": "d.rows"}], "$db": "admin"}, None),
    ],
)
def test_reads_outside_a_transaction_are_plain_reads(
    body: dict[str, Any], database: str | None
) -> None:
    assert embedded_store.plain_read(_msg(body)) == database


def test_a_message_with_a_document_sequence_is_not_a_plain_read() -> None:
    assert embedded_store.plain_read(_msg({"find": "rows", "$db": "d"}, {"documents": []})) is None


def _command(handler: NeoSQLiteHandler, body: dict[str, Any]) -> dict[str, Any]:
    _, reply = handler.handle_command(_msg(body))
    return reply


def test_a_read_is_answered_while_the_writer_is_held(handler: NeoSQLiteHandler) -> None:
    """The writer's lock held (as by a long write): a find still answers, from the
    committed rows; a find inside a transaction waits for the writer."""
    _, inserted = handler.handle_insert(
        _msg({"insert": "rows", "documents": [{"_id": 1}], "$db": "d"})
    )
    assert inserted["ok"] == 1
    answers: dict[str, Any] = {}

    def find(name: str, body: dict[str, Any]) -> None:
        answers[name] = _command(handler, {"find": "rows", "filter": {}, "$db": "d", **body})

    with handler._lock_for("d"):
        plain = threading.Thread(target=find, args=("plain", {"lsid": LSID}))
        plain.start()
        plain.join(timeout=30)
        assert not plain.is_alive(), "a plain read waited for the writer's lock"
        in_transaction = threading.Thread(
            target=find, args=("transaction", {"lsid": LSID, "txnNumber": 1})
        )
        in_transaction.start()
        in_transaction.join(timeout=0.5)
        assert in_transaction.is_alive(), "a read in a transaction left the writer"
    in_transaction.join(timeout=30)
    assert answers["plain"]["cursor"]["firstBatch"] == [{"_id": 1}]
    assert answers["transaction"]["ok"] == 1


def _found(handler: NeoSQLiteHandler) -> list[Any]:
    batch: list[Any] = _command(handler, {"find": "rows", "filter": {}, "$db": "d"})["cursor"][
        "firstBatch"
    ]
    return batch


def _each_update_is_read(handler: NeoSQLiteHandler) -> None:
    for n in range(2, 5):
        _, updated = handler.handle_command(
            _msg({"update": "rows", "updates": [{"q": {"_id": 1}, "u": {"$set": {"n": n}}}],
                  "$db": "d"})
        )  # fmt: skip
        assert updated["nModified"] == 1
        assert _found(handler) == [{"_id": 1, "n": n}]


def test_a_statement_left_unfinished_does_not_pin_the_reader_to_the_past(
    handler: NeoSQLiteHandler,
) -> None:
    """In WAL mode a connection reads one snapshot while any of its statements is
    unfinished. A cursor left half-read on the reader (here on purpose; in a run, one kept
    alive by a reference cycle) would have every later read miss the writes committed
    since: the reader closes its cursors around each command."""
    handler.handle_insert(_msg({"insert": "rows", "documents": [{"_id": 1, "n": 1}], "$db": "d"}))
    assert _found(handler) == [{"_id": 1, "n": 1}]
    connection, lock = embedded_store.reader_connection(handler, "d")
    with lock:
        left = connection.db.execute("SELECT 1 UNION ALL SELECT 2")
        assert left.fetchone() == (1,)  # one row read, one left: the statement is open
    _each_update_is_read(handler)
    with pytest.raises(sqlite3.ProgrammingError):
        left.fetchone()  # closed by the reader, not left to the garbage collector


def test_a_transaction_left_open_does_not_pin_the_reader_to_the_past(
    handler: NeoSQLiteHandler,
) -> None:
    """neosqlite opens a SAVEPOINT around an aggregate's temporary tables; one left
    unreleased on the reader would hold its snapshot for good: rolled back after each
    command."""
    handler.handle_insert(_msg({"insert": "rows", "documents": [{"_id": 1, "n": 1}], "$db": "d"}))
    assert _found(handler) == [{"_id": 1, "n": 1}]
    connection, lock = embedded_store.reader_connection(handler, "d")
    with lock:
        connection.db.execute("SAVEPOINT left_open")
        assert connection.db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0] > 0
    _each_update_is_read(handler)
    assert not connection.db.in_transaction


def test_a_dropped_database_is_not_read_from_its_old_file(handler: NeoSQLiteHandler) -> None:
    """dropDatabase unlinks the database's file; its reader connections go with it, or a
    database made again under the same name would be answered from the old file."""
    handler.handle_insert(_msg({"insert": "rows", "documents": [{"_id": 1}], "$db": "d"}))
    assert _found(handler) == [{"_id": 1}]
    _, dropped = handler.handle_command(_msg({"dropDatabase": 1, "$db": "d"}))
    assert dropped["ok"] == 1
    assert "d" not in handler._medbridge_readers  # type: ignore[attr-defined]
    handler.handle_insert(_msg({"insert": "rows", "documents": [{"_id": 2}], "$db": "d"}))
    assert _found(handler) == [{"_id": 2}]


def test_an_evicted_database_leaves_no_reader_open(handler: NeoSQLiteHandler) -> None:
    handler.handle_insert(_msg({"insert": "rows", "documents": [{"_id": 1}], "$db": "d"}))
    assert _found(handler) == [{"_id": 1}]
    with handler._dict_lock:
        handler._evict_db_locked("d")
    assert "d" not in handler._medbridge_readers  # type: ignore[attr-defined]
    assert _found(handler) == [{"_id": 1}]  # opened again, on the same file


def test_reads_see_each_committed_write_and_no_open_transaction(tmp_path: Path) -> None:
    """Through the wire: every kind of routed read sees the write committed just before
    it (a reader connection keeps no old snapshot, also after a find that stopped early);
    a write inside an open transaction is seen only once it is committed."""
    store = EmbeddedMongo(tmp_path / "store")
    store.start()
    client: MongoClient[dict[str, Any]] = MongoClient(store.uri)
    try:
        rows = client["t"]["rows"]
        for n in range(30):
            rows.insert_one({"_id": n, "n": n, "even": n % 2 == 0})
            assert rows.find_one({"_id": n}) == {"_id": n, "n": n, "even": n % 2 == 0}
            assert rows.count_documents({}) == n + 1
            assert len(rows.distinct("n")) == n + 1
            assert [r["_id"] for r in rows.find().sort("n", -1).limit(1)] == [n]
            totals = list(rows.aggregate([{"$group": {"_id": None, "sum": {"$sum": "$n"}}}]))
            assert totals[0]["sum"] == n * (n + 1) // 2
            rows.update_one({"_id": n}, {"$set": {"seen": True}})
            assert rows.find_one({"_id": n, "seen": True}) is not None
        rows.delete_many({"even": True})
        assert rows.count_documents({}) == 15

        with client.start_session() as session:
            session.start_transaction()
            rows.insert_one({"_id": "pending", "n": -1}, session=session)
            assert rows.find_one({"_id": "pending"}, session=session) is not None
            assert rows.find_one({"_id": "pending"}) is None
            session.commit_transaction()
        assert rows.find_one({"_id": "pending"}) == {"_id": "pending", "n": -1}
    finally:
        client.close()
        store.stop()
