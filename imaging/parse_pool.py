"""`imaging.parse.parse` on worker processes, so parsing uses the other cores.

pydicom is pure Python: on a thread it holds the GIL, and the event loop, the DIMSE
threads and the parse of every instance would take turns on one core. The small
instances of a call with several (a STOW request, an import batch) go to a process pool
in one task per worker; large ones, whose header is a small part of the bytes, are
parsed inline. A call with one instance (a C-STORE) is parsed inline too: since the
lean header path (imaging.scan) a CT slice parses in ~0.3 ms, less than the trip through
the pipe and the pool's threads, which under load waited on the GIL for several ms.
A broken pool (a worker killed) falls back to inline parsing and is made again on the
next call.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

from access.errors import AccessError
from access.worker_pool import watch_parent
from imaging.parse import Limits, ParsedInstance, metadata_of, parse

log = logging.getLogger(__name__)

POOLED_BYTES = 1024 * 1024  # larger instances: parsing the header costs less than the pipe
Parsed = ParsedInstance | AccessError
# what crosses the pipe back: an instance, or a refusal as (code, diagnostics, expression)
_Answer = ParsedInstance | tuple[str, str, str | None]


def default_workers() -> int:
    """One worker per core, at most 4 (the event loop keeps a core busy too)."""
    return min(4, os.cpu_count() or 1)


class Parser:
    """Parses instances; with `workers` > 0 small ones on a process pool."""

    def __init__(self, workers: int = 0) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        """Start the workers now (they import pydicom: a second or so), not on first use."""
        if self.workers > 0 and self._pool is None:
            # spawn: never fork a process that runs threads (DIMSE, object store)
            context = multiprocessing.get_context("spawn")
            self._pool = ProcessPoolExecutor(
                self.workers, mp_context=context, initializer=_started, initargs=(os.getpid(),)
            )
            # the pool spawns a worker per task submitted while none is idle: one task
            # each starts them all now (`_started` warms each, whoever takes the task)
            for _ in range(self.workers):
                self._pool.submit(_warm)

    def stop(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool = None

    async def parse_many(self, items: list[bytes], limits: Limits) -> list[Parsed]:
        """One answer per item: the parsed instance, or the AccessError refusing it."""
        pooled = [n for n, data in enumerate(items) if len(data) <= POOLED_BYTES]
        if self.workers <= 0 or len(pooled) < 2:
            return [_parse_inline(data, limits) for data in items]
        self.start()
        return await self._pooled(items, pooled, limits)

    async def _pooled(self, items: list[bytes], pooled: list[int], limits: Limits) -> list[Parsed]:
        answers: list[Parsed | None] = [None] * len(items)
        try:
            pool = self._pool
            assert pool is not None
            loop = asyncio.get_running_loop()
            chunks = [pooled[k :: self.workers] for k in range(self.workers)]
            futures = [
                loop.run_in_executor(pool, _parse_chunk, [items[n] for n in chunk], limits)
                for chunk in chunks
                if chunk
            ]
            # the large ones inline meanwhile
            for n, data in enumerate(items):
                if len(data) > POOLED_BYTES:
                    answers[n] = _parse_inline(data, limits)
            for chunk, result in zip(
                [c for c in chunks if c], await asyncio.gather(*futures), strict=True
            ):
                for n, answer in zip(chunk, result, strict=True):
                    answers[n] = _outcome(answer)
        except (BrokenProcessPool, OSError, RuntimeError) as error:
            log.warning(
                "DICOM parse workers unavailable (%s): parsing inline", type(error).__name__
            )
            self.stop()
            return [_parse_inline(data, limits) for data in items]
        return [
            a if a is not None else _parse_inline(items[n], limits) for n, a in enumerate(answers)
        ]

    async def metadata_many(self, items: list[bytes]) -> list[bytes | None]:
        """Each instance's DICOM JSON (None where it cannot be made), for the background
        fill: on one worker process where there are workers, since pydicom on a thread
        of the server held the GIL against its event loop (a 20-instance batch was
        felt by every door's p99, issue 17)."""
        if self.workers > 0:
            self.start()
            pool = self._pool
            assert pool is not None
            try:
                loop = asyncio.get_running_loop()
                return await loop.run_in_executor(pool, _metadata_chunk, items)
            except (BrokenProcessPool, OSError, RuntimeError) as error:
                log.warning(
                    "DICOM parse workers unavailable (%s): DICOM JSON made on a thread",
                    type(error).__name__,
                )
                self.stop()
        return await asyncio.to_thread(_metadata_chunk, items)


def _started(parent: int) -> None:
    """In a new worker, before its first task: the parser is imported, the server watched.

    The initializer crosses to the worker by name, so each worker imports this module,
    and with it pydicom and the parser (~0.45 s of CPU), before it takes any task (as
    before issue 12's access core). With only `_warm` tasks to do it, a worker that
    started late on a loaded machine found them taken by the first one and imported the
    parser during the first STOW-RS: that request waited for it, and its CPU was ~2 ms
    per instance of a 200-instance STOW (bench/stow_cpu.py, docs/dicom.md)."""
    watch_parent(parent)


def _warm() -> None:
    """Nothing: starting the worker (`_started`) is the work."""


def _parse_inline(data: bytes, limits: Limits) -> Parsed:
    try:
        return parse(data, limits)
    except AccessError as error:
        return error


def _parse_chunk(items: list[bytes], limits: Limits) -> list[_Answer]:
    """In a worker: a refusal travels as plain values (an exception's pickling loses
    its keyword arguments)."""
    answers: list[_Answer] = []
    for data in items:
        try:
            answers.append(parse(data, limits))
        except AccessError as error:
            answers.append((error.code, error.diagnostics, error.expression))
        except Exception as error:  # never a broken pool over one odd instance
            answers.append(("MB-1000", f"internal error: {type(error).__name__}", None))
    return answers


def _metadata_chunk(items: list[bytes]) -> list[bytes | None]:
    """In a worker (or a thread): one instance that cannot be read leaves the others'."""
    made: list[bytes | None] = []
    for data in items:
        try:
            made.append(metadata_of(data))
        except Exception:  # stored once, so readable: a failure here is not the batch's
            made.append(None)
    return made


def _outcome(answer: _Answer) -> Parsed:
    if isinstance(answer, ParsedInstance):
        return answer
    code, diagnostics, expression = answer
    return AccessError(code, diagnostics, expression=expression)
