"""C-MOVE / C-GET sub-operations: the objects one pipeline pass reads, handed one at a
time to the association's thread that sends them.

The pass runs on the loop: it selects the instances, lets consent-show remove some,
then, still inside the pass (before audit), reads each remaining object and hands it
over. pynetdicom's generator, on the association's thread, takes them in order and
sends each as a C-STORE sub-operation. At most one object waits in the hand-over, so a
retrieve of any size holds about two objects in memory, as when the handler read them
itself. A refused pass hands over nothing and reads nothing; the pass (audit included)
has ended before the final response leaves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom.events import Event

from imaging.dimse import retrieve
from imaging.dimse.bridge import LoopBridge
from imaging.dimse.status import CANCEL, OUT_OF_RESOURCES_SUBOPERATIONS, PENDING, attempt
from imaging.objectstore import ObjectStore

log = logging.getLogger(__name__)
Document = dict[str, Any]
SubOperation = tuple[int, Dataset | None]


@dataclass(frozen=True, slots=True)
class Selected:
    """The rows the pass will send, after consent-show: the sub-operation count is theirs."""

    rows: list[Document]


@dataclass(frozen=True, slots=True)
class Read:
    row: Document
    data: bytes | None  # None: the object could not be read, a failed sub-operation


class Ended:
    """The pass has ended (audited), with its result or its refusal in the future."""


ENDED = Ended()
Message = Selected | Read | Ended


class Relay:
    """One hand-over slot between the pass (loop) and the association thread."""

    def __init__(self, bridge: LoopBridge, patience: float | None = None) -> None:
        self.bridge = bridge
        # how long the pass waits for the thread to take the next object: the thread
        # takes it once the previous sub-operation's C-STORE is answered, which a slow
        # peer may take up to its DIMSE timeout for
        self.patience = bridge.timeout if patience is None else patience
        self.queue: asyncio.Queue[Message] = asyncio.Queue(maxsize=1)  # used on the loop only
        self.stopped = False

    # the pass's side, on the loop ----------------------------------------------------

    async def hand(self, message: Message) -> bool:
        """Wait until the thread took the previous message; False once it stopped taking
        (C-CANCEL, a lost association, a destination that refused us)."""
        if self.stopped:
            return False
        await asyncio.wait_for(self.queue.put(message), self.patience)
        return not self.stopped

    async def around(self, run: Coroutine[Any, Any, Any]) -> Any:
        """The pass, then `ENDED`, so a thread waiting for objects learns it ended."""
        try:
            return await run
        finally:
            if not self.stopped:
                try:
                    await asyncio.wait_for(self.queue.put(ENDED), self.patience)
                except TimeoutError:
                    log.warning("retrieve: the association stopped taking sub-operations")

    def _stop(self) -> None:
        self.stopped = True
        while not self.queue.empty():  # frees a `hand` waiting for room
            self.queue.get_nowait()

    # the association thread's side ---------------------------------------------------

    def take(self) -> Message:
        return self.bridge.run(self.queue.get())

    def stop(self) -> None:
        # a loop already closed (the server stopping) has no pass left to stop
        with contextlib.suppress(RuntimeError):
            self.bridge.loop.call_soon_threadsafe(self._stop)


async def deliver(relay: Relay, store: ObjectStore, rows: list[Document]) -> int:
    """The act's end of a retrieve: hand over the selection, then each object as read.
    The number of objects handed over."""
    if not await relay.hand(Selected(rows)):
        return 0
    handed = 0
    for row in rows:
        data: bytes | None = None
        try:
            data = await store.get(str(row["key"]))
        except Exception as error:  # counted as a failed sub-operation; the others go on
            log.error("retrieve read failed: %s", type(error).__name__)
        if not await relay.hand(Read(row, data)):
            break
        handed += 1
    return handed


class Retrieval:
    """The association thread's end of one retrieve: its pass runs on the loop."""

    def __init__(self, relay: Relay, running: Future[Any]) -> None:
        self.relay = relay
        self.running = running

    def selected(self) -> list[Document]:
        """The rows the pass will send; the pass's refusal (AccessError) raised instead.
        With no rows the pass has ended (audited) before this returns."""
        message = self.relay.take()
        if isinstance(message, Selected):
            if not message.rows:
                self.finish()
            return message.rows
        self.running.result(self.relay.bridge.timeout)  # raises what refused the pass
        raise RuntimeError("the retrieve's pass ended without a selection")

    def sub_operations(self, event: Event) -> Iterator[SubOperation]:
        """Pending (status, dataset) pairs as the pass hands the objects over, until it
        ended, the peer cancelled or the loop stopped answering."""
        while True:
            if event.is_cancelled:
                self.relay.stop()
                yield CANCEL, None
                return
            try:
                message = self.relay.take()
            except Exception as error:
                log.error("retrieve: no sub-operation from the loop (%s)", type(error).__name__)
                self.relay.stop()
                yield OUT_OF_RESOURCES_SUBOPERATIONS, None
                return
            if not isinstance(message, Read):
                break
            yield PENDING, _dataset(message)
        self.finish()

    def finish(self) -> None:
        """Wait for the pass to end (audited) before the final response leaves."""
        try:
            self.running.result(self.relay.bridge.timeout)
        except Exception as error:
            # the objects are sent; what failed after them (the audit) is only logged
            reason = getattr(error, "code", type(error).__name__)
            log.error("retrieve: the pass failed after its sub-operations (%s)", reason)

    def close(self) -> None:
        self.relay.stop()


def _dataset(read: Read) -> Dataset:
    """The stored instance, or a stand-in naming it that pynetdicom counts as failed."""
    dataset: Dataset | None = None
    with attempt("retrieve read"):
        if read.data is not None:
            dataset = retrieve.decode(read.data)
    if dataset is None:
        dataset = Dataset()
        dataset.SOPInstanceUID = str(read.row["_id"])
    return dataset
