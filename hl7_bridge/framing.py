"""MLLP framing on asyncio streams: 0x0B payload 0x1C 0x0D.

Bytes before 0x0B are skipped (and counted for the log). A frame larger than the cap is
read to its end without being kept, so memory never grows by more than one read chunk
past the cap; the caller answers it with AR and keeps the connection.
"""

from __future__ import annotations

import asyncio
import logging
import time

log = logging.getLogger(__name__)

START = b"\x0b"
END = b"\x1c\x0d"
CHUNK = 65536


class FrameTooLarge(Exception):
    def __init__(self, size: int, head: bytes) -> None:
        self.size = size
        self.head = head  # the first bytes, enough to read the MSH and answer it
        super().__init__(f"MLLP frame of {size} bytes is over the limit")


class FrameAborted(Exception):
    """The peer went away or stalled mid-frame: nothing of it is processed."""


def frame(payload: bytes) -> bytes:
    return START + payload + END


class FrameReader:
    def __init__(
        self,
        reader: asyncio.StreamReader,
        max_bytes: int,
        idle_timeout: float,
        read_timeout: float,
        frame_deadline: float,
    ) -> None:
        self._reader = reader
        self._buffer = bytearray()
        self.max_bytes = max_bytes
        self.idle_timeout = idle_timeout
        self.read_timeout = read_timeout
        self.frame_deadline = frame_deadline
        self.junk = 0  # bytes skipped outside frames

    async def next(self) -> bytes | None:
        """The next frame's payload; None when the peer closed or idled out between frames."""
        while True:
            start = self._buffer.find(START)
            if start != -1:
                self._skip(start)
                del self._buffer[:1]
                break
            self._skip(len(self._buffer))
            chunk = await self._read(self.idle_timeout, idle=True)
            if not chunk:
                return None
        deadline = time.monotonic() + self.frame_deadline
        size = 0
        head = b""
        oversize = False
        scanned = 0
        while True:
            end = self._buffer.find(END, max(0, scanned - 1))
            scanned = len(self._buffer)
            if end != -1:
                payload = bytes(self._buffer[:end])
                del self._buffer[: end + len(END)]
                if oversize:
                    raise FrameTooLarge(size + len(payload), head)
                if len(payload) > self.max_bytes:
                    raise FrameTooLarge(len(payload), payload[:4096])
                return payload
            if len(self._buffer) > self.max_bytes or oversize:
                # Keep one byte back: it may be the 0x1C of a split end marker.
                keep = 1 if self._buffer.endswith(b"\x1c") else 0
                if not oversize:
                    head = bytes(self._buffer[:4096])
                oversize = True
                size += len(self._buffer) - keep
                del self._buffer[: len(self._buffer) - keep]
                scanned = len(self._buffer)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise FrameAborted("frame deadline passed")
            chunk = await self._read(min(self.read_timeout, remaining), idle=False)
            if not chunk:
                raise FrameAborted("connection closed mid-frame")

    async def _read(self, wait: float, idle: bool) -> bytes:
        try:
            chunk = await asyncio.wait_for(self._reader.read(CHUNK), wait)
        except TimeoutError:
            if idle:
                return b""
            raise FrameAborted("read timeout mid-frame") from None
        except (ConnectionError, OSError) as error:
            if idle:
                return b""
            raise FrameAborted(f"connection error mid-frame: {error}") from None
        self._buffer += chunk
        return chunk

    def _skip(self, count: int) -> None:
        if count:
            self.junk += count
            log.info("skipped %d bytes outside MLLP frames", count)
            del self._buffer[:count]
