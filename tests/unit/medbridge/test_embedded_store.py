"""medbridge.embedded_store: the speed patches give the answers nx-27017 and neosqlite
gave before them (the originals run side by side here), and the store process uses them."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import bson
import neosqlite
import pytest
from neosqlite.collection import cursor as neo_cursor
from neosqlite.collection.query_helper import aggregation
from neosqlite.objectid import ObjectId as NeoObjectId
from nx_27017.utils import convert_neo_to_bson_objectids
from pymongo import MongoClient

from medbridge import embedded_store
from medbridge.embedded_mongo import EmbeddedMongo

ORIGINAL_PROJECTION = aggregation.AggregationMixin._apply_projection
ORIGINAL_FILTERED = neo_cursor.Cursor._get_filtered_documents


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
    neo_cursor.Cursor._get_filtered_documents = ORIGINAL_FILTERED
    try:
        before = find()
        embedded_store.install_sql_exclusion()
        connection.db.set_trace_callback(statements.append)
        after = find()
    finally:
        connection.db.set_trace_callback(None)
        neo_cursor.Cursor._get_filtered_documents = ORIGINAL_FILTERED
    return before, after, statements


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
    rows = instances["dicom_instances"]

    def find() -> list[Any]:
        return list(rows.find(where, projection).sort(sort).skip(skip).limit(limit))

    before, after, statements = _original_then_patched(instances, find)
    assert after == before
    assert before  # each find matches rows: the comparison means something
    removed = [s for s in statements if "json_remove(data" in s]
    assert removed
    assert all(f"'$.{name}'" in removed[0] for name in projection)


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
