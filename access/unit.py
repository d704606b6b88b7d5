"""A unit of work: the accesses that commit (or roll back) together, a transaction Bundle.

Inside a unit, an access's post-commit notifications wait for the unit to commit and
are dropped when it rolls back: a linker told of a write that then vanished would link
to nothing. Its audit waits for the unit to end either way and then runs outside the
unit's store transaction, so an audit record is never rolled back with what it records.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

from access.errors import AccessError

log = logging.getLogger(__name__)

Later = Callable[[], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class UnitOfWork:
    post_commit: list[Later] = field(default_factory=list)
    audit: list[Later] = field(default_factory=list)

    def attempt(self) -> None:
        """A new run of the unit (a lost write conflict runs it again): what the lost run
        would have notified never happened, nothing of it was applied or answered."""
        self.post_commit.clear()
        self.audit.clear()


_UNIT: ContextVar[UnitOfWork | None] = ContextVar("unit_of_work", default=None)


def current_unit() -> UnitOfWork | None:
    return _UNIT.get()


@contextlib.asynccontextmanager
async def unit_of_work() -> AsyncIterator[UnitOfWork]:
    """Within: accesses of this task belong to one unit; its store transaction must be
    opened (and committed) inside, so that leaving it means the unit has ended."""
    unit = UnitOfWork()
    token = _UNIT.set(unit)
    committed = False
    try:
        yield unit
        committed = True
    finally:
        _UNIT.reset(token)
        if committed:
            # notifications: their failures are logged and never undo the commit
            await _run_all(unit.post_commit, "post-commit")
        unaudited = await _run_all(unit.audit, "audit")
    if unaudited:
        # an access that cannot be audited is not answered with data
        raise AccessError("MB-1000")


async def _run_all(pending: list[Later], stage: str) -> bool:
    """Run every pending call; whether any failed (each failure logged)."""
    failed = False
    for later in pending:
        try:
            # in a context of its own: what the unit's task set up around its store
            # transaction (remembered reads, a session) is not the hook's to see
            await asyncio.create_task(later(), context=contextvars.Context())
        except Exception as failure:
            failed = True
            log.error("%s of a unit's access failed: %s", stage, type(failure).__name__)
            log.debug("traceback", exc_info=True)
    return failed
