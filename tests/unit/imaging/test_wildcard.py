"""The one wildcard compiler (QIDO-RS, C-FIND, worklist) against a plain reference.

The reference is the obvious translation (`*` -> `.*`, `?` -> `.`, the rest literal,
whole value) run by Python's backtracking engine on short values, where its cost does
not matter; the compiled forms must give the same answers and never have a shape that
backtracks (tests/support/regex_shape.py).
"""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access.errors import AccessError
from imaging.dicomweb.qido import Match, condition
from imaging.dimse.matching import matches
from imaging.wildcard import compile_wildcard, normalise
from tests.support.regex_shape import problems

ALPHABET = "AB^ .*?\\\n"
patterns = st.text(alphabet="AB^.*?", max_size=14)
values = st.text(alphabet=ALPHABET.replace("*", "").replace("?", ""), max_size=16)


def reference(wanted: str, value: str) -> bool:
    text = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in wanted)
    return re.fullmatch(text, value, re.DOTALL) is not None


@settings(max_examples=400, deadline=None)
@given(patterns, values)
def test_compiled_forms_agree_with_the_reference(wanted: str, value: str) -> None:
    compiled = compile_wildcard(wanted, 256)
    expected = reference(wanted, value)
    assert compiled.matches(value) is expected
    assert (re.search(compiled.regex(), value) is not None) is expected


@settings(max_examples=300, deadline=None)
@given(patterns, values)
def test_component_matching_agrees_with_the_plain_form(wanted: str, value: str) -> None:
    """Fuzzy names: from the start of any component (after `^`, space or `=`), any end."""
    stem = wanted.strip("*")
    text = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in stem)
    expected = re.search(r"(^|[\^ =])" + text, value, re.DOTALL) is not None
    compiled = compile_wildcard(stem, 256).component_regex("^ =")
    assert (re.search(compiled, value) is not None) is expected


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet="ABC*?#.^", min_size=1, max_size=60))
def test_no_compiled_pattern_can_backtrack(wanted: str) -> None:
    assert problems(compile_wildcard(wanted, 256).regex()) == []
    if "*" in wanted or "?" in wanted:
        _, cond = condition(Match("PatientID", wanted), fuzzy=False)
        assert problems(cond["$regex"]) == []
    _, fuzzy = condition(Match("PatientName", wanted), fuzzy=True)
    assert problems(fuzzy["$regex"]) == []


@settings(max_examples=200, deadline=None)
@given(patterns, values)
def test_the_worklist_matcher_is_the_same_matcher(wanted: str, value: str) -> None:
    if wanted.strip() in ("", "*") or "\\" in wanted or not value:
        return  # universal matching and value lists are matching.py's own rules
    if "*" in wanted or "?" in wanted:
        assert matches(wanted, value, "LO") is reference(wanted.strip(), value)


def test_issue_inputs_compile_to_linear_patterns() -> None:
    c2 = compile_wildcard("*?" * 10 + "#", 256)
    assert normalise("*?" * 10 + "#") == "?" * 10 + "*#"
    assert c2.regex() == r"(?s)^" + "." * 10 + r".*\#\Z"
    k11 = compile_wildcard("*" + "*".join("ABCDEFGHIJK") + "*#", 256)
    assert problems(k11.regex()) == []
    assert k11.regex().count("(?>.*?") == 11
    # a value those patterns must walk end to end, missing at the last character
    assert not k11.matches("ABCDEFGHIJK" * 500)
    assert re.search(k11.regex(), "ABCDEFGHIJK" * 500) is None
    assert compile_wildcard("ABC*", 256).prefix == "ABC"


def test_values_over_the_cap_are_refused_before_compiling() -> None:
    with pytest.raises(AccessError) as refused:
        compile_wildcard("A*" * 200, 256)
    assert refused.value.code == "MB-3041"
    assert "MEDBRIDGE_LIMIT_WILDCARD_CHARS" in refused.value.diagnostics
    with pytest.raises(AccessError):
        condition(Match("StudyDescription", "*" * 300), fuzzy=False, max_wildcard_chars=256)
    with pytest.raises(AccessError):
        matches("*X" * 200, "value", "LO")
