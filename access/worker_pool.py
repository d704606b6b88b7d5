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

A large `bytes` argument (a 32 MiB transaction body) does not cross in the task's pickle:
the executor's feeder thread pickled it into a growing buffer while holding the GIL, one
45-55 ms stop of the event loop per such body (issue 17, largest-fhir). It is written to
a file in shared memory instead (`os.write` lets go of the GIL) and the worker reads it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import multiprocessing
import os
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

log = logging.getLogger(__name__)

P = ParamSpec("P")
T = TypeVar("T")

#: `bytes` arguments from this size reach the worker through a file, not the task's pickle
SPILLED_BYTES = 1024 * 1024
SPILL_PREFIX = "medbridge-arg-"
# mkstemp there: a new file of mode 0600 (O_EXCL), unlinked by the server once done
_SHARED_MEMORY = Path("/dev/shm")  # noqa: S108


@dataclass(frozen=True, slots=True)
class Spilled:
    """A `bytes` argument written to `path` (`size` bytes) for the worker to read."""

    path: str
    size: int

    def read(self) -> bytes:
        with open(self.path, "rb") as file:
            data = file.read()
        if len(data) != self.size:
            raise OSError(f"spilled argument {self.path}: {len(data)} of {self.size} bytes")
        return data


def _spill_folder() -> Path:
    return _SHARED_MEMORY if _SHARED_MEMORY.is_dir() else Path(tempfile.gettempdir())


def spill(data: bytes) -> Spilled:
    """`data` in a new file of shared memory (the temp directory where there is none),
    named after this process, so that what a killed server left is found and removed."""
    descriptor, path = tempfile.mkstemp(prefix=f"{SPILL_PREFIX}{os.getpid()}-", dir=_spill_folder())
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(descriptor, view) :]
    except BaseException:
        os.close(descriptor)
        os.unlink(path)
        raise
    os.close(descriptor)
    return Spilled(path, len(data))


def sweep_spilled() -> int:
    """Remove the spill files of processes that are gone (a server killed mid-call would
    leave a request body in shared memory until the machine restarts); how many."""
    removed = 0
    for path in _spill_folder().glob(f"{SPILL_PREFIX}*"):
        owner = path.name[len(SPILL_PREFIX) :].split("-", 1)[0]
        if not owner.isdigit() or _alive(int(owner)):
            continue
        with contextlib.suppress(OSError):
            path.unlink()
            removed += 1
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process: alive, and not ours to clean up
    return True


def call_unspilled(function: Callable[..., T], args: tuple[Any, ...], kwargs: dict[str, Any]) -> T:
    """On the worker: `function` with each spilled argument read back."""
    args = tuple(arg.read() if isinstance(arg, Spilled) else arg for arg in args)
    kwargs = {k: v.read() if isinstance(v, Spilled) else v for k, v in kwargs.items()}
    return function(*args, **kwargs)


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
            sweep_spilled()
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
        spilled: list[Spilled] = []
        try:
            sent_args = tuple([await _sent(arg, spilled) for arg in args])
            sent_kwargs = {key: await _sent(value, spilled) for key, value in kwargs.items()}
            try:
                if spilled:
                    future = pool.submit(call_unspilled, function, sent_args, sent_kwargs)
                else:
                    future = pool.submit(function, *args, **kwargs)
            except (BrokenProcessPool, RuntimeError) as error:
                return self._inline_after(error, function, *args, **kwargs)
            try:
                return await asyncio.wrap_future(future)
            except BrokenProcessPool as error:
                return self._inline_after(error, function, *args, **kwargs)
        finally:
            for written in spilled:
                with contextlib.suppress(OSError):
                    os.unlink(written.path)

    def _inline_after(
        self, error: Exception, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs
    ) -> T:
        log.warning("%s workers unavailable (%s): running inline", self.name, type(error).__name__)
        self.stop()
        return function(*args, **kwargs)


async def _sent(value: Any, spilled: list[Spilled]) -> Any:
    """What crosses to the worker for `value`: itself, or a large `bytes` as a file."""
    if isinstance(value, bytes) and len(value) >= SPILLED_BYTES:
        try:
            written = await asyncio.to_thread(spill, value)
        except OSError as error:
            # a full or missing shared memory (a container's 64 MiB /dev/shm): the pipe
            log.warning("large argument not spilled (%s): sent through the pipe", error.strerror)
            return value
        spilled.append(written)
        return written
    return value


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
