"""medbridge.embedded_store: the two speed patches give the answers nx-27017 and neosqlite
gave before them (the originals run side by side here), and the store process uses them."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import bson
import neosqlite
import pytest
from neosqlite.collection.query_helper import aggregation
from neosqlite.objectid import ObjectId as NeoObjectId
from nx_27017.utils import convert_neo_to_bson_objectids
from pymongo import MongoClient

from medbridge import embedded_store
from medbridge.embedded_mongo import EmbeddedMongo

ORIGINAL_PROJECTION = aggregation.AggregationMixin._apply_projection


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
