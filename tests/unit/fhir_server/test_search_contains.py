"""`:contains` compiles to a pattern that cannot backtrack, and finds what it should."""

from __future__ import annotations

import re

import pytest

from fhir_server.search.keys import SEP, key
from fhir_server.search.string import compile_string, contains_pattern
from tests.support.regex_shape import unbounded_repeat_problems, unbounded_repeats


def test_the_checker_sees_the_shapes_it_forbids() -> None:
    assert unbounded_repeat_problems("(a*)*") == ["nested unbounded repeat"]
    assert unbounded_repeat_problems("^x.*.*y") == ["adjacent unbounded repeats"]
    assert unbounded_repeat_problems("a{1,5}b*c") == []


@pytest.mark.parametrize(
    "value", ["ka", "am", "family", "*?" * 10 + "#", ".*", "a" * 1_024, "(x+)+$", "š"]
)
def test_contains_patterns_have_no_nested_or_adjacent_repeats(value: str) -> None:
    pattern = contains_pattern("family", value)
    assert unbounded_repeat_problems(pattern) == []
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
