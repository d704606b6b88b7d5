"""medbridge.embedded_store: the speed patches give the answers nx-27017 and neosqlite
gave before them (the originals run side by side here), and the store process uses them."""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import bson
import neosqlite
import neosqlite.collection as neo_collection
import pytest
from neosqlite.collection import cursor as neo_cursor
from neosqlite.collection import datetime_utils as neo_datetime
from neosqlite.collection.json_helpers import neosqlite_json_dumps
from neosqlite.collection.query_helper import aggregation
from neosqlite.collection.query_helper import crud_operations as neo_crud
from neosqlite.objectid import ObjectId as NeoObjectId
from nx_27017.utils import convert_neo_to_bson_objectids
from pymongo import MongoClient

from medbridge import embedded_store
from medbridge.embedded_mongo import EmbeddedMongo

ORIGINAL_PROJECTION = aggregation.AggregationMixin._apply_projection
ORIGINAL_FILTERED = neo_cursor.Cursor._get_filtered_documents
ORIGINAL_APPLY = neo_cursor.Cursor._apply_projection
ORIGINAL_LOADS = neo_collection.neosqlite_json_loads
ORIGINAL_IS_DATETIME = neo_datetime.is_datetime_value
_INSERT = neo_crud.CRUDOperationsMixin._internal_insert
ORIGINAL_INSERT = getattr(_INSERT, "__wrapped__", _INSERT)  # another test may have installed


def test_a_reply_encodes_to_the_same_bytes_without_the_walk() -> None:
    oid = NeoObjectId()
    reply = {
        "cursor": {
            "firstBatch": [
                {"_id": oid, "price": Decimal("1.50"), "n": 3, "tags": [oid, {"d": Decimal("2")}]},
                {"_id": "1.2.3", "nested": {"deeper": [[Decimal("12345678901234567890.123")]]}},
            ],
            "id": 0,
            "ns": "db.coll",
        },
        "ok": 1.0,
    }
    before = bson.encode(convert_neo_to_bson_objectids(reply))
    after = embedded_store.reply_encode(embedded_store.wire_ids(reply))
    assert after == before
    decoded = bson.decode(after)
    assert isinstance(decoded["cursor"]["id"], bson.Int64)  # a driver needs the int64
    assert decoded["cursor"]["firstBatch"][0]["price"] == bson.Decimal128("1.50")


def test_an_unknown_type_is_still_refused() -> None:
    with pytest.raises(bson.errors.InvalidDocument):
        embedded_store.reply_encode({"x": object()})


@pytest.fixture
def collection(tmp_path: Path) -> Iterator[Any]:
    connection = neosqlite.Connection(str(tmp_path / "neo.db"))
    rows = connection["rows"]
    rows.insert_many(
        [
            {"_id": "a", "st": "1", "meta": {"00100010": {"vr": "PN"}}, "list": [{"x": 1}]},
            {"_id": "b", "st": "1", "meta": {"00100020": {"vr": "LO"}}, "n": 2},
        ]
    )
    yield rows
    connection.close()


@pytest.mark.parametrize(
    "projection",
    [{"meta": 0}, {"meta": 0, "_id": 0}, {"st": 1}, {"st": 1, "_id": 0}, {"x": "$st"}],
)
def test_a_shallow_projection_answers_as_the_deep_one(
    collection: Any, projection: dict[str, Any]
) -> None:
    aggregation.AggregationMixin._apply_projection = ORIGINAL_PROJECTION
    try:
        before = list(collection.find({"st": "1"}, projection).sort([("_id", 1)]))
        embedded_store.install_shallow_projection()
        after = list(collection.find({"st": "1"}, projection).sort([("_id", 1)]))
    finally:
        aggregation.AggregationMixin._apply_projection = ORIGINAL_PROJECTION
    assert after == before
    # the stored documents are untouched by what the projection removed
    assert [row["meta"] for row in collection.find({}).sort([("_id", 1)])] == [
        {"00100010": {"vr": "PN"}},
        {"00100020": {"vr": "LO"}},
    ]


