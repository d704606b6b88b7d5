"""The embedded store's entry point: nx-27017, with its commands locking every database they touch.

nx-27017 (0.8.1) keeps one SQLite connection and one lock per database and takes the lock
of the command's `$db`. A client-level `bulkWrite` (how pymongo's `client.bulk_write`
sends every FHIR and DICOM index write) is addressed to `admin`, so it ran under the
`admin` lock while writing through another database's connection, at the same time as a
find on that database. A find whose filter calls back into Python from inside SQLite
(`$regex` is a Python function registered on the connection) then waits for the GIL
while holding the connection, and the write waits for the connection while holding the
GIL: the whole store stopped answering, for good (issue 17, H3-accepted). Here a
`bulkWrite` also takes the lock of each database it names, and the other `admin`
commands that act on a session's databases (commit, abort, end) take every database's
lock; locks are taken in name order, so two such commands cannot deadlock each other.

A read outside a transaction (`plain_read`: find, count, distinct, or an aggregate
without `$out`/`$merge`, with no `txnNumber`) is answered from a second connection to
its database's SQLite file, with a lock of its own (`reader_connection`): SQLite in WAL
mode lets one writer and readers proceed together, and each read statement sees every
transaction committed before it began and none still open. Behind the one lock, each of
an HL7 message's store writes waited for the chunk finds of a concurrent QIDO page
(10-15 ms each under load; issue 17, L10); and a reader on the writing connection saw
other sessions' unfinished transactions. A read inside a transaction stays on the
writing connection, where its transaction's own writes are. The readers of a database
are closed when nx-27017 drops (unlinks), evicts or closes its connection.

nx-27017 runs every session's transaction on the database's one writing connection, so
here one transaction at a time holds it, and other writers wait (`one_writer_at_a_time`);
a transaction whose client connection closed is aborted (`abort_transactions_of`).

neosqlite (under nx-27017) deep-copies every document a find's projection is applied to,
though the document was decoded from its JSON for this query alone and the projection
only reads it or removes top-level fields from the copy: a shallow copy gives the same
answer. The deep copy was two thirds of the store's time for a QIDO page of 1,000
instance rows (`{"meta": 0}`), and the FHIR read path avoids projections for it.

neosqlite applies a find's projection after decoding each whole document from its JSON,
so a QIDO page of instance rows decoded every instance's DICOM JSON (`meta`, 30-60 nested
objects each) only to drop it: most of the store's CPU for such a page. Here a find that
excludes top-level fields has SQLite remove them from the JSON text before it is
decoded (`json_remove`, in C), when neither its filter's Python part nor its sort can
need them (`sql_exclusion`).

The page of a sorted find with `skip`/`limit` is chosen by row id first
(`page_by_ids`): SQLite computes a query's selected columns before it sorts, so each
page of a QIDO read in chunks carried every matching row's JSON through the sorter.
Around the decoding, neosqlite spends per document on work that cannot change it: its
Python projection where there is none or SQLite applied it (`needed_projection`), its
JSON decoder with an object hook built anew per document where orjson reads the same
(`plain_json_loads`), and eight date patterns per `$in` value where the value has no '-'
or '/' (`quick_datetime_test`).

nx-27017 walks every reply in Python before encoding it (`convert_neo_to_bson_objectids`:
neosqlite's ObjectId and `Decimal` into their BSON types; 8 ms on the store's event loop
for 1,000 index rows, while encoding them takes 1 ms). Here the BSON encoder converts the
two types itself, as its fallback encoder, and the walk is gone; the cursor id 0 is still
sent as an int64 (the reply's top level and the documents directly under it, where the
wire protocol puts `id`).
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import logging
import re
import sqlite3
import threading
import time
import types
import weakref
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal
from typing import Any

import bson
import neosqlite.collection as neo_collection
import orjson
from bson import Decimal128, Int64, ObjectId
from bson.codec_options import CodecOptions, TypeRegistry
from neosqlite.collection import cursor as neo_cursor
from neosqlite.collection import datetime_utils as neo_datetime
from neosqlite.collection.json_helpers import NeoSQLiteJSONEncoder
from neosqlite.collection.query_helper import aggregation as neo_aggregation
from neosqlite.collection.query_helper import crud_operations as neo_crud
from neosqlite.collection.query_helper import utils as neo_utils
from neosqlite.connection import Connection as NeoConnection
from neosqlite.objectid import ObjectId as NeoObjectId
from neosqlite.sql_utils import quote_table_name
from nx_27017 import handler as nx_handler
from nx_27017 import wire_protocol as nx_wire
from nx_27017.nx_27017 import main as nx_main

log = logging.getLogger(__name__)

#: `admin` commands that reach into other databases' connections through a session
SESSION_COMMANDS = frozenset({"commitTransaction", "abortTransaction", "endSessions"})
#: commands answered from a database's reader connection when outside a transaction
READ_COMMANDS = frozenset({"find", "count", "distinct", "aggregate"})
TRANSACTION_FIELDS = frozenset({"txnNumber", "startTransaction", "autocommit"})
TRANSACTION_ENDS = frozenset({"commitTransaction", "abortTransaction"})
_TRANSACTIONS_LOCK = threading.Lock()
#: databases of the store's own, used by no MedBridge data command
SHARED_DATABASES = frozenset({"admin", "config", "local"})
#: answered from nx-27017's cursors in memory, never from a database
CURSOR_COMMANDS = frozenset({"getMore", "killCursors"})
WAIT_SECONDS = 5.0  # a command's wait for another session's transaction to end
WRITING_STAGES = frozenset({"$out", "$merge"})
_READING = threading.local()  # the reader connection the current thread's command uses
AUTO_VACUUM_SET = re.compile(r"\s*PRAGMA\s+auto_vacuum\s*=", re.IGNORECASE)
Reader = tuple[Any, threading.Lock]  # a neosqlite Connection and the lock of its one user


def _body_and_namespaces(msg: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    body: dict[str, Any] = {}
    namespaces: list[Any] = []
    for section_type, doc in msg.get("sections") or ():
        if not isinstance(doc, dict):
            continue
        if section_type == "body":
            body = doc
            namespaces += doc.get("nsInfo") or []
        elif section_type == "payload":
            namespaces += doc.get("nsInfo") or []
    return body, namespaces


def databases_of(msg: Any, known: Iterable[str]) -> list[str]:
    """Every database a wire message's command may touch, in lock order."""
    names = {nx_handler._msg_db_name(msg) if isinstance(msg, dict) else "test"}
    if not isinstance(msg, dict):
        return sorted(names)
    body, namespaces = _body_and_namespaces(msg)
    if "bulkWrite" in body:
        for entry in namespaces:
            namespace = entry.get("ns", "") if isinstance(entry, dict) else ""
            names.add(str(namespace).partition(".")[0] or "test")
    elif names == {"admin"} and SESSION_COMMANDS & body.keys():
        names.update(known)
    return sorted(names)


