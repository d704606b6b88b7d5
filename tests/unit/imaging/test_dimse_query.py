"""imaging.dimse.query against the real embedded store: levels, ranges, prefixes, counts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pymongo import AsyncMongoClient

from fhir_server.repository import Repository
from imaging.dimse.query import find, parse_identifier, response, split_in
from imaging.index import DicomIndex

Client = AsyncMongoClient[dict[str, object]]
NAMES = ["Šimkus^Petras", "Simpson^Homer", "Doe^John", "Doe^Jane"]


@pytest.fixture
async def index(mongo: Client, database_name: str) -> AsyncIterator[DicomIndex]:
    dicom_index = DicomIndex(Repository(mongo, database_name))  # type: ignore[arg-type]
    await dicom_index.ensure_indexes()
    studies: list[dict[str, Any]] = []
    series: list[dict[str, Any]] = []
    for n, name in enumerate(NAMES * 20):
        study = f"1.2.3.{n}"
        studies.append({
            "_id": study, "pk": f"|P{n % 4}", "PatientID": f"P{n % 4}", "PatientName": name,
            "StudyDate": f"2020{1 + n % 12:02d}15", "ns": 1, "ni": 2,
        })  # fmt: skip
        series.append({"_id": f"{study}.1", "st": study, "n": 2, "Modality": ["CT", "MR"][n % 2]})
    await dicom_index.studies.insert_many(studies)
    await dicom_index.series.insert_many(series)
    yield dicom_index
    await mongo.drop_database(database_name)


def identifier(level: str, **keys: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    for keyword, value in keys.items():
        setattr(ds, keyword, value)
    return ds


async def test_patient_level_counts(index: DicomIndex) -> None:
    query = parse_identifier(identifier("PATIENT", PatientID="P2", PatientName=""), "patient")
    rows = await find(index, query)
    assert len(rows) == 1
    assert rows[0]["NumberOfPatientRelatedStudies"] == 20
    assert rows[0]["NumberOfPatientRelatedInstances"] == 40
    answer = response(rows[0], query, "ME")
    assert str(answer.PatientName) == "Doe^John"
    assert "RetrieveAETitle" not in answer  # not a retrievable level


async def test_prefix_wildcard_matches_like_the_regex(index: DicomIndex) -> None:
    for wanted, expected in (("Sim*", 20), ("Šim*", 20), ("Doe^J*", 40), ("Doe^Ja*", 20)):
        query = parse_identifier(identifier("STUDY", PatientName=wanted), "study")
        assert len(await find(index, query)) == expected, wanted
    query = parse_identifier(identifier("STUDY", PatientName="*mps*"), "study")
    assert len(await find(index, query)) == 20  # not a prefix: the regex path


async def test_range_modalities_and_series_restriction(index: DicomIndex) -> None:
    query = parse_identifier(
        identifier("STUDY", StudyDate="20200301-20200430", ModalitiesInStudy="MR"), "study"
    )
    rows = await find(index, query)
    assert rows
    assert all("20200301" <= row["StudyDate"] <= "20200430" for row in rows)
    assert all(row["ModalitiesInStudy"] == ["MR"] for row in rows)
    series = parse_identifier(identifier("SERIES", PatientID="P1", Modality=""), "study")
    found = await find(index, series)
    assert len(found) == 20
    assert {row["Modality"] for row in found} == {"MR"}


async def test_split_in_agrees_with_in(index: DicomIndex) -> None:
    ids = [f"1.2.3.{n}" for n in range(0, 80, 3)]
    short = await split_in(index.series, {"st": {"$in": ids[:10]}}, "st", None)
    long = await split_in(index.series, {"st": {"$in": ids}}, "st", None)  # over the split cap
    assert [row["st"] for row in short] == sorted(ids[:10])
    assert sorted(row["st"] for row in long) == sorted(ids)


async def test_modalities_from_the_study_row_or_else_its_series(index: DicomIndex) -> None:
    # the fixture's rows have no `mods`: ModalitiesInStudy comes from the series rows
    query = parse_identifier(
        identifier("STUDY", StudyInstanceUID="1.2.3.1", ModalitiesInStudy=""), "study"
    )
    assert [row["ModalitiesInStudy"] for row in await find(index, query)] == [["MR"]]
    # a row the ingest keeps (`mods`, backslash-joined) answers without the series
    await index.studies.update_one({"_id": "1.2.3.1"}, {"$set": {"mods": "CT\\MR"}})
    rows = await find(index, query)
    assert [row["ModalitiesInStudy"] for row in rows] == [["CT", "MR"]]
    assert list(response(rows[0], query, "ME").ModalitiesInStudy) == ["CT", "MR"]
