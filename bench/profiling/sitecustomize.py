"""cProfile in a `medbridge serve` started by a benchmark (bench/smart_profile.py).

Put this directory first on `PYTHONPATH` and set `MEDBRIDGE_BENCH_PROFILE` to a
directory: a process whose command is `-m medbridge serve` profiles its main thread (the
event loop: hooks, doors, the store client) from the start, in CPU time. SIGUSR1 writes what was
profiled since the last one to `DIR/profile-PID-N.pstats` and starts again, so one
server gives one profile per kind of request. Nothing of MedBridge reads this variable.
"""

from __future__ import annotations

import cProfile
import os
import signal
import sys
import time
from pathlib import Path
from types import FrameType

_TARGET = os.environ.get("MEDBRIDGE_BENCH_PROFILE")


def _start(directory: Path) -> None:
    # CPU time of the event loop's thread: on a shared machine, wall time would charge
    # other processes' turns to whatever function was running
    profiler = cProfile.Profile(time.thread_time)
    written = [0]

    def dump(signum: int, frame: FrameType | None) -> None:
        profiler.disable()
        profiler.dump_stats(directory / f"profile-{os.getpid()}-{written[0]}.pstats")
        written[0] += 1
        profiler.clear()
        profiler.enable()

    signal.signal(signal.SIGUSR1, dump)
    profiler.enable()


if _TARGET and sys.orig_argv[1:4] == ["-m", "medbridge", "serve"]:
    _start(Path(_TARGET))
