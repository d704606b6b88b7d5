"""imaging.index_query: each node compiled, the restriction on every level, and the plan
run against the real embedded store (patients linked, one study not yet linked)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pymongo import AsyncMongoClient, MongoClient

from access.restriction import UNRESTRICTED, Restriction
from fhir_server.repository import Repository
from imaging.dicomweb.qido import index_query as qido_query
from imaging.dicomweb.qido import parse_query
from imaging.fhir_link import patient_id
from imaging.index import DicomIndex
from imaging.index_query import (
    CHUNK_ROWS,
    Compiled,
    Condition,
    IndexQuery,
    Join,
    chunked,
    compile_query,
    find_rows,
    resolve,
)

Client = AsyncMongoClient[dict[str, object]]
ALICE, BOB = Restriction(patients=frozenset({"alice"})), Restriction(patients=frozenset({"bob"}))


# compiling: no I/O ------------------------------------------------------------------------


def test_own_conditions_become_the_filter() -> None:
    query = IndexQuery("study", study=(Condition("PatientID", "P1"), Condition("_id", "1.2")))
    compiled = compile_query(query, UNRESTRICTED)
    assert compiled == Compiled("study", {"PatientID": "P1", "_id": "1.2"})


def test_a_parent_uid_matches_on_the_row_itself() -> None:
    query = IndexQuery(
        "instance", study=(Condition("_id", "1.2"),), series=(Condition("_id", "1.2.1"),)
    )
    compiled = compile_query(query, UNRESTRICTED)
    assert compiled.filter == {"st": "1.2", "se": "1.2.1"}
    assert compiled.joins == ()


def test_parent_attributes_join_through_the_parent_uids() -> None:
    compiled = compile_query(
        IndexQuery("series", study=(Condition("PatientID", "P1"),)), UNRESTRICTED
    )
    assert compiled.joins == (Join("st", "study", "_id", {"PatientID": "P1"}),)


def test_series_attributes_select_studies() -> None:
    compiled = compile_query(
        IndexQuery("study", series=(Condition("Modality", "CT"),)), UNRESTRICTED
    )
    assert compiled.joins == (Join("_id", "series", "st", {"Modality": "CT"}),)


def test_uid_conditions_intersect_and_other_conditions_stack() -> None:
    query = IndexQuery(
        "study",
        study=(
            Condition("_id", {"$in": ["1", "2"]}),
            Condition("_id", {"$in": ["2", "3"]}),
            Condition("StudyDate", {"$gte": "2020"}),
            Condition("StudyDate", {"$lte": "2021"}),
        ),
    )
    where = compile_query(query, UNRESTRICTED).filter
    assert where["_id"] == {"$in": ["2"]}
    assert where["StudyDate"] == {"$gte": "2020"}
    assert where["$and"] == [{"StudyDate": {"$lte": "2021"}}]


def test_paging_is_carried() -> None:
    compiled = compile_query(IndexQuery("series", offset=5, limit=10), UNRESTRICTED)
    assert (compiled.offset, compiled.limit, compiled.sort) == (5, 10, (("_id", 1),))


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_a_study_restriction_is_on_the_row(level: Any) -> None:
    allowed = Restriction(studies=frozenset({"1.2", "1.3"}))
    compiled = compile_query(IndexQuery(level), allowed)
    field = "_id" if level == "study" else "st"
    assert compiled.filter == {field: {"$in": ["1.2", "1.3"]}}
    assert compiled.joins == ()


@pytest.mark.parametrize("level", ["series", "instance"])
def test_a_study_restriction_narrows_a_named_study(level: Any) -> None:
    allowed = Restriction(studies=frozenset({"1.2"}))
    named = compile_query(IndexQuery(level, study=(Condition("_id", "1.2"),)), allowed)
    assert named.filter == {"st": "1.2"}
    other = compile_query(IndexQuery(level, study=(Condition("_id", "9.9"),)), allowed)
    assert other.filter == {"st": {"$in": []}}


def test_a_patient_restriction_on_studies_is_their_patient_field() -> None:
    compiled = compile_query(IndexQuery("study"), ALICE)
    assert compiled.filter == {"patient": {"$in": ["alice"]}}


@pytest.mark.parametrize("level", ["series", "instance"])
def test_a_patient_restriction_below_studies_joins_one_study_lookup(level: Any) -> None:
    query = IndexQuery(level, study=(Condition("PatientID", "P1"),))
    compiled = compile_query(query, ALICE)
    assert compiled.joins == (
        Join("st", "study", "_id", {"PatientID": "P1", "patient": {"$in": ["alice"]}}),
    )


@pytest.mark.parametrize(
    "restriction",
    [Restriction(patients=frozenset()), Restriction(studies=frozenset())],
)
@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_an_empty_restriction_compiles_to_nothing(restriction: Restriction, level: Any) -> None:
    assert compile_query(IndexQuery(level), restriction).nothing


def test_qido_wildcards_stay_the_non_backtracking_compiler() -> None:
    query = parse_query("study", [("PatientName", "A*B*C")], {})
    compiled = compile_query(qido_query(query), ALICE)
    assert compiled.filter["PatientName"] == {"$regex": "(?s)^A(?>.*?B).*C\\Z"}
    assert compiled.filter["patient"] == {"$in": ["alice"]}


def test_patient_id_of_a_reference() -> None:
    assert patient_id("Patient/123") == "123"
    assert patient_id("Group/123") is None
    assert patient_id("Patient/") is None


# running: the real embedded store --------------------------------------------------------


@pytest.fixture
async def index(mongo: Client, database_name: str) -> AsyncIterator[DicomIndex]:
    """Three studies: alice's (2 series x 2 instances), bob's (1 x 1), one not linked."""
    dicom_index = DicomIndex(Repository(mongo, database_name))  # type: ignore[arg-type]
    await dicom_index.ensure_indexes()
    studies = [
        {"_id": "1.1", "PatientID": "A", "patient": "alice", "StudyDate": "20200101"},
        {"_id": "1.2", "PatientID": "B", "patient": "bob", "StudyDate": "20200101"},
        {"_id": "1.3", "PatientID": "A", "StudyDate": "20200101"},  # not linked yet
    ]
    series = [
        {"_id": "1.1.1", "st": "1.1", "Modality": "CT"},
        {"_id": "1.1.2", "st": "1.1", "Modality": "MR"},
        {"_id": "1.2.1", "st": "1.2", "Modality": "CT"},
        {"_id": "1.3.1", "st": "1.3", "Modality": "CT"},
    ]
    instances = [
        {"_id": f"{s['_id']}.{n}", "st": s["st"], "se": s["_id"], "key": "k"}
        for s in series
        for n in (1, 2)
        if s["st"] == "1.1" or n == 1
    ]
    await dicom_index.studies.insert_many(studies)
    await dicom_index.series.insert_many(series)
    await dicom_index.instances.insert_many(instances)
    yield dicom_index
    await mongo.drop_database(database_name)


async def ids(index: DicomIndex, query: IndexQuery, restriction: Restriction) -> list[str]:
    return [row["_id"] for row in await find_rows(index, compile_query(query, restriction), None)]


async def test_unrestricted_sees_everything(index: DicomIndex) -> None:
    assert await ids(index, IndexQuery("study"), UNRESTRICTED) == ["1.1", "1.2", "1.3"]
    assert len(await ids(index, IndexQuery("instance"), UNRESTRICTED)) == 6


async def test_patient_restriction_on_every_level(index: DicomIndex) -> None:
    assert await ids(index, IndexQuery("study"), ALICE) == ["1.1"]
    assert await ids(index, IndexQuery("series"), ALICE) == ["1.1.1", "1.1.2"]
    assert await ids(index, IndexQuery("instance"), BOB) == ["1.2.1.1"]
    # another patient's study named by UID is not found
    named = IndexQuery("instance", study=(Condition("_id", "1.2"),))
    assert await ids(index, named, ALICE) == []


async def test_a_study_not_linked_is_invisible_to_a_patient_restriction(
    index: DicomIndex,
) -> None:
    by_header = IndexQuery("series", study=(Condition("PatientID", "A"),))
    assert await ids(index, by_header, UNRESTRICTED) == ["1.1.1", "1.1.2", "1.3.1"]
    assert await ids(index, by_header, ALICE) == ["1.1.1", "1.1.2"]


async def test_study_restriction_and_descendant_join(index: DicomIndex) -> None:
    ct = IndexQuery("study", series=(Condition("Modality", "MR"),))
    assert await ids(index, ct, UNRESTRICTED) == ["1.1"]
    assert await ids(index, ct, Restriction(studies=frozenset({"1.2", "1.3"}))) == []
    both = Restriction(patients=frozenset({"alice", "bob"}), studies=frozenset({"1.2"}))
    assert await ids(index, IndexQuery("instance"), both) == ["1.2.1.1"]


async def test_paging_counts_only_what_the_access_sees(index: DicomIndex) -> None:
    page = IndexQuery("instance", offset=1, limit=2)
    assert await ids(index, page, ALICE) == ["1.1.1.2", "1.1.2.1"]
    assert await ids(index, page, UNRESTRICTED) == ["1.1.1.2", "1.1.2.1"]
    last = IndexQuery("instance", offset=3, limit=2)
    assert await ids(index, last, ALICE) == ["1.1.2.2"]


async def test_nothing_runs_no_query_and_finds_nothing(index: DicomIndex) -> None:
    nobody = Restriction(patients=frozenset())
    assert await resolve(index, compile_query(IndexQuery("study"), nobody)) is None
    assert await ids(index, IndexQuery("study"), nobody) == []
    unknown = Restriction(patients=frozenset({"carol"}))
    assert await resolve(index, compile_query(IndexQuery("series"), unknown)) is None


async def test_mark_linked_records_the_patient(index: DicomIndex) -> None:
    await index.studies.update_one({"_id": "1.3"}, {"$set": {"lu": 7, "dirty": True}})
    await index.mark_linked("1.3", 6, "1.3", patient="alice")  # an instance came since
    row = await index.studies.find_one({"_id": "1.3"})
    assert row is not None
    assert (row["patient"], row["dirty"]) == ("alice", True)
    assert await ids(index, IndexQuery("study"), ALICE) == ["1.1", "1.3"]


async def test_studies_linked_before_the_patient_field_are_linked_again(
    index: DicomIndex,
) -> None:
    await index.studies.update_many({}, {"$set": {"fhir": "x", "dirty": False}})
    assert await index.relink_unrecorded() == 1
    dirty = [row["_id"] async for row in index.studies.find({"dirty": True})]
    assert dirty == ["1.3"]
    await index.mark_linked("1.3", 0, "1.3", patient="alice")
    assert await index.relink_unrecorded() == 0


async def test_many_rows_are_read_in_chunks_with_offset_and_limit(index: DicomIndex) -> None:
    many = [
        {"_id": f"1.9.1.{n:04d}", "st": "1.9", "se": "1.9.1", "patient": "alice"}
        for n in range(2 * CHUNK_ROWS + 31)
    ]
    await index.instances.insert_many(many)
    wanted = [row["_id"] for row in many]
    query = IndexQuery("instance", study=(Condition("_id", "1.9"),))
    assert await ids(index, query, UNRESTRICTED) == wanted  # no limit: every chunk
    paged = IndexQuery("instance", study=(Condition("_id", "1.9"),), offset=7, limit=CHUNK_ROWS + 5)
    rows = await find_rows(index, compile_query(paged, UNRESTRICTED), None, extra=1)
    assert [row["_id"] for row in rows] == wanted[7 : 7 + CHUNK_ROWS + 6]


async def test_a_row_stored_between_two_chunks_is_answered_once(
    index: DicomIndex, store: Any, database_name: str
) -> None:
    await index.instances.insert_many(
        [{"_id": f"1.8.1.{n:04d}", "st": "1.8", "se": "1.8.1"} for n in range(1, CHUNK_ROWS + 20)]
    )
    writer: MongoClient[dict[str, Any]] = MongoClient(store.uri)

    class StoredMeanwhile:
        """The instances collection; a row sorted first is stored (by another client) just
        before the second chunk is asked for, moving every later row one place on."""

        def __init__(self) -> None:
            self.finds = 0

        def find(self, *args: Any) -> Any:
            self.finds += 1
            if self.finds == 2:
                writer[database_name]["dicom_instances"].insert_one(
                    {"_id": "1.8.1.0000", "st": "1.8", "se": "1.8.1"}
                )
            return index.instances.find(*args)

    try:
        rows = StoredMeanwhile()
        found = [r["_id"] for r in await chunked(rows, {"st": "1.8"}, None, (("_id", 1),), 0, None)]
    finally:
        writer.close()
    assert rows.finds == 2
    assert found == [f"1.8.1.{n:04d}" for n in range(1, CHUNK_ROWS + 20)]  # the last row of
    # the first chunk was read again at the start of the second, and kept once
