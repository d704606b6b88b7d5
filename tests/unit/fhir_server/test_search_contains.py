"""`:contains` compiles to SQLite's `instr()` or, for a literal inside the parameter's name,
to a pattern that cannot backtrack; either finds what it should."""

from __future__ import annotations

import re
from re import _constants as constants  # type: ignore[attr-defined]
from re import _parser as parser  # type: ignore[attr-defined]
from typing import Any

import pytest

from fhir_server.search.keys import SEP, fold, key
from fhir_server.search.nodes import RowQuery
from fhir_server.search.string import compile_string, contains_pattern
from tests.support.regex_shape import REPEATS, problems

MAXREPEAT = constants.MAXREPEAT


def test_the_checker_sees_the_shapes_it_forbids() -> None:
    assert "nested unbounded repeat" in problems("(a*)*")
    assert "adjacent unbounded repeats" in problems("^x.*.*y")
    assert problems("a{1,5}b*c") == []


def unbounded_repeats(pattern: str) -> int:
    return sum(op in REPEATS and av[1] == MAXREPEAT for op, av in parser.parse(pattern))


@pytest.mark.parametrize("value", ["am", "family", "f", "ily"])
def test_contains_patterns_have_no_nested_or_adjacent_repeats(value: str) -> None:
    pattern = contains_pattern("family", value)
    assert problems(pattern) == []
    # one repeat, bounded by the code's length, before the literal
    assert unbounded_repeats(pattern) == 1


def row_filter(code: str, needle: str) -> dict[str, Any]:
    (query,) = compile_string(code, "contains", [needle]).alternatives
    assert isinstance(query, RowQuery)
    return query.as_filter()


def matches(code: str, needle: str, row: str) -> bool:
    """What the store does with the compiled filter, for one row of `code`."""
    condition = row_filter(code, needle)
    if "$expr" in condition:
        ((operator, (index, zero)),) = condition["$expr"].items()
        ((name, (field, literal)),) = index.items()
        assert (operator, name, field, zero) == ("$gte", "$indexOfCP", "$k", 0)
        return row.find(literal) >= 0
    return re.search(condition["k"]["$regex"], row) is not None


@pytest.mark.parametrize("value", ["ka", "*?" * 10 + "#", ".*", "a" * 1_024, "(x+)+$", "š"])
def test_a_literal_outside_the_code_needs_no_regex(value: str) -> None:
    condition = row_filter("family", value)
    assert "$regex" not in condition["k"]
    assert condition["$expr"] == {"$gte": [{"$indexOfCP": ["$k", fold(value)]}, 0]}


@pytest.mark.parametrize(
    ("stored", "needle", "found"),
    [
        ("kazlauskas", "zla", True),
        ("kazlauskas", "kaz", True),
        ("kazlauskas", "kas", True),
        ("kazlauskas", "am", False),  # in the code "family", not in the value
        ("hamsun", "am", True),
        ("smith", "fam", False),
        ("a.b", ".", True),
        ("ab", ".", False),  # a regex metacharacter is a literal
        ("a_b", "a_b", True),
        ("axb", "a_b", False),  # nor is a LIKE wildcard anything but itself
        ("simkus", "ŠIM", True),  # rows hold the folded value
    ],
)
def test_contains_matches_the_value_not_the_code(stored: str, needle: str, found: bool) -> None:
    assert matches("family", needle, key("family", stored)) is found


def test_contains_query_stays_inside_its_parameter() -> None:
    (query,) = compile_string("family", "contains", ["zla"]).alternatives
    assert not isinstance(query, tuple)
    condition = dict(query.filter)["k"]
    assert condition["$gte"] == "family" + SEP
    assert condition["$lt"].startswith("family" + SEP)
    assert "$expr" in query.as_filter()
