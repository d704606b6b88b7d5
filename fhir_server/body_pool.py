"""The FHIR body worker: a large request body is parsed, checked, validated and patched
on a worker process (access/worker_pool.py), small ones inline.

Measured on the 2-core development box (issue 17): validating a Patient body costs the
event loop ~40 ms at 6 KiB, ~60 ms at 54 KiB and ~240 ms at 220 KiB (fhir.resources
builds a model per element), while handing it to the worker costs the loop 1-2 ms of
pickling whatever the size up to 54 KiB and ~8 ms at 220-440 KiB. The round trip adds
latency to the request itself (the pipe, the executor's threads), so bodies under
`POOLED_BYTES` stay inline; what a client sends above it no longer delays FHIR reads
and HL7 ACKs. One worker by default: large bodies take at most one core between them,
the other stays with the event loop and the store.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ParamSpec, TypeVar

from access.worker_pool import WorkerPool
from profiles.validator import validate

P = ParamSpec("P")
T = TypeVar("T")

#: bodies (or a patch's work bound) from this size go to the worker
POOLED_BYTES = 32 * 1024


def _warm() -> None:
    """In a worker: import fhir.resources and the profile schemas before the first body."""
    validate({"resourceType": "Patient"})


_POOL = WorkerPool(1, "FHIR body", warm=_warm)


def configure(workers: int) -> WorkerPool:
    """Set the number of body workers (0: every body inline); the server starts them."""
    _POOL.stop()
    _POOL.workers = workers
    return _POOL


def pool() -> WorkerPool:
    return _POOL


async def sized(size: int, function: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """`function(*args)` inline when it handles fewer than POOLED_BYTES, else on the body
    worker (`function` and its arguments must be picklable: module-level, plain data)."""
    if size < POOLED_BYTES:
        return function(*args, **kwargs)
    return await _POOL.run(function, *args, **kwargs)
