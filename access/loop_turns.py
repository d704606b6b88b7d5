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
from collections.abc import Sequence

#: the loop gets a turn after this much work: an HL7 ACK needs dozens of turns (each
#: store round trip is several), so its wait beside paced work is about that many slices
#: (0.5 ms: HL7 ACK p50 34 ms beside L8-parts; 0.25 ms: 22 ms, the noise as fast)
YIELD_AFTER_SECONDS = 0.00025
#: a join from this many bytes runs on a thread, where `bytes.join` lets go of the GIL
#: (32 MiB: 15-20 ms of copying and page faults); a smaller one on the loop, where a
#: trip to a thread costs about what it saves (a 2 MiB join: ~1.5 ms)
JOIN_OFF_LOOP_BYTES = 8 * 1024 * 1024


async def joined(pieces: Sequence[bytes], size: int | None = None) -> bytes:
    """`b"".join(pieces)` without holding the loop for a large one (`size`: their total,
    when the caller counted it)."""
    if len(pieces) == 1:
        return pieces[0]
    total = sum(len(piece) for piece in pieces) if size is None else size
    if total >= JOIN_OFF_LOOP_BYTES:
        return await asyncio.to_thread(b"".join, pieces)
    return b"".join(pieces)


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
