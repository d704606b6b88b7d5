"""imaging.dicomweb.multipart.read_parts: every part whole, and the loop gets turns."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator

import pytest

from access.errors import AccessError
from access.loop_turns import JOIN_OFF_LOOP_BYTES
from imaging.dicomweb.multipart import read_parts

BOUNDARY = "pace-boundary"


def _body(parts: list[bytes]) -> bytes:
    head = f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    return b"".join(head + p + b"\r\n" for p in parts) + f"--{BOUNDARY}--\r\n".encode()


async def _chunks(data: bytes, size: int) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start : start + size]


async def test_tiny_and_large_parts_come_out_whole_whatever_the_chunks() -> None:
    parts = [b"", os.urandom(3 << 20), b"x" * 10, os.urandom(70_000), b"", os.urandom(5)] * 3
    data = _body(parts)
    for chunk in (7_001, 1 << 20, len(data)):
        got = [bytes(p.body) async for p in read_parts(_chunks(data, chunk), BOUNDARY, 1 << 30)]
        assert got == parts
    small = [b"", b"x" * 10, b"", b"abc"]
    got = [bytes(p.body) async for p in read_parts(_chunks(_body(small), 1), BOUNDARY, 1024)]
    assert got == small


async def test_a_part_joined_off_the_loop_is_whole_and_bytes() -> None:
    large = os.urandom(JOIN_OFF_LOOP_BYTES + 12_345)
    parts = [b"a" * 100, large, os.urandom(2 << 20)]
    data = _body(parts)
    for chunk in (256 * 1024, 65_537):
        got = [p async for p in read_parts(_chunks(data, chunk), BOUNDARY, 1 << 30)]
        assert [p.body for p in got] == parts
        assert all(type(p.body) is bytes and not p.pieces for p in got)


async def test_a_part_over_the_cap_is_refused_as_it_streams() -> None:
    data = _body([os.urandom(5000)])
    with pytest.raises(AccessError) as refused:
        async for _ in read_parts(_chunks(data, 1000), BOUNDARY, 4096):
            pass
    assert refused.value.code == "MB-3003"


async def test_ten_thousand_empty_parts_in_one_chunk_let_the_loop_run() -> None:
    turns = 0
    parsing = True

    async def other_requests() -> None:
        nonlocal turns
        while parsing:
            turns += 1
            await asyncio.sleep(0)

    other = asyncio.create_task(other_requests())
    await asyncio.sleep(0)
    started = turns
    data = _body([b""] * 10_000)
    count = 0
    async for _ in read_parts(_chunks(data, len(data)), BOUNDARY, 1024):
        count += 1
    parsing = False
    await other
    assert count == 10_000
    # the old code parsed a received chunk in one go: no turn at all until it was done
    assert turns - started >= 2