@pytest.fixture
def instances(tmp_path: Path) -> Iterator[Any]:
    """Rows shaped like the DICOM index's: `meta` a JSON string, as imaging/index.py keeps it."""
    connection = neosqlite.Connection(str(tmp_path / "rows.db"))
    rows = connection["dicom_instances"]
    rows.create_index("st")
    rows.insert_many(
        [
            {"_id": f"1.2.{n:03d}", "st": "1" if n % 3 else "2", "se": f"s{n % 4}", "n": n,
             "meta": '{"00100010":{"vr":"PN","Value":[{"Alphabetic":"X^Y"}]}}' * (n % 5),
             "key": {"bucket": "b", "size": n}, "tags": [n, "t"]}
            for n in range(40)
        ]
    )  # fmt: skip
    yield connection
    connection.close()


def _original_then_patched(
    connection: Any, find: Callable[[], list[Any]]
) -> tuple[list[Any], list[Any], list[str]]:
    """`find` with neosqlite's own `_get_filtered_documents`, then with `sql_exclusion`'s,
    and the SQL the second run sent."""
    statements: list[str] = []
    _originals()
    try:
        before = find()
        embedded_store.install_sql_exclusion()
        connection.db.set_trace_callback(statements.append)
        after = find()
    finally:
        connection.db.set_trace_callback(None)
        _originals()
    return before, after, statements


def _page_twice(
    connection: Any,
    where: dict[str, Any],
    projection: dict[str, Any] | None,
    sort: list[tuple[str, int]],
    skip: int,
    limit: int,
) -> tuple[list[Any], list[Any], list[str]]:
    """One sorted page of the index rows, read by the original and by the patched find."""
    rows = connection["dicom_instances"]

    def find() -> list[Any]:
        return list(rows.find(where, projection).sort(sort).skip(skip).limit(limit))

    return _original_then_patched(connection, find)


def _originals() -> None:
    neo_cursor.Cursor._get_filtered_documents = ORIGINAL_FILTERED
    neo_cursor.Cursor._apply_projection = ORIGINAL_APPLY


FINDS = [
    ({"st": "1"}, {"meta": 0}, [("_id", 1)], 0, 0),
    ({"st": "1"}, {"meta": 0, "key": 0}, [("_id", -1)], 5, 7),
    ({"st": {"$in": ["1", "2"]}, "n": {"$gte": 10}}, {"meta": 0}, [("se", 1), ("_id", 1)], 0, 0),
    ({}, {"meta": 0, "tags": 0}, [("n", -1)], 3, 0),
    ({"meta": {"$regex": "X"}}, {"meta": 0}, [("_id", 1)], 0, 0),
]


@pytest.mark.parametrize(("where", "projection", "sort", "skip", "limit"), FINDS)
def test_fields_removed_by_sqlite_answer_as_the_projection(
    instances: Any,
    where: dict[str, Any],
    projection: dict[str, Any],
    sort: list[tuple[str, int]],
    skip: int,
    limit: int,
) -> None:
    before, after, statements = _page_twice(instances, where, projection, sort, skip, limit)
    assert after == before
    assert before  # each find matches rows: the comparison means something
    removed = [s for s in statements if "json_remove(data" in s]
    assert removed
    assert all(f"'$.{name}'" in removed[0] for name in projection)


PAGES = [
    ({"st": "1"}, {"meta": 0}, [("_id", 1)], 10, 5),
    ({"st": "1"}, None, [("_id", -1)], 3, 4),
    ({"st": {"$in": ["1", "2"]}}, {"key": 0}, [("se", 1), ("_id", -1)], 7, 9),
    ({}, {"se": 1}, [("se", 1)], 2, 12),  # ties on the sort key; an inclusion projection
    ({"n": {"$gte": 30}}, {"meta": 0}, [("n", -1)], 4, 0),  # a skip without a limit
]


