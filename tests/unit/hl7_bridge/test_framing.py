"""MLLP framing on a real asyncio StreamReader fed like a socket."""

from __future__ import annotations

import asyncio

import pytest

from hl7_bridge.framing import FrameAborted, FrameMalformed, FrameReader, FrameTooLarge, frame


def reader_with(*chunks: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    for chunk in chunks:
        reader.feed_data(chunk)
    if eof:
        reader.feed_eof()
    return reader


def frames(reader: asyncio.StreamReader, cap: int = 1024) -> FrameReader:
    return FrameReader(reader, cap, idle_timeout=5, read_timeout=5, frame_deadline=5)


async def test_junk_before_start_is_skipped() -> None:
    framed = frames(reader_with(b"junk\r\n\x00" + frame(b"MSH|1")))
    assert await framed.next() == b"MSH|1"
    assert framed.junk == 7
    assert await framed.next() is None


async def test_two_frames_in_one_write() -> None:
    framed = frames(reader_with(frame(b"A") + frame(b"B")))
    assert [await framed.next(), await framed.next(), await framed.next()] == [b"A", b"B", None]


async def test_frame_split_over_many_writes() -> None:
    data = frame(b"MSH|" + b"x" * 200)
    chunks = [data[i : i + 2] for i in range(0, len(data), 2)]
    framed = frames(reader_with(*chunks))
    assert await framed.next() == b"MSH|" + b"x" * 200


async def test_eof_mid_frame_aborts() -> None:
    framed = frames(reader_with(b"\x0bMSH|half"))
    with pytest.raises(FrameAborted):
        await framed.next()


async def test_oversize_frame_is_consumed_and_reported() -> None:
    big = b"MSH|^~\\&|A|" + b"y" * 5000
    framed = frames(reader_with(frame(big) + frame(b"next")), cap=1000)
    with pytest.raises(FrameTooLarge) as raised:
        await framed.next()
    assert raised.value.size == len(big)
    assert raised.value.head.startswith(b"MSH|^~\\&|A|")
    assert await framed.next() == b"next"  # the connection stays usable


async def test_oversize_over_many_chunks_keeps_memory_bounded() -> None:
    reader = asyncio.StreamReader()
    framed = frames(reader, cap=100)
    task = asyncio.create_task(framed.next())
    reader.feed_data(b"\x0b")
    for _ in range(50):
        reader.feed_data(b"z" * 1000)
        await asyncio.sleep(0)
        assert len(framed._buffer) <= 100 + 1000
    reader.feed_data(b"\x1c")
    reader.feed_data(b"\x0d")
    with pytest.raises(FrameTooLarge) as raised:
        await task
    assert raised.value.size == 50_000


async def test_frame_deadline_cuts_slow_senders() -> None:
    reader = asyncio.StreamReader()
    framed = FrameReader(reader, 1024, idle_timeout=5, read_timeout=0.2, frame_deadline=0.2)
    reader.feed_data(b"\x0bMSH|")
    with pytest.raises(FrameAborted):
        await framed.next()


async def test_idle_connection_ends_quietly() -> None:
    framed = FrameReader(asyncio.StreamReader(), 1024, 0.05, 5, 5)
    assert await framed.next() is None


async def test_frame_ending_in_fs_without_cr_is_malformed_and_not_merged() -> None:
    framed = frames(reader_with(b"\x0bMSH|first\x1c" + frame(b"MSH|second")))
    with pytest.raises(FrameMalformed) as raised:
        await framed.next()
    assert raised.value.payload == b"MSH|first"
    assert "0x1C without 0x0D" in raised.value.reason
    assert await framed.next() == b"MSH|second"  # its own frame, nothing swallowed
    assert await framed.next() is None


async def test_start_block_inside_a_frame_cuts_it() -> None:
    framed = frames(reader_with(b"\x0bMSH|first" + frame(b"MSH|second")))
    with pytest.raises(FrameMalformed) as raised:
        await framed.next()
    assert raised.value.payload == b"MSH|first"
    assert await framed.next() == b"MSH|second"


async def test_fs_alone_at_the_end_of_what_was_sent_is_malformed() -> None:
    framed = frames(reader_with(b"\x0bMSH|only\x1c"))
    with pytest.raises(FrameMalformed) as raised:
        await framed.next()
    assert raised.value.payload == b"MSH|only"
    assert await framed.next() is None


async def test_fs_and_cr_in_separate_writes_still_end_a_frame() -> None:
    framed = frames(reader_with(b"\x0bMSH|a\x1c", b"\r", frame(b"MSH|b")))
    assert [await framed.next(), await framed.next()] == [b"MSH|a", b"MSH|b"]
