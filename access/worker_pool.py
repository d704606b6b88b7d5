"""CPU work of one large request on a worker process, so the event loop keeps answering.

A worker thread does not free the loop: parsing and validating a large body is Python
or C code that holds the one GIL (orjson, pydantic-core and `re` do not release it), so
a thread running it delays every read and HL7 ACK as much as the loop running it did
(issue 17: an 8 MiB Binary held FHIR reads for 0.6 s). A process has a GIL of its own.
Only large inputs are worth the trip (pickling both ways, the executor's threads), so
callers send work here above a measured size and keep small work inline.

The workers are started with `spawn` (never fork a process that runs threads) and leave
when the server is gone. A broken pool (a worker killed) runs the work inline and is
made again on the next call, so a lost worker costs latency, never an answer.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import ParamSpec, TypeVar

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")


class WorkerPool:
    """A process pool of `workers` processes, started on `start()` or on first use;
    with `workers` = 0 every call runs inline."""

    def __init__(
        self,
        workers: int,
        name: str = "worker",
        warm: Callable[[], None] | None = None,
        nice: int = 0,
    ) -> None:
        self.workers = workers
        self.name = name
        self._warm = warm
        self.nice = nice
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the workers now (their imports take a second or so), not on first use."""
        if self.workers > 0 and self._pool is None:
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self.workers,
                mp_context=context,
                initializer=started,
                initargs=(os.getpid(), self.nice, self._warm),
            )
            # the pool spawns a worker per task submitted while none is idle: one task
            # each starts them all now; each warms itself in `started`, since a task
            # goes to whichever worker is free first (a late one would get none)
            for _ in range(self.workers):
                self._pool.submit(_spawned)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def run(self, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """`function(*args)` on a worker (both picklable), inline when there is none."""
        if self.workers <= 0:
            return function(*args, **kwargs)
        self.start()
        pool = self._pool
        assert pool is not None
        try:
            future = pool.submit(function, *args, **kwargs)
        except (BrokenProcessPool, RuntimeError) as error:
            return self._inline_after(error, function, *args, **kwargs)
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool as error:
            return self._inline_after(error, function, *args, **kwargs)

    def _inline_after(
        self, error: Exception, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        log.warning("%s workers unavailable (%s): running inline", self.name, type(error).__name__)
        self.stop()
        return function(*args, **kwargs)


def started(parent: int, nice: int, warm: Callable[[], None] | None = None) -> None:
    """In a new worker, before its first task: lower its CPU priority by `nice`, watch
    the server, and `warm` (imports the work needs), so no request waits for them."""
    if nice > 0:
        # bulk work of one request yields the CPU to the event loop, the store and the
        # other doors' small requests (issue 17: on 2 cores a worker parsing one hostile
        # body after another kept a core from the FHIR reads and HL7 ACKs waiting)
        os.nice(nice)
    watch_parent(parent)
    if warm is not None:
        warm()


def _spawned() -> None:
    """Nothing: a task that makes the pool start a worker."""


def watch_parent(parent: int) -> None:
    """In a worker: leave when the server is gone (a `kill -9` closes no pipe the worker
    would notice: it holds both ends of its task queue)."""

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(0)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()
