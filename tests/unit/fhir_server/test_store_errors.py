"""One reading of failed writes: the server's error documents as pymongo hands them over."""

from __future__ import annotations

import pytest
from pymongo.errors import (
    BulkWriteError,
    ClientBulkWriteException,
    DuplicateKeyError,
    OperationFailure,
    ServerSelectionTimeoutError,
    WriteError,
)

from fhir_server import store_errors


def client_bulk(*write_errors: dict[str, object], error: object = None) -> ClientBulkWriteException:
    details: dict[str, object] = {"writeErrors": list(write_errors), "writeConcernErrors": []}
    if error is not None:
        details["error"] = error
    return ClientBulkWriteException(details, verbose=True)


def test_duplicate_key_names_the_failed_model() -> None:
    failure = store_errors.bulk_failure(
        client_bulk({"idx": 3, "code": 11000, "errmsg": "E11000 duplicate key"})
    )
    assert isinstance(failure, DuplicateKeyError)
    assert failure.details == {"idx": 3}
    assert not store_errors.transient(failure)


def test_write_conflict_inside_a_bulk_is_transient() -> None:
    error = client_bulk({"idx": 0, "code": 112, "errmsg": "WriteConflict"})
    assert store_errors.transient(error)
    failure = store_errors.bulk_failure(error)
    assert isinstance(failure, OperationFailure)
    assert failure.has_error_label(store_errors.TRANSIENT)


def test_a_labelled_top_level_error_is_transient() -> None:
    top = OperationFailure("conflict", 112, {"errorLabels": ["TransientTransactionError"]})
    error = client_bulk(error=top)
    assert store_errors.transient(error)
    assert store_errors.bulk_failure(error) is error  # no single write failed


def test_other_refusals_keep_the_store_code() -> None:
    failure = store_errors.bulk_failure(
        BulkWriteError({"writeErrors": [{"index": 1, "code": 8, "errmsg": "refused"}]})
    )
    assert type(failure) is WriteError
    assert (failure.code, failure.details) == (8, {"idx": 1})
    assert not store_errors.transient(failure)


def test_a_store_that_cannot_be_reached_is_not_run_again() -> None:
    """pymongo labels a server selection timeout inside a transaction as transient; it has
    already waited the whole timeout, so the write fails at once (fail closed)."""
    error = ServerSelectionTimeoutError(
        "No servers found yet", {"errorLabels": ["TransientTransactionError"]}
    )
    assert error.has_error_label(store_errors.TRANSIENT)
    assert not store_errors.transient(error)
    assert not store_errors.transient(client_bulk(error=error))


def test_unknown_commit_result_is_not_transient() -> None:
    error = OperationFailure("?", 91, {"errorLabels": ["UnknownTransactionCommitResult"]})
    assert store_errors.unknown_commit(error)
    assert not store_errors.transient(error)


async def test_retrying_runs_again_while_transient_then_gives_up() -> None:
    runs = 0

    async def conflicted_twice() -> str:
        nonlocal runs
        runs += 1
        if runs < 3:
            raise OperationFailure("conflict", 112, {"errorLabels": ["TransientTransactionError"]})
        return "done"

    assert await store_errors.retrying(conflicted_twice) == "done"
    assert runs == 3

    async def always() -> None:
        raise OperationFailure("conflict", 112)

    with pytest.raises(OperationFailure):
        await store_errors.retrying(always)


async def test_retrying_never_repeats_a_duplicate() -> None:
    runs = 0

    async def duplicate() -> None:
        nonlocal runs
        runs += 1
        raise DuplicateKeyError("E11000", 11000)

    with pytest.raises(DuplicateKeyError):
        await store_errors.retrying(duplicate)
    assert runs == 1


def test_a_query_the_store_refuses_is_the_clients_400_not_a_500() -> None:
    # SecantusDB's answer to a $regex over its 1,000-character cap (BadValue, code 2)
    refused = OperationFailure("regex pattern of 1001 chars exceeds the 1000-char cap", 2)
    answer = store_errors.as_access_error(refused)
    assert answer is not None
    assert answer.code == "MB-1066"
    assert store_errors.as_access_error(OperationFailure("internal", 1)) is None
    conflict = store_errors.as_access_error(OperationFailure("conflict", 112))
    assert conflict is not None
    assert conflict.code == "MB-1011"