@pytest.mark.parametrize(("where", "projection", "sort", "skip", "limit"), PAGES)
def test_a_page_chosen_by_ids_first_is_the_same_page(
    instances: Any,
    where: dict[str, Any],
    projection: dict[str, Any] | None,
    sort: list[tuple[str, int]],
    skip: int,
    limit: int,
) -> None:
    before, after, statements = _page_twice(instances, where, projection, sort, skip, limit)
    assert before

    def keys(page: list[Any]) -> list[tuple[Any, ...]]:
        return [tuple(row.get(key) for key, _ in sort) for row in page]

    if len(set(keys(before))) == len(before):
        assert after == before
    else:  # rows that tie on the sort key may come in either order, as in MongoDB
        assert keys(after) == keys(before)
    assert any("WHERE id IN (SELECT id FROM" in statement for statement in statements)


@pytest.mark.parametrize(
    "find",
    [
        lambda rows: rows.find({"st": "1"}).sort([("_id", 1)]),  # no skip, no limit
        lambda rows: rows.find({"st": "1"}).sort([("n", -1)]).limit(5),  # a first page
        lambda rows: rows.find({"st": "1"}).skip(2).limit(3),  # no sort
        lambda rows: rows.find({"st": "1"}).sort([("_id", 1)]).limit(3).comment("c"),
        lambda rows: rows.find({"$expr": {"$gt": ["$n", 30]}}).sort([("_id", 1)]).limit(3),
    ],
)
def test_finds_the_sql_path_does_not_page_are_read_as_before(instances: Any, find: Any) -> None:
    rows = instances["dicom_instances"]
    before, after, statements = _original_then_patched(instances, lambda: list(find(rows)))
    assert after == before
    assert not any("WHERE id IN (SELECT id FROM" in statement for statement in statements)


def test_a_projection_sqlite_applied_is_not_applied_again(instances: Any) -> None:
    """The Python projection runs only where it can change a document."""
    rows = instances["dicom_instances"]
    calls: list[Any] = []
    helpers_apply = aggregation.AggregationMixin._apply_projection

    def counted(self: Any, projection: Any, document: Any) -> Any:
        calls.append(projection)
        return helpers_apply(self, projection, document)

    aggregation.AggregationMixin._apply_projection = counted
    try:
        embedded_store.install_sql_exclusion()
        removed = list(rows.find({"st": "1"}, {"meta": 0}).sort([("_id", 1)]))
        plain = list(rows.find({"st": "1"}).sort([("_id", 1)]))
        assert calls == []
        included = list(rows.find({"st": "1"}, {"se": 1}).sort([("_id", 1)]))
        assert calls
        assert all(projection == {"se": 1} for projection in calls)
    finally:
        aggregation.AggregationMixin._apply_projection = helpers_apply
        _originals()
    assert removed
    assert all("meta" not in row and "key" in row for row in removed)
    assert plain
    assert all("meta" in row for row in plain)
    assert included
    assert all(set(row) == {"_id", "se"} for row in included)


JSON_TEXTS = [
    neosqlite_json_dumps({"_id": "1.2.3", "n": 1, "f": 1.5, "b": True, "z": None, "l": [1, "x"]}),
    neosqlite_json_dumps({"name": "Kazlauskienė Ąžuolė", "x": "é"}),  # escapes above U+007F
    neosqlite_json_dumps({"when": __import__("datetime").datetime(2026, 12, 6, 10, 0)}),
    neosqlite_json_dumps({"oid": NeoObjectId()}),
    '{"\\u0024date": "2026-12-06T10:00:00"}',  # an escaped key the object hook still reads
    '{"a": "\\u0041\\u0000", "k": 1}',
    '{"a": 1, "a": 2}',
    '{"big": 123456789012345678901234567890}',  # orjson reads it as a float
    '{"big": [1, -18446744073709551616], "uid": "1.2.12345678901234567890123"}',
    '{"n": NaN, "i": -Infinity}',
    '{"s": "\\ud800"}',
    '{"e": 1e400}',
]


@pytest.mark.parametrize("text", JSON_TEXTS, ids=[f"text{n}" for n in range(len(JSON_TEXTS))])
def test_documents_decode_as_neosqlite_decodes_them(text: str) -> None:
    fast = embedded_store.plain_json_loads(ORIGINAL_LOADS)
    before, after = ORIGINAL_LOADS(text), fast(text)
    assert repr(after) == repr(before)  # NaN != NaN: compared by their repr
    assert type(after) is type(before)
    if isinstance(before, dict):
        assert [type(value) for value in after.values()] == [type(v) for v in before.values()]


