"""cProfile in a `medbridge serve` started by a benchmark (bench/smart_profile.py,
bench/stow_cpu.py).

Put this directory first on `PYTHONPATH` and set `MEDBRIDGE_BENCH_PROFILE` to a
directory: a process whose command is `-m medbridge serve` profiles its main thread (the
event loop: hooks, doors, the store client) from the start, in CPU time. SIGUSR1 writes what was
profiled since the last one to `DIR/profile-PID-N.pstats` and starts again, so one
server gives one profile per kind of request. Nothing of MedBridge reads these variables.

With `MEDBRIDGE_BENCH_PROFILE_THREADS=1` every other thread of the server (to_thread's
pool, the object store's writers, pymongo's, the DIMSE associations) is profiled too,
each from its start, and SIGUSR1 writes them, merged, to `DIR/threads-PID-N.pstats`:
counts since each thread started (a profiler is only stopped by its own thread).
With `MEDBRIDGE_BENCH_PROFILE_CHILDREN=1` the server's worker processes (spawned by
multiprocessing) profile their main thread too; send SIGUSR1 to each of them (never to
the resource tracker, which has no handler) for `DIR/profile-PID-N.pstats`.

With `MEDBRIDGE_BENCH_COMMANDS` set to a file, a pymongo CommandListener counts the
store commands the server sends (by command and collection); SIGUSR1 writes the counts
since the last one to `FILE-N.json` (N from 0) and starts again.
"""

from __future__ import annotations

import cProfile
import json
import os
import pstats
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

_TARGET = os.environ.get("MEDBRIDGE_BENCH_PROFILE")
_THREADS = os.environ.get("MEDBRIDGE_BENCH_PROFILE_THREADS") == "1"
_COMMANDS = os.environ.get("MEDBRIDGE_BENCH_COMMANDS")
_dumps: list[Callable[[int], None]] = []


def _profile_main(directory: Path) -> None:
    # CPU time of the event loop's thread: on a shared machine, wall time would charge
    # other processes' turns to whatever function was running
    profiler = cProfile.Profile(time.thread_time)

    def dump(n: int) -> None:
        profiler.disable()
        profiler.dump_stats(directory / f"profile-{os.getpid()}-{n}.pstats")
        profiler.clear()
        profiler.enable()

    _dumps.append(dump)
    profiler.enable()


def _profile_threads(directory: Path) -> None:
    """A profiler per thread, enabled in the thread itself (cProfile follows one thread)."""
    profilers: list[cProfile.Profile] = []
    original = threading.Thread.run

    def run(self: threading.Thread) -> None:
        profiler = cProfile.Profile(time.thread_time)
        profilers.append(profiler)
        profiler.enable()
        try:
            original(self)
        finally:
            profiler.disable()

    threading.Thread.run = run  # type: ignore[method-assign]

    def dump(n: int) -> None:
        merged: pstats.Stats | None = None
        for profiler in list(profilers):
            # read from this thread while the other keeps profiling (under the GIL the
            # counts are consistent); never disable() or clear() another thread's
            # profiler (both drop the call stack it is in the middle of), so these
            # counts are cumulative since each thread started
            profiler.snapshot_stats()
            snapshot = _Snapshot(profiler.stats)  # type: ignore[attr-defined]
            if not snapshot.stats:
                continue
            if merged is None:
                merged = pstats.Stats(snapshot)  # type: ignore[arg-type]
            else:
                merged.add(snapshot)
        if merged is not None:
            merged.dump_stats(directory / f"threads-{os.getpid()}-{n}.pstats")

    _dumps.append(dump)


class _Snapshot:
    """What pstats.Stats reads from a profiler, without it calling create_stats() (which
    disables the profiler of the thread calling it, not of the one profiled)."""

    def __init__(self, stats: dict[Any, Any]) -> None:
        self.stats = dict(stats)

    def create_stats(self) -> None:
        pass


def _count_commands(path: str) -> None:
    from pymongo import monitoring

    counts: Counter[str] = Counter()

    class Listener(monitoring.CommandListener):
        def started(self, event: monitoring.CommandStartedEvent) -> None:
            command: Any = event.command
            target = command.get(event.command_name)
            collection = target if isinstance(target, str) else ""
            counts[f"{event.command_name} {collection}".strip()] += 1

        def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
            pass

        def failed(self, event: monitoring.CommandFailedEvent) -> None:
            counts[f"failed {event.command_name}"] += 1

    monitoring.register(Listener())

    def dump(n: int) -> None:
        Path(f"{path}-{n}.json").write_text(json.dumps(dict(counts), indent=1, sort_keys=True))
        counts.clear()

    _dumps.append(dump)


def _install() -> None:
    written = [0]

    def on_signal(signum: int, frame: FrameType | None) -> None:
        for dump in _dumps:
            dump(written[0])
        written[0] += 1

    signal.signal(signal.SIGUSR1, on_signal)


_CHILDREN = os.environ.get("MEDBRIDGE_BENCH_PROFILE_CHILDREN") == "1"
_SPAWNED = any("multiprocessing.spawn import spawn_main" in arg for arg in sys.orig_argv)

if _TARGET and _CHILDREN and _SPAWNED:
    # a worker process of the server (parse workers, FHIR body worker): its main thread
    # runs the tasks; SIGUSR1 (sent to it, not the server) writes profile-PID-N.pstats
    _profile_main(Path(_TARGET))
    _install()
elif sys.orig_argv[1:4] == ["-m", "medbridge", "serve"] and (_TARGET or _COMMANDS):
    if _TARGET:
        _profile_main(Path(_TARGET))
        if _THREADS:
            _profile_threads(Path(_TARGET))
    if _COMMANDS:
        _count_commands(_COMMANDS)
    _install()
