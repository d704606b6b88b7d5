"""What a pool's worker process had done before its first task, for the pool tests.

This module imports nothing of MedBridge: unpickling `probe` in a worker must not import
what the probe looks for. `probe` waits at a barrier with one party per worker, so each
worker takes exactly one probe (a worker holding one cannot take a second).
"""

from __future__ import annotations

import os
import sys
from threading import Barrier

WARMED = "MEDBRIDGE_TEST_WORKER_WARMED"


def probe(barrier: Barrier, module: str) -> tuple[int, bool, bool]:
    """This worker's pid, whether `module` was imported and whether `warm` ran in it,
    both as found on arrival (before any other probe's work)."""
    found = (os.getpid(), module in sys.modules, os.environ.get(WARMED) == "1")
    barrier.wait(timeout=60)
    return found


def warm() -> None:
    """A pool's warm-up that leaves a mark in the worker."""
    os.environ[WARMED] = "1"


def nothing() -> None:
    """A task that imports nothing in the worker (it is this module's)."""
