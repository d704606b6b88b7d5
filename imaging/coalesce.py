"""Group concurrent calls into one: what arrives while a round trip runs goes in the next.

The embedded store charges per operation far more than per document, so instances of
concurrent STOW requests and DIMSE associations share one read and one transaction.
There is no timer: a lone caller goes at once, and the group grows only with the load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar

X = TypeVar("X")
Y = TypeVar("Y")


class Coalescer(Generic[X, Y]):
    """`submit(items)` -> `run(all items pending)`'s results for these items, in order.

    `run` gets every item submitted since its previous call (at most `limit`) and
    answers one result per item; an exception it raises reaches every caller of that
    group. Groups run one at a time, in the order they were submitted.
    """

    def __init__(self, run: Callable[[list[X]], Awaitable[list[Y]]], limit: int = 256) -> None:
        self._run = run
        self._limit = limit
        self._pending: list[tuple[list[X], asyncio.Future[list[Y]]]] = []
        self._drain: asyncio.Task[None] | None = None

    async def submit(self, items: list[X]) -> list[Y]:
        if not items:
            return []
        loop = asyncio.get_running_loop()
        future: asyncio.Future[list[Y]] = loop.create_future()
        self._pending.append((list(items), future))
        if self._drain is None or self._drain.done():
            self._drain = loop.create_task(self._run_groups())
        # the group runs to its end even if this caller goes away (the work is shared)
        return await asyncio.shield(future)

    async def _run_groups(self) -> None:
        while self._pending:
            # whole calls, at least one, up to `limit` items
            size, count = 0, 0
            for items, _ in self._pending:
                if count and size + len(items) > self._limit:
                    break
                size, count = size + len(items), count + 1
            group, self._pending = self._pending[:count], self._pending[count:]
            try:
                results = await self._run([item for items, _ in group for item in items])
            except BaseException as error:
                for _, future in group:
                    if isinstance(error, asyncio.CancelledError):
                        future.cancel()
                        continue
                    future.set_exception(error)
                    # the caller may have gone away: never "exception was never retrieved"
                    future.add_done_callback(_retrieved)
                if isinstance(error, asyncio.CancelledError):
                    raise
                continue
            start = 0
            for items, future in group:
                future.set_result(results[start : start + len(items)])
                start += len(items)


def _retrieved(future: asyncio.Future[Any]) -> None:
    future.exception()
