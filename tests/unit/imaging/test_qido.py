"""QIDO-RS query parsing and PS3.4 matching compiled to MongoDB conditions (no I/O)."""

from __future__ import annotations

import pytest

from access.errors import AccessError
from imaging.dicomweb.qido import Match, condition, parse_query


def test_parse_query_reads_keywords_tags_and_controls() -> None:
    query = parse_query(
        "study",
        [("00100020", "P1"), ("StudyDate", "2020-"), ("includefield", "00081030,all"),
         ("limit", "5"), ("offset", "10"), ("fuzzymatching", "true")],
        {"StudyInstanceUID": "1.2.3"},
    )  # fmt: skip
    assert Match("PatientID", "P1") in query.matches
    assert Match("StudyInstanceUID", "1.2.3") in query.matches
    assert (query.limit, query.offset, query.fuzzy, query.include_all) == (5, 10, True, True)
    assert "StudyDescription" in query.include


@pytest.mark.parametrize(
    ("keyword", "value", "expected"),
    [
        ("StudyDate", "20200101-20201231", ("StudyDate", {"$gte": "20200101", "$lte": "20201231"})),
        ("StudyDate", "-20201231", ("StudyDate", {"$lte": "20201231"})),
        ("StudyDate", "20200101-", ("StudyDate", {"$gte": "20200101"})),
        ("StudyTime", "0800-1000", ("StudyTime", {"$gte": "0800", "$lte": "1000235959.999999"})),
        ("StudyInstanceUID", "1.2.3,1.2.4", ("StudyInstanceUID", {"$in": ["1.2.3", "1.2.4"]})),
        ("StudyInstanceUID", "1.2.3\\1.2.4", ("StudyInstanceUID", {"$in": ["1.2.3", "1.2.4"]})),
        ("SeriesNumber", "3", ("SeriesNumber", 3)),
        ("PatientID", "AB*", ("PatientID", {"$regex": "(?s)^AB"})),
        ("PatientID", "A?C", ("PatientID", {"$regex": "(?s)^A.C\\Z"})),
        ("PatientID", "a.b", ("PatientID", "a.b")),
        ("PatientID", "a.b*", ("PatientID", {"$regex": "(?s)^a\\.b"})),
    ],
)
def test_matching_rules(keyword: str, value: str, expected: tuple[str, object]) -> None:
    assert condition(Match(keyword, value), fuzzy=False) == expected


def test_fuzzy_person_names_fold_case_and_accents() -> None:
    field, cond = condition(Match("PatientName", "ŠIMK*"), fuzzy=True)
    assert field == "_pn"
    assert cond == {"$regex": "(?s)^(?>.*?(?<![^\\^\\ =])simk)"}


@pytest.mark.parametrize(
    "params",
    [[("NoSuchKeyword", "x")], [("limit", "-1")], [("StudyInstanceUID", "../etc")],
     [("SeriesNumber", "three")]],
)  # fmt: skip
def test_bad_parameters_are_400(params: list[tuple[str, str]]) -> None:
    def compile_all() -> None:
        query = parse_query("study", params, {})
        for match in query.matches:
            condition(match, query.fuzzy)

    with pytest.raises(AccessError) as caught:
        compile_all()
    assert caught.value.status == 400
