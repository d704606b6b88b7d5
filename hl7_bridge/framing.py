"""MLLP framing on asyncio streams: 0x0B payload 0x1C 0x0D.

Bytes before 0x0B are skipped (and counted for the log). A frame larger than the cap is
read to its end without being kept, so memory never grows by more than one read chunk
past the cap; the caller answers it with AR and keeps the connection. A frame that ends
in 0x1C without 0x0D, or meets a new 0x0B before its end, is given back as malformed
(answered AR) and never merged into the frame that follows.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from typing import NoReturn

log = logging.getLogger(__name__)

START = b"\x0b"
END = b"\x1c\x0d"
CHUNK = 65536
MARKERS = re.compile(b"[\x0b\x1c]")
FS, CR = 0x1C, 0x0D
# after an FS that ends what was received, how long the CR may take to arrive
FS_GRACE = 1.0


class FrameTooLarge(Exception):
    def __init__(self, size: int, head: bytes) -> None:
        self.size = size
        self.head = head  # the first bytes, enough to read the MSH and answer it
        super().__init__(f"MLLP frame of {size} bytes is over the limit")


class FrameMalformed(Exception):
    """A frame with a broken end: its payload is answered AR, the stream goes on."""

    def __init__(self, payload: bytes, reason: str) -> None:
        self.payload = payload
        self.reason = reason
        super().__init__(reason)


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
            marker = MARKERS.search(self._buffer, scanned)
            scanned = len(self._buffer)
            if marker is not None:
                end = marker.start()
                after = end + 1
                if self._buffer[end] == FS and after == len(self._buffer):
                    scanned = end  # the CR (or what else) is still on its way
                    if not await self._read(min(self.read_timeout, FS_GRACE), idle=True):
                        after = -1  # nothing came: the frame ended in FS alone
                    else:
                        continue
                if self._buffer[end] == FS and after != -1 and self._buffer[after] == CR:
                    payload = bytes(self._buffer[:end])
                    del self._buffer[: end + len(END)]
                    if oversize:
                        raise FrameTooLarge(size + len(payload), head)
                    if len(payload) > self.max_bytes:
                        raise FrameTooLarge(len(payload), payload[:4096])
                    return payload
                self._malformed(end, oversize, size, head)
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

    def _malformed(self, end: int, oversize: bool, size: int, head: bytes) -> NoReturn:
        """Raise for a frame cut at `end` by FS without CR or by a new start block (0x0B).

        The FS is consumed; a 0x0B stays in the buffer: it starts the next frame.
        """
        payload = bytes(self._buffer[:end])
        start_block = self._buffer[end] != FS
        del self._buffer[: end if start_block else end + 1]
        if oversize or len(payload) > self.max_bytes:
            raise FrameTooLarge(size + len(payload), head or payload[:4096])
        if start_block:
            raise FrameMalformed(payload, "MLLP frame interrupted by a new start block (0x0B)")
        raise FrameMalformed(payload, "MLLP frame ended in 0x1C without 0x0D")

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
