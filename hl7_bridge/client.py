"""An MLLP client: send messages, wait for each ACK (`medbridge hl7 send`, tests, bench)."""

from __future__ import annotations

import asyncio
import contextlib
import ssl

from hl7_bridge.framing import END, START, frame


class MllpClient:
    """One connection; `send` writes a frame and returns the next frame's payload."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    @classmethod
    async def connect(
        cls, host: str, port: int, tls: ssl.SSLContext | None = None, wait: float = 30.0
    ) -> MllpClient:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, limit=16 * 1024 * 1024), wait
        )
        return cls(reader, writer)

    async def send(self, message: bytes, wait: float = 60.0) -> bytes:
        self.writer.write(frame(message))
        await self.writer.drain()
        return await self.receive(wait)

    async def post(self, message: bytes) -> None:
        """Send without waiting (enhanced mode with no acknowledgment asked)."""
        self.writer.write(frame(message))
        await self.writer.drain()

    async def receive(self, wait: float = 60.0) -> bytes:
        await asyncio.wait_for(self.reader.readuntil(START), wait)
        data = await asyncio.wait_for(self.reader.readuntil(END), wait)
        return data[: -len(END)]

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError, ssl.SSLError):
            await self.writer.wait_closed()


def as_message(text: bytes) -> bytes:
    """File bytes -> one message: line ends become CR, trailing blank lines dropped."""
    return text.replace(b"\r\n", b"\r").replace(b"\n", b"\r").strip(b"\r") + b"\r"
