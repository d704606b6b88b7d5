"""imaging.ingest against the real embedded store: duplicates, conflicts, quarantine."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
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