DATETIME_VALUES = [
    "1.2.826.0.1.3680043.8.498.12345678901234567890", "2026-12-06", " 2026-12-06T10:00:00Z",
    "06/12/2026", "2026/12/06", "06-12-2026", "2026-12-06 10:00:00", "12345678901", "ab-cd",
    "", "2026", 20261206, None, {"$date": "2026-12-06"}, {"x": "2026-12-06"}, {"x": "1.2"},
]  # fmt: skip


@pytest.mark.parametrize("value", DATETIME_VALUES)
def test_the_quick_date_test_answers_as_neosqlite(value: Any) -> None:
    assert embedded_store.quick_datetime_test(ORIGINAL_IS_DATETIME)(value) == ORIGINAL_IS_DATETIME(
        value
    )


def test_a_find_by_dates_still_reads_as_dates(tmp_path: Path) -> None:
    """`$in` of date strings goes to neosqlite's date processor with the quick test too."""
    connection = neosqlite.Connection(str(tmp_path / "dates.db"))
    rows = connection["rows"]
    rows.insert_many([{"_id": str(n), "d": f"2026-12-{n:02d}"} for n in range(1, 20)])
    where = {"d": {"$in": ["2026-12-03", "2026-12-07"]}, "_id": {"$in": ["3", "7", "8"]}}
    try:
        before = list(rows.find(where).sort([("_id", 1)]))
        embedded_store.install_quick_datetime_test()
        assert neo_datetime.is_datetime_value is not ORIGINAL_IS_DATETIME
        after = list(rows.find(where).sort([("_id", 1)]))
    finally:
        neo_datetime.is_datetime_value = ORIGINAL_IS_DATETIME
        connection.close()
    assert after == before == [{"_id": "3", "d": "2026-12-03"}, {"_id": "7", "d": "2026-12-07"}]


@pytest.mark.parametrize(
    ("where", "projection", "sort"),
    [
        ({"st": "1"}, {"meta": 0}, [("meta", 1)]),  # the sort reads the field left out
        ({"st": "1"}, {"key": 0}, [("key.size", -1)]),
        ({"st": "1"}, {"meta": 1}, [("_id", 1)]),  # inclusion: the document is needed whole
        ({"st": "1"}, {"meta": 0, "_id": 0}, [("_id", 1)]),
        ({"st": "1"}, {"meta": 0, "0010-x": 0}, [("_id", 1)]),  # not a plain field name
    ],
)
def test_documents_stay_whole_where_the_find_needs_them(
    instances: Any, where: dict[str, Any], projection: dict[str, Any], sort: Any
) -> None:
    rows = instances["dicom_instances"]

    def find() -> list[Any]:
        return list(rows.find(where, projection).sort(sort))

    before, after, statements = _original_then_patched(instances, find)
    assert after == before
    assert not any("json_remove" in s for s in statements)


def test_a_python_filter_still_sees_the_whole_document(instances: Any) -> None:
    """`$where`-like predicates and `$jsonSchema` run on the decoded document."""
    rows = instances["dicom_instances"]
    schema = {"$jsonSchema": {"required": ["meta"], "properties": {"meta": {"minLength": 1}}}}

    def find() -> list[Any]:
        return list(rows.find(schema, {"meta": 0}).sort([("_id", 1)]))

    before, after, statements = _original_then_patched(instances, find)
    assert after == before
    assert 0 < len(after) < 40  # the schema kept only rows with a non-empty meta
    assert not any("json_remove" in s for s in statements)


def test_the_store_process_answers_with_the_patches(tmp_path: Path) -> None:
    """Through the wire, with both patches in the store process: a projection, a cursor
    continued by getMore (its id an int64, 0 at the end)."""
    store = EmbeddedMongo(tmp_path / "store")
    store.start()
    client: MongoClient[dict[str, Any]] = MongoClient(store.uri)
    try:
        rows = client["t"]["rows"]
        rows.insert_many([{"_id": f"{n:03d}", "meta": "m" * 100, "n": n} for n in range(250)])
        found = list(rows.find({"n": {"$gte": 0}}, {"meta": 0}).sort("_id", 1).batch_size(40))
        assert [row["_id"] for row in found] == [f"{n:03d}" for n in range(250)]
        assert all("meta" not in row for row in found)
    finally:
        client.close()
        store.stop()