def plain_read(msg: Any) -> str | None:
    """The database of a read outside any transaction (a reader connection may answer
    it), or None."""
    if not isinstance(msg, dict):
        return None
    body, _ = _body_and_namespaces(msg)
    if not body or any(kind != "body" for kind, _ in msg.get("sections") or ()):
        return None
    name = next(iter(body))
    if name not in READ_COMMANDS or TRANSACTION_FIELDS & body.keys():
        return None
    if name == "aggregate":
        stages = body.get("pipeline")
        if not isinstance(stages, list) or any(
            not isinstance(stage, dict) or WRITING_STAGES & stage.keys() for stage in stages
        ):
            return None
    database = body.get("$db", "test")
    return database if isinstance(database, str) and database != "admin" else None


def _without_session(msg: dict[str, Any]) -> dict[str, Any]:
    """The message without its `lsid`: a session's state lives on the writing connection,
    and a read outside a transaction has no use for it."""
    sections = [
        (kind, {k: v for k, v in doc.items() if k != "lsid"} if kind == "body" else doc)
        for kind, doc in msg["sections"]
    ]
    return {**msg, "sections": sections}


class ReaderSQLite(sqlite3.Connection):
    """The reader's SQLite connection, which knows its cursors. In WAL mode a connection
    reads one snapshot while any of its statements is unfinished: a cursor left half-read
    (kept alive by a reference cycle, an exception's traceback) would pin every later read
    on the reader to the past. `finish` closes them all once a command is answered."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.cursors: weakref.WeakSet[sqlite3.Cursor] = weakref.WeakSet()

    def cursor(self, factory: Any = sqlite3.Cursor) -> Any:
        cursor = super().cursor(factory)
        self.cursors.add(cursor)
        return cursor

    # the C `execute` family makes its cursor without calling `cursor()`
    def execute(self, sql: str, parameters: Any = (), /) -> sqlite3.Cursor:
        if AUTO_VACUUM_SET.match(sql):
            # neosqlite sets it on every connection it opens; setting it takes the
            # database's write lock (even to its own value), so a reader opened while a
            # transaction is open would wait for that transaction. The writer set it.
            sql = "PRAGMA auto_vacuum"
        return self.cursor().execute(sql, parameters)  # type: ignore[no-any-return]

    def executemany(self, sql: str, parameters: Any, /) -> sqlite3.Cursor:
        return self.cursor().executemany(sql, parameters)  # type: ignore[no-any-return]

    def executescript(self, script: str, /) -> sqlite3.Cursor:
        return self.cursor().executescript(script)  # type: ignore[no-any-return]

    def finish(self) -> None:
        """Every statement of the command just answered reset, and no transaction left
        open (an aggregate's SAVEPOINT whose RELEASE was skipped): the next read starts
        a new snapshot."""
        for cursor in list(self.cursors):
            cursor.close()
        self.cursors.clear()
        if self.in_transaction:
            self.rollback()


def reader_connection(handler: Any, database: str) -> Reader:
    """The read-only companion of `database`'s connection: opened on the same file, its
    own lock; created on first use."""
    with handler._dict_lock:
        readers: dict[str, Reader] = handler.__dict__.setdefault("_medbridge_readers", {})
        reader = readers.get(database)
        if reader is None:
            connection = NeoConnection(
                handler._db_file(nx_handler._sanitize_db_name(database)),
                check_same_thread=False,
                tokenizers=handler.tokenizers,
                journal_mode=handler.journal_mode,
                factory=ReaderSQLite,
            )
            reader = readers[database] = (connection, threading.Lock())
        return reader


def _close_when_free(readers: Iterable[Reader]) -> None:
    for connection, lock in readers:
        with lock, contextlib.suppress(Exception):  # a read still using it ends first
            connection.close()


def forget_readers(handler: Any, names: Iterable[str] | None) -> None:
    """Forget the reader connections of `names` (all when None) and close each once its
    read, if one is running, is done; on a thread of its own, so that no lock is waited
    for here (nx-27017 evicts a database while holding its `_dict_lock`)."""
    opened = handler.__dict__.get("_medbridge_readers") or {}
    wanted = list(opened) if names is None else [name for name in names if name in opened]
    readers = [opened.pop(name) for name in wanted]
    if readers:
        threading.Thread(
            target=_close_when_free, args=(readers,), name="medbridge-reader-close", daemon=True
        ).start()


def closing_readers(
    method: Callable[..., Any], database: Callable[[tuple[Any, ...]], Iterable[str] | None]
) -> Callable[..., Any]:
    """nx-27017's way out for a database's connection (drop, eviction, shutdown) with its
    readers: a reader left open on a dropped database's file would answer from it."""

    @functools.wraps(method)
    def closing(self: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        finally:
            forget_readers(self, database(args))

    closing._medbridge_readers = True  # type: ignore[attr-defined]
    return closing


def reading_get_database(get_database: Callable[[Any, str], Any]) -> Callable[[Any, str], Any]:
    @functools.wraps(get_database)
    def get(self: Any, db_name: str) -> Any:
        reader = getattr(_READING, "connection", None)
        if reader is not None and getattr(_READING, "database", None) == db_name:
            return reader
        return get_database(self, db_name)

    get._medbridge_reader = True  # type: ignore[attr-defined]
    return get


def _transactions(handler: Any) -> dict[str, tuple[Any, Any, Any]]:
    """Per session id with a transaction in progress: the connection that last carried
    one of its commands, its `lsid` and its `txnNumber`."""
    return handler.__dict__.setdefault("_medbridge_transactions", {})  # type: ignore[no-any-return]


def noting_transactions(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` (nx-27017's handle_command or handle_insert), noting which client
    connection carries each session's transaction (`abort_transactions_of`)."""

    @functools.wraps(command)
    def noted(self: Any, msg: Any, *args: Any, **kwargs: Any) -> Any:
        body = _body_and_namespaces(msg)[0] if isinstance(msg, dict) else {}
        # every command of a transaction says `autocommit: false` (a retryable write
        # outside one has a txnNumber too)
        if body.get("autocommit") is not False:
            return command(self, msg, *args, **kwargs)
        # read before the command: nx-27017 pops `$db` and friends from the body
        lsid, number = body.get("lsid"), body.get("txnNumber")
        ending = bool(TRANSACTION_ENDS & body.keys())
        answer = command(self, msg, *args, **kwargs)
        connection = msg.get("_conn_id")
        session = nx_wire._extract_session_id(lsid) if isinstance(lsid, dict) else None
        if session is not None and number is not None:
            with _TRANSACTIONS_LOCK:
                if ending:
                    _transactions(self).pop(session, None)
                elif connection is not None:
                    _transactions(self)[session] = (connection, lsid, number)
        return answer

    noted._medbridge_noting = True  # type: ignore[attr-defined]
    return noted


class WriterOwners:
    """Who may use each database's writing connection: the session whose transaction is
    open on it, or one command outside any transaction at a time."""

    def __init__(self) -> None:
        self.changed = threading.Condition()
        self.owner: dict[str, Any] = {}

    def claim(self, names: Iterable[str], who: Any, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self.changed:
            while not all(self.owner.get(name) in (None, who) for name in names):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self.changed.wait(left)
            for name in names:
                self.owner[name] = who
            return True

    def release(self, who: Any) -> None:
        with self.changed:
            for name in [name for name, owner in self.owner.items() if owner == who]:
                del self.owner[name]
            self.changed.notify_all()


def _owners(handler: Any) -> WriterOwners:
    with _TRANSACTIONS_LOCK:
        owners = handler.__dict__.get("_medbridge_owners")
        if owners is None:
            owners = handler.__dict__["_medbridge_owners"] = WriterOwners()
        return owners  # type: ignore[no-any-return]


def _session_ids(lsids: Any) -> list[str]:
    found = [nx_wire._extract_session_id(lsid) for lsid in lsids if isinstance(lsid, dict)]
    return [session for session in found if session]


def writer_use(msg: Any) -> tuple[str, list[str], list[str]] | None:
    """How a command uses the writing connections: ("transaction", [session], databases)
    for a command inside a transaction, ("command", [], databases) for any other command
    that is not a plain read, ("end", sessions, []) for a commit, abort or endSessions;
    None when it uses none (a plain read, a command of no database)."""
    if not isinstance(msg, dict):
        return None
    body, namespaces = _body_and_namespaces(msg)
    if not body:
        return None
    name = next(iter(body))
    if name in TRANSACTION_ENDS:
        return "end", _session_ids([body.get("lsid")]), []
    if name == "endSessions":
        ended = body.get("endSessions")
        return "end", _session_ids(ended if isinstance(ended, list) else []), []
    if name in CURSOR_COMMANDS or plain_read(msg) is not None:
        return None
    named = body.get("$db", "test")
    names = {named} if isinstance(named, str) else set()
    names |= {str(ns.get("ns", "")).partition(".")[0] for ns in namespaces if isinstance(ns, dict)}
    databases = sorted(names - SHARED_DATABASES)
    if not databases:
        return None
    sessions = _session_ids([body.get("lsid")])
    if body.get("autocommit") is False and sessions:
        return "transaction", sessions, databases
    return "command", [], databases


def one_writer_at_a_time(command: Callable[..., Any]) -> Callable[..., Any]:
    """`command` run only when its databases' writing connections are free of another
    session's transaction. nx-27017 runs every session of a database on one SQLite
    connection: a second transaction began inside the first as a SAVEPOINT (the first's
    commit committed it, so its own abort then kept its writes), and a write outside any
    transaction joined whichever was open (and went with its abort). Here a transaction
    holds its databases from its first command to its commit or abort, a command outside
    one holds them while it runs, and the others wait (at most WAIT_SECONDS, then a
    WriteConflict labelled TransientTransactionError, which MongoDB's clients retry).
    Plain reads do not wait: the reader connection answers them."""

    @functools.wraps(command)
    def guarded(self: Any, msg: Any, *args: Any, **kwargs: Any) -> Any:
        use = writer_use(msg)
        if use is None:
            return command(self, msg, *args, **kwargs)
        kind, sessions, databases = use
        owners = _owners(self)
        if kind == "end":
            try:
                return command(self, msg, *args, **kwargs)
            finally:
                for session in sessions:
                    if not self._tx_sessions(session):
                        owners.release(session)
        who: Any = sessions[0] if kind == "transaction" else object()
        if not owners.claim(databases, who, WAIT_SECONDS):
            return msg.get("request_id", 0), _write_conflict(kind == "transaction")
        try:
            return command(self, msg, *args, **kwargs)
        finally:
            if kind != "transaction" or not self._tx_sessions(who):
                owners.release(who)

    guarded._medbridge_one_writer = True  # type: ignore[attr-defined]
    return guarded


def _write_conflict(in_transaction: bool) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "ok": 0,
        "code": 112,
        "codeName": "WriteConflict",
        "errmsg": f"another session's transaction holds the database (waited {WAIT_SECONDS} s)",
    }
    if in_transaction:
        answer["errorLabels"] = ["TransientTransactionError"]
    return answer


def abort_transactions_of(handler: Any, connection: Any) -> int:
    """Abort the transactions whose last command came over `connection`, now closed: its
    client is gone (killed, or its socket broken). nx-27017 runs every session of a
    database on one SQLite connection, so a transaction left open there would hold the
    write lock and take every later write of the database into itself, never committed
    (a store restart then lost all of them). MongoDB aborts such a transaction when its
    lifetime runs out; here the client's connection closing is the sign."""
    with _TRANSACTIONS_LOCK:
        opened = _transactions(handler)
        left = [(lsid, number) for session, (conn, lsid, number) in list(opened.items())
                if conn == connection and opened.pop(session)]  # fmt: skip
    aborted = 0
    for lsid, number in left:
        body = {"abortTransaction": 1, "lsid": lsid, "txnNumber": number, "autocommit": False,
                "$db": "admin"}  # fmt: skip
        _, answer = handler.handle_command({"request_id": 0, "sections": [("body", body)]})
        if answer.get("ok") == 1:
            aborted += 1
    if aborted:
        log.info("aborted %d transaction(s) left open by a closed client connection", aborted)
    return aborted


def aborting_on_close(close: Callable[[Any, Any], None]) -> Callable[[Any, Any], None]:
    @functools.wraps(close)
    def closed(self: Any, connection: Any) -> None:
        try:
            close(self, connection)
        finally:
            abort_transactions_of(self, connection)

    closed._medbridge_aborting = True  # type: ignore[attr-defined]
    return closed


def _lock_every_database(
    command: Callable[[Any, dict[str, Any]], Any],
) -> Callable[[Any, dict[str, Any]], Any]:
    @functools.wraps(command)
    def locked(self: Any, msg: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if getattr(self, "_mode", "single") != "files":
            return command(self, msg, *args, **kwargs)  # one lock for everything already
        database = plain_read(msg)
        if database is not None:
            connection, lock = reader_connection(self, database)
            with lock:
                connection.db.finish()  # a statement left by whatever used it last
                _READING.connection, _READING.database = connection, database
                try:
                    return command(self, _without_session(msg), *args, **kwargs)
                finally:
                    _READING.connection = _READING.database = None
                    connection.db.finish()
        with self._dict_lock:
            known = list(self._locks)
        with contextlib.ExitStack() as stack:
            for name in databases_of(msg, known):
                stack.enter_context(self._lock_for(name))
            return command(self, msg, *args, **kwargs)

    return locked


def shallow_projection(deep: Callable[..., Any]) -> Callable[..., Any]:
    """neosqlite's `_apply_projection` with `deepcopy` bound to a shallow copy."""
    names = {**deep.__globals__, "deepcopy": copy.copy}
    shallow = types.FunctionType(
        deep.__code__, names, deep.__name__, deep.__defaults__, deep.__closure__
    )
    shallow.__kwdefaults__ = deep.__kwdefaults__
    shallow.__doc__, shallow.__qualname__ = deep.__doc__, deep.__qualname__
    shallow._medbridge_shallow = True  # type: ignore[attr-defined]
    return shallow


def install_shallow_projection() -> None:
    mixin = neo_aggregation.AggregationMixin
    current = mixin._apply_projection
    if not getattr(current, "_medbridge_shallow", False):
        mixin._apply_projection = shallow_projection(current)


#: top-level field names a SQL JSON path can name without quoting
PLAIN_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_SELECTING = threading.local()  # what the current thread's find selects of the JSON


def sql_selection(cursor: Any) -> str | None:
    """The top-level fields SQLite may remove from a find's documents before they are
    decoded (comma-separated): those its exclusion projection leaves out. None when the
    decoded document must stay whole (a filter's Python part or schema check reads it,
    or a sort key is inside a field left out)."""
    projection = cursor._projection
    if not isinstance(projection, dict) or not projection:
        return None
    if cursor._where_predicate is not None or "$jsonSchema" in cursor._filter:
        return None
    fields = sorted(projection)
    if any(
        projection[name] not in (0, False) or name == "_id" or not PLAIN_FIELD.fullmatch(name)
        for name in fields
    ):
        return None
    for key in dict(cursor._sort or {}):
        if str(key).split(".", 1)[0] in fields:
            return None
    return ",".join(fields)


def _data_column(jsonb_supported: bool, source: str = "data") -> str:
    column = str(neo_cursor.json_data_column(jsonb_supported, source))
    selection = getattr(_SELECTING, "selection", None)
    if selection is None:
        return column
    _SELECTING.removed = True
    paths = ", ".join(f"'$.{name}'" for name in selection.split(","))
    return f"json_remove({column}, {paths})"


def page_by_ids(cursor: Any) -> Iterable[dict[str, Any]] | None:
    """A sorted page of a find (`skip`/`limit`) as neosqlite's SQL path reads it, with the
    page chosen by row id first: `... WHERE id IN (SELECT id ... ORDER BY ... LIMIT ...
    OFFSET ...) ORDER BY ...`. SQLite computes a query's selected columns before it
    sorts, so neosqlite's one query carried every matching row's JSON through the sorter
    for each page: a QIDO's pages of 100 rows of a 1,031-instance study cost the store
    SQL 19 ms (CT headers: 154 ms), by ids 8 ms (36 ms). Only for a find that skips rows:
    for a first page of a few rows the subquery and the second sort cost more than they
    save (a `limit(1)` by an indexed field: 62 -> 82 us). None otherwise, and when the find
    is not one the SQL path pages (neosqlite's own code then reads it)."""
    if not cursor._skip or not cursor._sort:
        return None  # nothing skipped: the original's one query costs less (no subquery)
    found = cursor._filter
    if (
        cursor._where_predicate is not None
        or "$jsonSchema" in found
        or "$expr" in found
        or cursor._min
        or cursor._max
        or cursor._comment
        or cursor._contains_datetime_operations(found)
        or cursor._query_helpers._is_text_search_query(found)
    ):
        return None
    helpers = cursor._query_helpers
    sort = helpers._build_sort_clause(cursor._sort, cursor._collation)
    pagination = helpers._build_pagination_clause(cursor._limit, cursor._skip)
    if not sort or not pagination:
        return None
    built = helpers._build_simple_where_clause(found)
    if built is None:
        return None
    where, params, tables = built
    if tables:
        cursor._tables_to_cleanup.extend(tables)
    table = neo_cursor.quote_table_name(cursor._collection.name)
    data = _data_column(cursor._collection.query_engine.jsonb.jsonb_supported)
    # the table name quoted by neosqlite, the filter's values in `params`, as its own SQL
    command = (
        f"SELECT id, _id, {data} as data FROM {table} WHERE id IN "  # noqa: S608
        f"(SELECT id FROM {table} {where}{sort}{pagination}){sort}"
    )
    cursor._sql_handled_sort = cursor._sql_handled_pagination = True
    rows = cursor._collection.db.execute(command, params)

    def documents() -> Iterator[dict[str, Any]]:
        try:
            while batch := rows.fetchmany(cursor._batch_size):
                yield from cursor._load_documents(batch)
        finally:
            rows.close()  # the statement is released when the reading stops early too

    cursor._active_generator = page = documents()
    return page


def sql_exclusion(filtered: Callable[..., Any]) -> Callable[..., Any]:
    """neosqlite's `Cursor._get_filtered_documents` selecting the document's JSON without
    the fields its projection excludes (its SQL path; the Python fallback is untouched)."""
    names = {**filtered.__globals__, "json_data_column": _data_column}
    inner = types.FunctionType(
        filtered.__code__, names, filtered.__name__, filtered.__defaults__, filtered.__closure__
    )

    @functools.wraps(filtered)
    def get_filtered_documents(self: Any) -> Any:
        _SELECTING.selection, _SELECTING.removed = sql_selection(self), False
        try:
            page = page_by_ids(self)
            # the SQL is built and run here; rows are decoded as read
            documents = page if page is not None else inner(self)
            # SQLite left out every field the projection excludes: nothing left for Python
            self._medbridge_projected = _SELECTING.removed
            return documents
        finally:
            _SELECTING.selection = None

    get_filtered_documents._medbridge_sql_exclusion = True  # type: ignore[attr-defined]
    return get_filtered_documents


def needed_projection(project: Callable[..., Any]) -> Callable[..., Any]:
    """neosqlite's `Cursor._apply_projection`, not run where it cannot change a document:
    no projection (it returned each document as it was, after an import statement and a
    call per document), or one SQLite has applied already (`sql_exclusion`)."""

    @functools.wraps(project)
    def apply_projection(self: Any, documents: Iterable[dict[str, Any]]) -> Any:
        if not self._projection or getattr(self, "_medbridge_projected", False):
            return list(documents)
        return project(self, documents)

    apply_projection._medbridge_needed = True  # type: ignore[attr-defined]
    return apply_projection


def install_sql_exclusion() -> None:
    current = neo_cursor.Cursor._get_filtered_documents
    if not getattr(current, "_medbridge_sql_exclusion", False):
        neo_cursor.Cursor._get_filtered_documents = sql_exclusion(current)
    project = neo_cursor.Cursor._apply_projection
    if not getattr(project, "_medbridge_needed", False):
        neo_cursor.Cursor._apply_projection = needed_projection(project)


#: where orjson would read a document otherwise than neosqlite: its object hook turns
#: objects with these keys into types, an escape below U+0080 could spell such a key, and
#: orjson reads an integer over 64 bits as a float (any 19 digits after a `:`, `[` or `,`)
_HOOKED = re.compile(r'"\$date"|__neosqlite_|\\u00[0-7]|[:\[,]\s*-?\d{19}')


def plain_json_loads(original: Callable[..., Any]) -> Callable[..., Any]:
    """neosqlite's `neosqlite_json_loads` (the stdlib decoder with an object hook, built
    anew per document: a third of the store's CPU for a page of index rows) by orjson,
    for text its hook cannot change; the original for the rest and for what orjson
    refuses (NaN, integers over 64 bits, lone surrogates)."""

    @functools.wraps(original)
    def loads(text: Any, **kwargs: Any) -> Any:
        if kwargs or not isinstance(text, str) or _HOOKED.search(text):
            return original(text, **kwargs)
        try:
            return orjson.loads(text)
        except orjson.JSONDecodeError:
            return original(text)

    loads._medbridge_plain = True  # type: ignore[attr-defined]
    return loads


def quick_datetime_test(original: Callable[[Any], bool]) -> Callable[[Any], bool]:
    """neosqlite's `is_datetime_value`, answering False at once for a string without a
    '-' or '/': each of its date patterns needs one. It runs on every value of a find's
    `$in` (eight regular expressions each), and a QIDO page's series lookup names
    1,000 UIDs."""

    @functools.wraps(original)
    def is_datetime_value(value: Any) -> bool:
        if type(value) is str and "-" not in value and "/" not in value:
            return False
        return original(value)

    is_datetime_value._medbridge_quick = True  # type: ignore[attr-defined]
    return is_datetime_value


def _stored_text(document: dict[str, Any]) -> str:
    return json.dumps(document, cls=NeoSQLiteJSONEncoder, allow_nan=False)


def quick_insert(original: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
    """neosqlite's `_internal_insert` without costs that change nothing it writes: the deep
    copy of the document (only the copy's top level is written to), the walk that makes
    each `bytes` value a Binary where there is none (the encoder refuses `bytes`), and a
    `SELECT json_valid(?)` of the text the stdlib encoder has just written (with
    `allow_nan=False` it writes only valid JSON). Together a third of an insert, small or
    2 KB, inside a transaction; an AuditEvent is twelve inserts.
    The same text under the same `_id`; what the encoder refuses (NaN, which the check
    refused, or an unknown type) and a non-dict go to the original, which refuses them."""

    @functools.wraps(original)
    def _internal_insert(self: Any, document: Any) -> Any:
        if not isinstance(document, dict):
            return original(self, document)
        copied = dict(document)
        given = "_id" in copied
        stored_id = NeoObjectId() if not given or document["_id"] is None else document["_id"]
        copied["_id"] = stored_id
        try:
            text = _stored_text(copied)
        except TypeError:
            # a `bytes` value, which neosqlite makes a Binary before encoding (a walk that
            # builds the document anew: skipped where there is none), or an unknown type
            try:
                text = _stored_text(neo_utils._convert_bytes_to_binary(copied))
            except (TypeError, ValueError):
                return original(self, document)
        except ValueError:
            return original(self, document)
        cursor = self.collection.db.execute(
            # the table name quoted as neosqlite quotes it; the values are parameters
            f"INSERT INTO {quote_table_name(self.collection.name)}(data, _id) VALUES (?, ?)",  # noqa: S608
            (text, str(stored_id) if hasattr(stored_id, "__str__") else stored_id),
        )
        if cursor.lastrowid is None:
            raise sqlite3.Error("Failed to get last row id.")
        if not given:
            document["_id"] = stored_id
        return stored_id

    _internal_insert._medbridge_quick = True  # type: ignore[attr-defined]
    return _internal_insert


def install_quick_insert() -> None:
    current = neo_crud.CRUDOperationsMixin._internal_insert
    if not getattr(current, "_medbridge_quick", False):
        neo_crud.CRUDOperationsMixin._internal_insert = quick_insert(current)


def install_quick_datetime_test() -> None:
    current = neo_datetime.is_datetime_value
    if getattr(current, "_medbridge_quick", False):
        return
    patterns = [compiled.pattern for compiled in neo_datetime.COMPILED_DATETIME_PATTERNS]
    if not all("-" in pattern or "/" in pattern for pattern in patterns):
        return  # neosqlite changed its patterns: the shortcut would no longer be true
    neo_datetime.is_datetime_value = quick_datetime_test(current)


def install_plain_json_loads() -> None:
    current = neo_collection.neosqlite_json_loads
    if not getattr(current, "_medbridge_plain", False):
        neo_collection.neosqlite_json_loads = plain_json_loads(current)


def _bson_of(value: Any) -> Any:
    if isinstance(value, NeoObjectId):
        return ObjectId(value.binary)
    if isinstance(value, Decimal):
        return Decimal128(value)
    return value  # the encoder then refuses it, as it did before


REPLY_CODEC: CodecOptions[dict[str, Any]] = CodecOptions(
    type_registry=TypeRegistry(fallback_encoder=_bson_of)
)


def reply_encode(document: Any, check_keys: bool = False, codec_options: Any = None) -> bytes:
    """`bson.encode` with neosqlite's types converted by the encoder."""
    return bson.encode(document, check_keys, codec_options or REPLY_CODEC)


def _id_zero(document: Any) -> Any:
    return Int64(0) if document == 0 and not isinstance(document, bool) else document


def wire_ids(document: Any) -> Any:
    """What nx-27017's walk still did that the encoder does not: `id: 0` as an int64."""
    if not isinstance(document, dict):
        return document
    out = {}
    for key, value in document.items():
        if key == "id":
            value = _id_zero(value)
        elif isinstance(value, dict) and "id" in value:
            value = {k: _id_zero(v) if k == "id" else v for k, v in value.items()}
        out[key] = value
    return out


def install_reply_encoding() -> None:
    if nx_wire.encode is not reply_encode:
        nx_wire.encode = reply_encode
        nx_wire._convert_objectids = wire_ids


def install() -> None:
    """Replace nx-27017's one-database lock around `handle_command` and its reply walk,
    and neosqlite's find costs above (idempotent)."""
    install_shallow_projection()
    install_sql_exclusion()
    install_plain_json_loads()
    install_quick_datetime_test()
    install_quick_insert()
    install_reply_encoding()
    handler_class = nx_handler.NeoSQLiteHandler
    if not getattr(handler_class.get_database, "_medbridge_reader", False):
        handler_class.get_database = reading_get_database(handler_class.get_database)
    for name, database in (
        ("_drop_file_db", lambda args: [args[0]]),
        ("_evict_db_locked", lambda args: [args[0]]),
        ("close_all", lambda args: None),
    ):
        method = getattr(handler_class, name)
        if not getattr(method, "_medbridge_readers", False):
            setattr(handler_class, name, closing_readers(method, database))
    if not getattr(handler_class.close_streams_for_connection, "_medbridge_aborting", False):
        handler_class.close_streams_for_connection = aborting_on_close(
            handler_class.close_streams_for_connection
        )
    if not getattr(handler_class.handle_insert, "_medbridge_noting", False):
        handler_class.handle_insert = one_writer_at_a_time(
            noting_transactions(handler_class.handle_insert)
        )
    current = handler_class.handle_command
    if getattr(current, "_medbridge_locks", False):
        return
    # `handle_command` is nx-27017's `_serialize` wrapper; `__wrapped__` is the command
    # itself, which then runs under our locks instead of the single `$db` one
    unlocked = getattr(current, "__wrapped__", None)
    if unlocked is None:
        raise RuntimeError("nx-27017 changed: handle_command is no longer lock-wrapped")
    replacement = one_writer_at_a_time(noting_transactions(_lock_every_database(unlocked)))
    replacement._medbridge_locks = True  # type: ignore[attr-defined]
    handler_class.handle_command = replacement


def main() -> None:
    install()
    nx_main()


if __name__ == "__main__":
    main()
