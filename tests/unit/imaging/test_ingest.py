"""imaging.ingest against the real embedded store: duplicates, conflicts, quarantine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydicom.uid import generate_uid
from pymongo import AsyncMongoClient

from fhir_server.repository import Repository
from imaging.index import Added, DicomIndex
from imaging.ingest import Ingestor, IngestPolicy
from imaging.objectstore import LocalObjectStore
from tests.support.dicom import nested_sequences, renamed

Client = AsyncMongoClient[dict[str, object]]


@pytest.fixture
async def index(mongo: Client, database_name: str) -> AsyncIterator[DicomIndex]:
    dicom_index = DicomIndex(Repository(mongo, database_name))  # type: ignore[arg-type]
    await dicom_index.ensure_indexes()
    yield dicom_index
    await mongo.drop_database(database_name)


def _files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "dicom").rglob("*") if p.is_file())


async def test_same_bytes_twice_is_one_copy(index: DicomIndex, tmp_path: Path) -> None:
    ingestor = Ingestor(LocalObjectStore(tmp_path), index, IngestPolicy())
    data = renamed("CT_small.dcm")
    first = await ingestor.ingest(data, "test")
    second = await ingestor.ingest(data, "test")
    assert first.ok
    assert first.added is Added.STORED
    assert second.ok
    assert second.added is Added.DUPLICATE
    assert len(_files(tmp_path)) == 1
    study = await index.studies.find_one({"_id": first.study})
    assert study is not None
    assert (study["ns"], study["ni"]) == (1, 1)


async def test_other_bytes_same_sop_refused_or_replaced(index: DicomIndex, tmp_path: Path) -> None:
    import io

    import pydicom

    data = renamed("CT_small.dcm")
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.StudyDescription = "changed"
    out = io.BytesIO()
    ds.save_as(out)
    changed = out.getvalue()
    refusing = Ingestor(LocalObjectStore(tmp_path), index, IngestPolicy())
    assert (await refusing.ingest(data, "test")).ok
    refused = await refusing.ingest(changed, "test")
    assert (refused.status, refused.code) == (0x0111, "MB-3005")
    assert len(_files(tmp_path)) == 1  # refused bytes leave no object behind
    replacing = Ingestor(LocalObjectStore(tmp_path), index, IngestPolicy(replace_different=True))
    replaced = await replacing.ingest(changed, "test")
    assert replaced.ok
    assert replaced.added is Added.REPLACED
    assert len(_files(tmp_path)) == 2  # the old object is kept
    row = await index.find_instance(str(ds.SOPInstanceUID))
    assert row is not None
    assert row["sha256"] == replaced.sha256
    assert row["previous_key"] != row["key"]


async def test_study_uid_of_another_patient_is_refused(index: DicomIndex, tmp_path: Path) -> None:
    ingestor = Ingestor(LocalObjectStore(tmp_path), index, IngestPolicy())
    first = await ingestor.ingest(renamed("CT_small.dcm", patient_id="A"), "test")
    assert first.ok
    other = await ingestor.ingest(
        renamed("CT_small.dcm", study=first.study, patient_id="B"), "test"
    )
    assert (other.ok, other.code) == (False, "MB-3006")
    study = await index.studies.find_one({"_id": first.study})
    assert study is not None
    assert study["ni"] == 1


async def test_refused_bytes_are_quarantined_with_the_reason(
    index: DicomIndex, tmp_path: Path
) -> None:
    ingestor = Ingestor(LocalObjectStore(tmp_path), index, IngestPolicy())
    data = nested_sequences(300)
    outcome = await ingestor.ingest(data, "test")
    assert (outcome.status, outcome.code) == (0xC000, "MB-3004")
    assert outcome.sha256 is not None
    kept = tmp_path / "quarantine" / outcome.sha256[:2] / f"{outcome.sha256}.bin"
    assert kept.read_bytes() == data
    note = kept.with_suffix(".json").read_text()
    assert "MB-3004" in note
    row = await index.quarantine.find_one({"_id": outcome.sha256})
    assert row is not None
    assert row["code"] == "MB-3004"
    assert _files(tmp_path) == []


async def test_concurrent_ingests_share_groups_and_keep_counts(
    index: DicomIndex, tmp_path: Path
) -> None:
    """Instances of concurrent callers are indexed in shared transactions; the counters,
    the series rows, the duplicates and the patient check come out as if one by one."""
    import asyncio

    ingestor = Ingestor(LocalObjectStore(tmp_path), index, IngestPolicy())
    study, series_a, series_b = (str(generate_uid()) for _ in range(3))
    first = [renamed("CT_small.dcm", study, series_a, patient_id="P") for _ in range(6)]
    second = [renamed("MR_small.dcm", study, series_b, patient_id="P") for _ in range(4)]
    intruder = renamed("CT_small.dcm", study, patient_id="OTHER")
    calls = [ingestor.ingest(data, "test") for data in first + second]
    calls += [ingestor.ingest(first[0], "test"), ingestor.ingest(intruder, "test")]
    outcomes = await asyncio.gather(*calls)
    # first[0] was sent twice at once: either call may store it, the other is its duplicate
    assert [o.added for o in outcomes[1:10]] == [Added.STORED] * 9
    assert {outcomes[0].added, outcomes[10].added} == {Added.STORED, Added.DUPLICATE}
    assert (outcomes[11].ok, outcomes[11].code) == (False, "MB-3006")
    study_row = await index.studies.find_one({"_id": study})
    assert study_row is not None
    assert (study_row["ns"], study_row["ni"], study_row["mods"]) == (2, 10, "CT\\MR")
    series_rows = {row["_id"]: row["n"] async for row in index.series.find({"st": study})}
    assert series_rows == {series_a: 6, series_b: 4}
    stored_sops = {path.parent.name for path in _files(tmp_path)}
    # the intruder's object, written while its patient was checked, is gone again
    assert stored_sops == {o.sop_instance for o in outcomes[:10]}
    assert outcomes[0].sop_instance == outcomes[10].sop_instance
    duplicate_folder = next(
        p.parent for p in _files(tmp_path) if p.parent.name == outcomes[0].sop_instance
    )
    assert len(list(duplicate_folder.iterdir())) == 1  # the duplicate made no second copy
    # a later group for the same study and series: counters go on from the stored ones
    more = await ingestor.ingest(renamed("CT_small.dcm", study, series_a, patient_id="P"), "t")
    assert more.added is Added.STORED
    study_row = await index.studies.find_one({"_id": study})
    assert study_row is not None
    assert (study_row["ns"], study_row["ni"]) == (2, 11)
    series_row = await index.series.find_one({"_id": series_a})
    assert series_row is not None
    assert series_row["n"] == 7


async def test_a_new_index_on_the_same_rows_agrees(index: DicomIndex, tmp_path: Path) -> None:
    """The caches of one DicomIndex are not needed for correctness: another index (another
    process) sees the same owners and series."""
    ingestor = Ingestor(LocalObjectStore(tmp_path), index, IngestPolicy())
    first = await ingestor.ingest(renamed("CT_small.dcm", patient_id="A"), "test")
    assert first.ok
    assert first.study
    other = DicomIndex(index.repository)
    await other.ensure_indexes()
    again = Ingestor(LocalObjectStore(tmp_path), other, IngestPolicy())
    refused = await again.ingest(renamed("CT_small.dcm", first.study, patient_id="B"), "t")
    assert refused.code == "MB-3006"
    joined = await again.ingest(
        renamed("CT_small.dcm", first.study, first.series, patient_id="A"), "t"
    )
    assert joined.added is Added.STORED
    study = await index.studies.find_one({"_id": first.study})
    assert study is not None
    assert (study["ns"], study["ni"]) == (1, 2)


async def test_a_study_sent_again_turns_the_duplicate_read_back_on(
    index: DicomIndex, tmp_path: Path
) -> None:
    ingestor = Ingestor(LocalObjectStore(tmp_path), index, IngestPolicy())
    study_uid, series_uid = generate_uid(), generate_uid()
    sent = [renamed("CT_small.dcm", study=study_uid, series=series_uid) for _ in range(3)]
    assert ingestor.optimistic  # nothing sent twice yet: the index's unique _id checks
    assert [o.added for o in await ingestor.ingest_many(sent, "test")] == [Added.STORED] * 3
    again = await ingestor.ingest_many(sent, "test")  # found by the index, redone fresh
    assert [(o.ok, o.added) for o in again] == [(True, Added.DUPLICATE)] * 3
    assert not ingestor.optimistic  # repeats seen: the read goes first again
    assert [o.added for o in await ingestor.ingest_many(sent, "test")] == [Added.DUPLICATE] * 3
    for _ in range(40):  # new instances only: back to skipping the read
        assert (await ingestor.ingest(renamed("CT_small.dcm"), "test")).added is Added.STORED
    assert ingestor.optimistic
    study = await index.studies.find_one({"_id": study_uid})
    assert study is not None
    assert (study["ns"], study["ni"]) == (1, 3)  # the repeats counted nothing twice
    assert len(_files(tmp_path)) == 43


async def test_the_background_fill_stores_dicom_json_in_one_write(
    index: DicomIndex, tmp_path: Path
) -> None:
    """Instances stored without their DICOM JSON are flagged (indexed), get it from
    `fill_metadata_once`, made on a parse worker as `metadata_of` makes it, and lose the
    flag; the last pass finds nothing to do."""
    from imaging.parse import metadata_of
    from imaging.parse_pool import Parser
    from imaging.services import Imaging

    store = LocalObjectStore(tmp_path)
    parser = Parser(workers=1)
    ingestor = Ingestor(store, index, IngestPolicy(), parser)
    sources = [renamed("CT_small.dcm"), renamed("MR_small.dcm"), renamed("CT_small.dcm")]
    sops = []
    for data in sources:
        outcome = await ingestor.ingest(data, "test")
        assert outcome.ok
        sops.append(outcome.sop_instance)
    stored = await index.instances.find({}).to_list()
    assert [("meta" in row, row.get("nm")) for row in stored] == [(False, 1)] * 3
    imaging = Imaging(store, index, ingestor, linker=None, dicomweb=None)  # type: ignore[arg-type]
    try:
        assert len(await index.without_metadata(10)) == 3
        assert await imaging.fill_metadata_once(2) == 2
        assert await imaging.fill_metadata_once(2) == 1
        assert await imaging.fill_metadata_once(2) == 0
    finally:
        parser.stop()
    for sop, data in zip(sops, sources, strict=True):
        row = await index.instances.find_one({"_id": sop})
        assert row is not None
        assert row["meta"] == metadata_of(data)
        assert "nm" not in row  # the flag the filler looks for goes with it
