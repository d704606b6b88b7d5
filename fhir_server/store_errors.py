"""What MongoDB said when a write failed, read in one place, and the retry it allows.

Every write path (group commit, the repository's own transactions, the DICOM index)
reads a failed bulk write through `bulk_failure`, and decides with `transient` and
`unknown_commit`. Three answers matter to MedBridge:

- a duplicate key (E11000) on a unique `_id` (a history version, a conditional-create
  claim, an instance row) or a guarded update that matched nothing: another writer got
  there first. Re-running would fail the same way: the caller answers 409/412 or
  re-resolves. Raised as `DuplicateKeyError` with `details["idx"]` = the failed model.
- a write conflict between concurrent transactions (`WriteConflict`, code 112, or any
  error labelled `TransientTransactionError`): the transaction was aborted by the
  store and may be run again from its start (MongoDB's transaction guidance). Every
  MedBridge write is guarded by what it read, so a re-run either succeeds or turns into
  the duplicate above. After `ATTEMPTS` runs the caller answers 409 (`MB-1011`).
- `UnknownTransactionCommitResult` on commit: the commit may or may not have happened.
  The guidance is to commit again (commitTransaction is idempotent), never to re-run
  the body; the driver already retries a commit once, `commit` keeps trying, bounded.
Anything else is the store failing and is raised as it is.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any, TypeVar

from pymongo import AsyncMongoClient
from pymongo.asynchronous.client_session import AsyncClientSession
from pymongo.errors import (
    BulkWriteError,
    ClientBulkWriteException,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
    ServerSelectionTimeoutError,
    WriteError,
)

from access.errors import AccessError

log = logging.getLogger(__name__)
T = TypeVar("T")

DUPLICATE_KEY = 11000
WRITE_CONFLICT = 112
TRANSIENT = "TransientTransactionError"
UNKNOWN_COMMIT = "UnknownTransactionCommitResult"
ATTEMPTS = 6  # runs of one transaction before its writer is told "conflict"
BACKOFF_SECONDS = 0.005  # doubled per attempt, with jitter: 5, 10, 20, 40, 80 ms


def transient(error: BaseException) -> bool:
    """The transaction lost a write conflict (or a failover): run it again from the start.

    Not when no server could be selected: pymongo labels that `TransientTransactionError`
    inside a transaction too, but it already waited the client's whole selection timeout,
    and each run again would wait it once more (an unreachable audit store held every
    access 6 x 5 s before its 503, where the access must fail closed within the 5 s)."""
    if isinstance(error, ServerSelectionTimeoutError):
        return False
    if isinstance(error, ClientBulkWriteException):
        top = error.error
        if isinstance(top, PyMongoError) and transient(top):
            return True
        return any(_field(e, "code") == WRITE_CONFLICT for e in error.write_errors or [])
    if isinstance(error, PyMongoError) and error.has_error_label(TRANSIENT):
        return True
    return isinstance(error, OperationFailure) and error.code == WRITE_CONFLICT


def unknown_commit(error: BaseException) -> bool:
    return isinstance(error, PyMongoError) and error.has_error_label(UNKNOWN_COMMIT)


def bulk_failure(error: ClientBulkWriteException | BulkWriteError) -> PyMongoError:
    """The first failed write of an ordered bulk as an error to raise: DuplicateKeyError
    (`details["idx"]` = the model's position) for a duplicate key, a transient
    OperationFailure for a write conflict, else WriteError with the store's code.
    The error itself when no single write failed (the command failed as a whole)."""
    if isinstance(error, ClientBulkWriteException):
        errors = list(error.write_errors or [])
    else:
        errors = list(error.details.get("writeErrors", []))
    if not errors:
        return error
    first = errors[0]
    position = _number(_field(first, "idx", "index"))
    code = _number(_field(first, "code"))
    message = str(_field(first, "errmsg") or "write failed")
    if code == DUPLICATE_KEY:
        return DuplicateKeyError(message, code, {"idx": position})
    if code == WRITE_CONFLICT or transient(error):
        return OperationFailure(message, code, {"idx": position, "errorLabels": [TRANSIENT]})
    # the store's own words may quote a value: DEBUG only
    log.debug("bulk write refused write %d (code %s): %s", position, code, message)
    return WriteError(message, code, {"idx": position})


@contextlib.asynccontextmanager
async def transaction(
    client: AsyncMongoClient[Any], gate: Callable[[], AbstractAsyncContextManager[None]]
) -> AsyncIterator[AsyncClientSession]:
    """A fresh session in an open transaction under `gate`: committed on exit (again
    while the outcome is unknown), aborted on an exception. A fresh session's first
    transaction carries no `readConcern`, which SecantusDB refuses on a bulkWrite."""
    async with gate(), client.start_session() as session:
        await session.start_transaction()
        try:
            yield session
        except BaseException:
            if session.in_transaction:
                with contextlib.suppress(PyMongoError):  # the store may have aborted it
                    await session.abort_transaction()
            raise
        await commit(session)


async def commit(session: AsyncClientSession) -> None:
    """Commit, committing again while the outcome is unknown (bounded)."""
    for attempt in range(ATTEMPTS):
        try:
            await session.commit_transaction()
            return
        except PyMongoError as error:
            if not unknown_commit(error) or attempt == ATTEMPTS - 1:
                raise
            await pause(attempt)


async def retrying(run: Callable[[], Awaitable[T]], what: str = "transaction") -> T:
    """`run()` (one whole transaction), again with backoff while it loses write
    conflicts; the last conflict is raised. Only for work safe to repeat."""
    for attempt in range(ATTEMPTS):
        try:
            return await run()
        except PyMongoError as error:
            if not transient(error) or attempt == ATTEMPTS - 1:
                raise
            log.debug("%s lost a write conflict (attempt %d); again", what, attempt + 1)
        await pause(attempt)
    raise AssertionError("unreachable")


async def pause(attempt: int) -> None:
    delay = BACKOFF_SECONDS * (2**attempt)
    await asyncio.sleep(delay * (0.5 + random.random()))  # noqa: S311 - jitter, not secrets


def _number(value: object) -> int:
    return value if isinstance(value, int) else 0


def _field(write_error: object, *names: str) -> object:
    # pymongo types these as WriteError; at run time they are the server's dicts
    for name in names:
        value = write_error.get(name) if isinstance(write_error, dict) else None
        if value is None:
            value = getattr(write_error, name, None)
        if value is not None:
            return value
    return None


# MongoDB's codes for a query the store will not run as given: BadValue (2, e.g. a
# pattern over the store's length cap: SecantusDB caps `$regex` at 1,000 characters, see
# docs/architecture.md) and FailedToParse (9). Not the store failing: the request asked
# for something it cannot do, so the client gets a 400, not a 500.
REFUSED_QUERY_CODES = frozenset({2, 9})


def refused_query(error: BaseException) -> bool:
    """The store refused to run a query as given (never a write failure)."""
    return (
        isinstance(error, OperationFailure)
        and not isinstance(error, (BulkWriteError, WriteError))
        and error.code in REFUSED_QUERY_CODES
    )


def as_access_error(error: Exception) -> AccessError | None:
    """The pipeline's explanation of an exception no write path answered: a store
    conflict is still a conflict (409, MB-1011), never a 500."""
    if isinstance(error, DuplicateKeyError) or transient(error):
        return AccessError("MB-1011")
    if refused_query(error):
        # what the store said may quote the search value: DEBUG only
        log.debug("the store refused a query as given: %s", error)
        return AccessError("MB-1066")
    return None
