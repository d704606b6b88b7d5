"""imaging.durable_write: the bytes on disk are the bytes given, stepped or not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from imaging import durable_write
from imaging.durable_write import STEP_BYTES, write_durably


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        write_durably(fd, data)
    finally:
        os.close(fd)


@pytest.mark.parametrize(
    "size", [0, 1, STEP_BYTES - 1, STEP_BYTES, STEP_BYTES + 1, 3 * STEP_BYTES + 12345]
)
def test_every_byte_written_at_every_size(tmp_path: Path, size: int) -> None:
    data = os.urandom(size)
    _write(tmp_path / "object", data)
    assert (tmp_path / "object").read_bytes() == data


def test_steps_on_linux() -> None:
    if not hasattr(os, "posix_fadvise"):
        pytest.skip("sync_file_range is Linux's; elsewhere objects are written whole")
    assert durable_write.sync_file_range is not None


def test_written_whole_without_sync_file_range(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(durable_write, "sync_file_range", None)
    data = os.urandom(2 * STEP_BYTES + 7)
    _write(tmp_path / "object", data)
    assert (tmp_path / "object").read_bytes() == data


def test_a_refusing_file_system_falls_back_to_the_final_fsync(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls: list[int] = []

    def refusing(fd: int, offset: int, length: int, flags: int) -> None:
        calls.append(offset)
        raise OSError(22, "Invalid argument")

    monkeypatch.setattr(durable_write, "sync_file_range", refusing)
    data = os.urandom(3 * STEP_BYTES)
    _write(tmp_path / "object", data)
    assert (tmp_path / "object").read_bytes() == data
    assert calls == [0]  # tried once, then left to the fsync


def test_a_bad_descriptor_is_an_error(tmp_path: Path) -> None:
    fd = os.open(tmp_path / "object", os.O_RDONLY | os.O_CREAT, 0o600)
    try:
        with pytest.raises(OSError, match="Bad file descriptor"):
            write_durably(fd, os.urandom(2 * STEP_BYTES))
    finally:
        os.close(fd)


def test_each_step_started_and_the_one_before_waited_for(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = durable_write.sync_file_range
    if real is None:
        pytest.skip("sync_file_range is Linux's; elsewhere objects are written whole")
    calls: list[tuple[int, int, int]] = []

    def recording(fd: int, offset: int, length: int, flags: int) -> None:
        calls.append((offset, length, flags))
        real(fd, offset, length, flags)

    monkeypatch.setattr(durable_write, "sync_file_range", recording)
    _write(tmp_path / "object", os.urandom(2 * STEP_BYTES + 10))
    wait = durable_write.WAIT_BEFORE | durable_write.WRITE | durable_write.WAIT_AFTER
    step, write = STEP_BYTES, durable_write.WRITE
    assert calls == [
        (0, step, write),
        (step, step, write), (0, step, wait),
        (2 * step, 10, write), (step, step, wait),
    ]  # fmt: skip
