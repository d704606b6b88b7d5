"""A turn for the event loop during long work done on it in small steps.

Building a large answer (a thousand QIDO results, a STOW response with thousands of
failed parts, a transaction's response Bundle of large resources) is Python on the
loop: done in one go it held every other request of every door for tens of
milliseconds (issue 17, L10, L8-parts, largest-fhir). A loop over such
items calls `await turns.take()` per item: the loop gets a turn once `every` seconds of
work have passed, so a probe waits at most about that long, whatever the item count.
"""

from __future__ import annotations

import asyncio
import time

#: the loop gets a turn after this much work (an HL7 ACK needs a dozen turns)
YIELD_AFTER_SECONDS = 0.0005


class Turns:
    """Counts the time of work since the loop's last turn; `take` yields when due."""

    __slots__ = ("_since", "every")

    def __init__(self, every: float = YIELD_AFTER_SECONDS) -> None:
        self.every = every
        self._since = time.perf_counter()

    def due(self) -> bool:
        return time.perf_counter() - self._since >= self.every

    async def take(self) -> None:
        """Yield to the loop if `every` seconds of work passed since the last turn."""
        if time.perf_counter() - self._since >= self.every:
            await asyncio.sleep(0)
            self._since = time.perf_counter()
