"""The FHIR body worker: a large request body is parsed, checked, validated and patched
on a worker process (access/worker_pool.py), small ones inline.

Measured on the loaded 2-core development box (issue 17; best of 7, a Patient with
many names): parsing and validating costs 0.6 ms inline for an empty Patient, 3.4 ms
at 6 KiB, 7.9 ms at 13 KiB, 13 ms at 27 KiB and 32 ms at 54 KiB; on the worker the
same request takes 1-4 ms longer (the pipe, the executor's threads) while the server's
own CPU for it stays at 1-2 ms (pickling; ~8 ms for a 440 KiB result). From
`POOLED_BYTES` on, what a body costs the event loop (and so every FHIR read and HL7
ACK waiting behind it) is worth more than those milliseconds of the request's own.
One worker by default: large bodies take at most one core between them, the other
stays with the event loop and the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from access.worker_pool import WorkerPool
from profiles.validator import validate

P = ParamSpec("P")
T = TypeVar("T")

#: bodies (or a patch's work bound) from this size go to the worker
POOLED_BYTES = 16 * 1024


def _warm() -> None:
    """In a worker: import fhir.resources and the profile schemas before the first body."""
    validate({"resourceType": "Patient"})


_POOL = WorkerPool(1, "FHIR body", warm=_warm)


def configure(workers: int, nice: int = 0) -> WorkerPool:
    """Set the number of body workers (0: every body inline) and how much lower their CPU
    priority is (a nice increment); the server starts them."""
    _POOL.stop()
    _POOL.workers = workers
    _POOL.nice = nice
    return _POOL


def pool() -> WorkerPool:
    return _POOL


async def sized(size: int, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`function(*args)` inline when it handles fewer than POOLED_BYTES, else on the body
    worker (`function` and its arguments must be picklable: module-level, plain data)."""
    if size < POOLED_BYTES:
        return function(*args, **kwargs)
    return await _POOL.run(function, *args, **kwargs)
