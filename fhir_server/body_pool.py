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

import importlib
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from access.worker_pool import WorkerPool
from profiles.validator import validate

P = ParamSpec("P")
T = TypeVar("T")

#: bodies (or a patch's work bound) from this size go to the worker
POOLED_BYTES = 16 * 1024


#: the modules of the functions sent to the worker (router, interactions.common and
#: .patch call `sized` with them): a task's function is imported by name when the first
#: one arrives, and interactions.common brings the repository and pymongo (~0.35 s)
TASK_MODULES = (
    "fhir_server.access",
    "fhir_server.body",
    "fhir_server.interactions.common",
    "fhir_server.interactions.patch",
)
#: what the server itself writes large: the ImagingStudy of a study of ~85 instances or
#: more (the DICOM upkeep); fhir.resources imports a type's element models on first use
WARM_RESOURCES: tuple[dict[str, Any], ...] = (
    {"resourceType": "Patient"},
    {
        "resourceType": "ImagingStudy",
        "identifier": [{"system": "urn:dicom:uid", "value": "urn:oid:1.2.3"}],
        "status": "available",
        "subject": {"reference": "Patient/warm"},
        "series": [{
            "uid": "1.2.3", "modality": {"code": "CT"},
            "instance": [{"uid": "1.2.3.4", "sopClass": {"code": "1.2.3"}, "number": 1}],
        }],
    },
)  # fmt: skip


def _warm() -> None:
    """In a worker, as it starts (access.worker_pool.started): import what its tasks need
    before the first body. The first ImagingStudy upkeep of a large study paid ~0.7 s of
    CPU on the worker for these imports (bench/stow_cpu.py, docs/dicom.md)."""
    for module in TASK_MODULES:
        importlib.import_module(module)
    for resource in WARM_RESOURCES:
        validate(resource)


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