INSERTED: list[Any] = [
    {"_id": "0000000000000001#fdc596ad242fce94", "k": "action\x1f\x1fR", "r": "1"},
    {"resourceType": "AuditEvent", "o": {"agent": [{"who": {"reference": "Patient/1"}}]}},
    {"_id": None, "nested": [{"deep": [1, 2.5, None, True]}], "name": "Žemaitė \u2603"},
    {"_id": 7, "raw": b"\x00\x01", "when": datetime(2026, 12, 7, 6, 0), "day": date(2026, 1, 2)},
    {"_id": NeoObjectId(), "big": 12345678901234567890123, "e": "", "empty": {}, "list": []},
    {"_id": bson.Binary(b"id", 4), "sub": bson.Binary(b"x", 0), "t": (1, 2)},
    {"_id": "deep bytes", "list": [{"at": [b"\xff\x00"]}], "when": [datetime(2026, 1, 1)]},
]  # fmt: skip
REFUSED: list[Any] = [
    {"n": float("nan")},
    {"_id": 1, "i": [float("inf")]},
    {"unknown": object()},
    ["not", "a", "document"],
]


def _insert_both(tmp_path: Path, document: Callable[[], Any]) -> tuple[Any, Any]:
    connection = neosqlite.Connection(str(tmp_path / "inserts.db"))
    answers = []
    for name, insert in (
        ("before", ORIGINAL_INSERT),
        ("after", embedded_store.quick_insert(ORIGINAL_INSERT)),
    ):
        collection = connection[name]
        given = document()
        try:
            inserted: Any = insert(collection.query_engine.helpers, given)
        except Exception as refused:
            inserted = (type(refused), str(refused))
        rows = connection.db.execute(f"SELECT id, data, _id FROM {name}").fetchall()  # noqa: S608
        answers.append((inserted if isinstance(inserted, tuple) else repr(inserted), given, rows))
    connection.close()
    return answers[0], answers[1]


@pytest.mark.parametrize("number", range(len(INSERTED)))
def test_an_insert_writes_what_neosqlite_writes(tmp_path: Path, number: int) -> None:
    """The same JSON text under the same `_id`, the same id handed back and set on the
    caller's document; the caller's nested values left as they were."""
    fixed_id = NeoObjectId()

    def document() -> Any:
        made = copy.deepcopy(INSERTED[number])
        if "_id" not in made or made["_id"] is None:
            # neosqlite makes a new ObjectId per insert: the same one for both sides
            made["_id"] = fixed_id
        return made

    (before_id, before_doc, before_rows), (after_id, after_doc, after_rows) = _insert_both(
        tmp_path, document
    )
    assert after_rows == before_rows
    assert len(after_rows) == 1
    assert after_id == before_id
    assert repr(after_doc) == repr(before_doc) == repr(document())


def test_an_insert_without_an_id_gets_one_as_neosqlite_gives(tmp_path: Path) -> None:
    (_, before_doc, before_rows), (_, after_doc, after_rows) = _insert_both(
        tmp_path, lambda: {"k": "v", "nested": {"a": [1]}}
    )
    for document, rows in ((before_doc, before_rows), (after_doc, after_rows)):
        assert isinstance(document["_id"], NeoObjectId)
        assert rows[0][2] == str(document["_id"])
        assert rows[0][1].replace(str(document["_id"]), "ID") == before_rows[0][1].replace(
            str(before_doc["_id"]), "ID"
        )


@pytest.mark.parametrize("number", range(len(REFUSED)))
def test_what_neosqlite_refuses_to_insert_is_still_refused(tmp_path: Path, number: int) -> None:
    (before, _, before_rows), (after, _, after_rows) = _insert_both(
        tmp_path, lambda: copy.copy(REFUSED[number])
    )
    assert isinstance(before, tuple)
    assert after == before
    assert before_rows == after_rows == []
