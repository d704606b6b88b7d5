"""`:contains` compiles to a pattern that cannot backtrack, and finds what it should."""

from __future__ import annotations

import re
from re import _constants as constants  # type: ignore[attr-defined]
from re import _parser as parser  # type: ignore[attr-defined]

import pytest

from fhir_server.search.keys import SEP, key
from fhir_server.search.string import compile_string, contains_pattern
from tests.support.regex_shape import REPEATS, problems

MAXREPEAT = constants.MAXREPEAT


def test_the_checker_sees_the_shapes_it_forbids() -> None:
    assert "nested unbounded repeat" in problems("(a*)*")
    assert "adjacent unbounded repeats" in problems("^x.*.*y")
    assert problems("a{1,5}b*c") == []


def unbounded_repeats(pattern: str) -> int:
    return sum(op in REPEATS and av[1] == MAXREPEAT for op, av in parser.parse(pattern))


@pytest.mark.parametrize(
    "value", ["ka", "am", "family", "*?" * 10 + "#", ".*", "a" * 1_024, "(x+)+$", "š"]
)
def test_contains_patterns_have_no_nested_or_adjacent_repeats(value: str) -> None:
    pattern = contains_pattern("family", value)
    assert problems(pattern) == []
    # a literal of the value alone, or one bounded-by-the-code repeat before it
    assert unbounded_repeats(pattern) == (1 if value in "family" else 0)


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
    ],
)
def test_contains_matches_the_value_not_the_code(stored: str, needle: str, found: bool) -> None:
    row = key("family", stored)
    assert (re.search(contains_pattern("family", needle), row) is not None) is found


def test_contains_query_stays_inside_its_parameter() -> None:
    (query,) = compile_string("family", "contains", ["zla"]).alternatives
    assert not isinstance(query, tuple)
    condition = dict(query.filter)["k"]
    assert condition["$gte"] == "family" + SEP
    assert condition["$lt"].startswith("family" + SEP)
    assert condition["$regex"] == "zla"
