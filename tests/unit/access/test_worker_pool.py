"""access.worker_pool: work on another process answers what inline work answers."""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from access import worker_pool
from access.errors import AccessError
from access.worker_pool import WorkerPool
from tests.support.worker_probe import probe, warm


class _Issue:
    def __init__(self, code: str, diagnostics: str, expression: str) -> None:
        self.code, self.diagnostics, self.expression = code, diagnostics, expression


def _pid() -> int:
    return os.getpid()


def _refuse(expression: str) -> None:
    raise AccessError("MB-1044", "Patient.name has too many items", expression=expression)


def _die_unless_in(pid: int) -> str:
    """Kills a worker (a broken pool); answers when it runs in the test process."""
    if os.getpid() != pid:
        os._exit(1)
    return "inline"


def test_an_access_error_crosses_a_pickle_with_all_it_carries() -> None:
    issue = _Issue("structure", "bad", "Patient.name[0]")
    error = AccessError("MB-1006", "not valid", expression="Patient.name", issues=[issue])
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 (our own bytes)
    assert (copy.code, copy.diagnostics, copy.expression, copy.status) == (
        "MB-1006", "not valid", "Patient.name", error.status,
    )  # fmt: skip
    assert [i.expression for i in copy.issues] == ["Patient.name[0]"]


async def test_work_runs_on_a_worker_and_its_refusal_comes_back_whole() -> None:
    pool = WorkerPool(1, "test")
    try:
        assert await pool.run(_pid) != os.getpid()
        with pytest.raises(AccessError) as refused:
            await pool.run(_refuse, "Patient.name")
    finally:
        pool.stop()
    assert refused.value.code == "MB-1044"
    assert refused.value.expression == "Patient.name"
    assert refused.value.status == 413


async def test_without_workers_the_work_is_inline() -> None:
    assert await WorkerPool(0).run(_pid) == os.getpid()


async def test_a_killed_worker_costs_an_inline_run_not_an_answer() -> None:
    pool = WorkerPool(1, "test")
    try:
        assert await pool.run(_die_unless_in, os.getpid()) == "inline"
        # made again on the next call
        assert await pool.run(_pid) != os.getpid()
    finally:
        pool.stop()


async def test_a_nice_pool_runs_its_work_at_a_lower_cpu_priority() -> None:
    pool = WorkerPool(1, "test", nice=7)
    try:
        assert await pool.run(_priority) == _priority() + 7
    finally:
        pool.stop()


def _priority() -> int:
    return os.getpriority(os.PRIO_PROCESS, 0)


async def test_every_worker_is_warmed_before_its_first_task() -> None:
    """The warm-up runs as each worker starts, not as a task another worker may take."""
    workers = 2
    pool = WorkerPool(workers, "test", warm=warm)
    manager = multiprocessing.get_context("spawn").Manager()
    try:
        barrier = manager.Barrier(workers)
        found = await asyncio.gather(*(pool.run(probe, barrier, "json") for _ in range(workers)))
    finally:
        pool.stop()
        manager.shutdown()
    assert len({pid for pid, _, _ in found}) == workers  # one probe per worker
    assert all(warmed for _, _, warmed in found)


def _digest_and_files(data: bytes, folder: str, tail: bytes = b"") -> tuple[str, int]:
    """On the worker: what it got, and how many spill files `folder` holds meanwhile."""
    import hashlib

    return hashlib.sha256(data + tail).hexdigest(), len(list(Path(folder).iterdir()))


async def test_a_large_bytes_argument_reaches_the_worker_whole_through_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """From SPILLED_BYTES a `bytes` argument crosses as a file (the task's pickle held the
    event loop ~50 ms for 32 MiB); the worker gets the very bytes, and no file is left."""
    import hashlib

    large = os.urandom(worker_pool.SPILLED_BYTES + 17)
    tail = os.urandom(worker_pool.SPILLED_BYTES)
    monkeypatch.setattr(worker_pool, "_SHARED_MEMORY", tmp_path)
    pool = WorkerPool(1, "test")
    try:
        digest, files = await pool.run(_digest_and_files, large, str(tmp_path), tail=tail)
    finally:
        pool.stop()
    assert digest == hashlib.sha256(large + tail).hexdigest()
    assert files == 2  # both large arguments came as files
    assert os.listdir(tmp_path) == []  # and are gone


def test_a_spilled_argument_that_lost_bytes_is_refused(tmp_path: Path) -> None:
    spilled = worker_pool.spill(b"x" * 100)
    try:
        Path(spilled.path).write_bytes(b"x" * 99)
        with pytest.raises(OSError, match="99 of 100 bytes"):
            worker_pool.call_unspilled(len, (spilled,), {})
    finally:
        os.unlink(spilled.path)


def test_spill_files_of_a_process_that_is_gone_are_swept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A server killed between writing a body to shared memory and its worker reading it
    left the body there: the next pool to start removes it, and only it."""
    monkeypatch.setattr(worker_pool, "_SHARED_MEMORY", tmp_path)
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()
    left = tmp_path / f"{worker_pool.SPILL_PREFIX}{gone.pid}-abc"
    left.write_bytes(b"a body")
    ours = worker_pool.spill(b"in use")
    assert worker_pool.sweep_spilled() == 1
    assert not left.exists()
    assert Path(ours.path).read_bytes() == b"in use"
    os.unlink(ours.path)


async def test_a_large_argument_that_cannot_be_spilled_goes_through_the_pipe(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A full /dev/shm (a container's 64 MiB) costs the pipe's copy, not the request."""

    def full(data: bytes) -> worker_pool.Spilled:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(worker_pool, "spill", full)
    large = os.urandom(worker_pool.SPILLED_BYTES)
    pool = WorkerPool(1, "test")
    try:
        assert await pool.run(len, large) == len(large)
    finally:
        pool.stop()
