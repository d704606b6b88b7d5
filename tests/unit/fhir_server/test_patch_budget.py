"""JSON Patch bounded while it is applied (fhir_server/interactions/patch.py): pure."""

from __future__ import annotations

import copy
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from access.budget import Budget
from access.errors import AccessError
from fhir_server.body import dumps
from fhir_server.interactions.batch import check_distinct
from fhir_server.interactions.patch import apply_within, work_bound

CAP = 4096
BUDGET = Budget(max_resource_bytes=CAP)
PATIENT: dict[str, Any] = {
    "resourceType": "Patient",
    "id": "p1",
    "name": [{"family": "Kazlauskas", "given": ["Jonas"]}],
    "birthDate": "1980-01-01",
}


def patched(operations: list[Any], budget: Budget = BUDGET) -> dict[str, Any]:
    resource = copy.deepcopy(PATIENT)
    return apply_within(resource, operations, budget, len(dumps(resource)))


def test_doubling_copies_stop_at_the_cap_before_the_copy() -> None:
    with pytest.raises(AccessError) as caught:
        patched([{"op": "copy", "from": "/name", "path": "/name/-"}] * 21)
    assert (caught.value.code, caught.value.status) == ("MB-1048", 413)
    assert "max_resource_bytes" in caught.value.diagnostics


def test_adds_and_removes_that_stay_under_the_cap_apply() -> None:
    big = "x" * 1000
    operations = [
        op
        for _ in range(20)
        for op in (
            {"op": "add", "path": "/name/0/text", "value": big},
            {"op": "remove", "path": "/name/0/text"},
        )
    ]
    assert patched(operations) == PATIENT


def test_copies_are_independent_of_their_source() -> None:
    result = patched(
        [
            {"op": "copy", "from": "/name/0", "path": "/name/-"},
            {"op": "replace", "path": "/name/1/family", "value": "Jonaitis"},
            {"op": "add", "path": "/name/1/given/-", "value": "Petras"},
        ]
    )
    assert result["name"] == [
        {"family": "Kazlauskas", "given": ["Jonas"]},
        {"family": "Jonaitis", "given": ["Jonas", "Petras"]},
    ]


def test_a_failing_operation_names_its_index() -> None:
    with pytest.raises(AccessError) as caught:
        patched([{"op": "add", "path": "/active", "value": True}, {"op": "remove", "path": "/x"}])
    assert caught.value.code == "MB-1017"
    assert "operation 1" in caught.value.diagnostics


PATHS = st.sampled_from(
    ["", "/", "/name", "/name/0", "/name/-", "/name/0/given", "/name/0/given/-", "/name/0/given/0",
     "/birthDate", "/id", "/active", "/x/y", "/name/9", "/name/0/family"]
)  # fmt: skip
# what fhir_server.body's parser yields: integers orjson can write, larger ones as Decimal
INTEGERS = st.integers(min_value=-(2**63), max_value=2**64 - 1)
BIG = (st.integers(max_value=-(2**63) - 1) | st.integers(min_value=2**64)).map(Decimal)
VALUES = st.recursive(
    st.none() | st.booleans() | INTEGERS | BIG | st.text(max_size=200),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=10,
)
OPERATIONS = st.one_of(
    st.fixed_dictionaries({"op": st.sampled_from(["add", "replace", "test"]), "path": PATHS,
                           "value": VALUES}),
    st.fixed_dictionaries({"op": st.just("remove"), "path": PATHS}),
    st.fixed_dictionaries({"op": st.sampled_from(["copy", "move"]), "from": PATHS,
                           "path": PATHS}),
    st.just({"op": "copy", "from": "/name", "path": "/name/-"}),
    st.just({"op": "copy", "from": "", "path": "/contained"}),
    st.dictionaries(st.sampled_from(["op", "path", "from", "value"]), VALUES, max_size=4),
    VALUES,
)  # fmt: skip


@settings(max_examples=600, deadline=None, derandomize=True)
@given(operations=st.lists(OPERATIONS, max_size=25))
def test_any_patch_is_refused_as_a_4xx_or_stays_under_the_cap(operations: list[Any]) -> None:
    try:
        result = patched(operations)
    except AccessError as error:
        status = error.status
    else:
        assert len(dumps(result)) <= CAP
        return
    assert 400 <= status < 500


def test_transaction_targets_and_full_urls_must_be_distinct() -> None:
    put = {"request": {"method": "PUT", "url": "Patient/a"}}
    check_distinct([put, {"request": {"method": "PUT", "url": "Patient/b"}}], transaction=True)
    check_distinct([put, put], transaction=False)  # a batch may write one target twice
    patch = {"request": {"method": "PATCH", "url": "Patient/a"}}
    check_distinct([put, patch], transaction=True)  # R4 names DELETE, POST, PUT only
    for second in (
        put,
        {"request": {"method": "DELETE", "url": "/Patient/a/"}},
        {"request": {"method": "PUT", "url": "http://example.org/fhir/Patient/a"}},
    ):
        with pytest.raises(AccessError) as caught:
            check_distinct([put, second], transaction=True)
        assert (caught.value.code, caught.value.status) == ("MB-1110", 400)
        assert "Bundle.entry[0] and Bundle.entry[1]" in caught.value.diagnostics
    with pytest.raises(AccessError):
        check_distinct([{"fullUrl": "urn:uuid:1"}, {"fullUrl": "urn:uuid:1"}], transaction=False)


def test_the_work_bound_counts_what_copies_can_make() -> None:
    """A small patch of a small resource is small work unless it copies (issue 17, C3):
    every copy may double the document, up to the resource cap."""
    size = len(dumps(PATIENT)) + 300
    copy_name = {"op": "copy", "from": "/name", "path": "/name/-"}
    assert work_bound(size, [{"op": "add", "path": "/gender", "value": "male"}], BUDGET) == size
    assert work_bound(size, [copy_name], BUDGET) == 2 * size
    assert work_bound(size, [copy_name] * 21, BUDGET) == CAP
    # the largest result is what apply_within lets through
    with pytest.raises(AccessError):
        patched([copy_name] * 21)
