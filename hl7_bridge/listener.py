"""The asyncio MLLP listener: many connections, messages of one connection in order.

Limits keep one sender from starving the others: a cap on connections (at the cap, the
longest-idle connection not in the middle of a message is closed to admit the new
one), an idle timeout between frames, a read timeout and a whole-frame deadline inside
a frame (so one-byte-a-second senders are cut off), and a frame size cap answered AR.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
import time
from dataclasses import dataclass

from access.failures import log_failure
from access.tls import common_name
from hl7_bridge.framing import FrameAborted, FrameMalformed, FrameReader, FrameTooLarge, frame
from hl7_bridge.peers import AllowedPeers
from hl7_bridge.processor import Processor

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Limits:
    max_message_bytes: int = 10 * 1024 * 1024
    max_connections: int = 200
    idle_timeout: float = 300.0
    read_timeout: float = 30.0
    frame_deadline: float = 60.0
    tls_handshake_timeout: float = 10.0


@dataclass(slots=True, eq=False)
class _Connection:
    writer: asyncio.StreamWriter
    busy: bool = False  # a message is being processed: never evicted then
    last_active: float = 0.0


class MllpListener:
    def __init__(
        self,
        processor: Processor,
        host: str,
        port: int,
        limits: Limits | None = None,
        tls: ssl.SSLContext | None = None,
        peers: AllowedPeers | None = None,
    ) -> None:
        self.processor = processor
        self.host = host
        self.port = port
        self.limits = limits or Limits()
        self.tls = tls
        self.peers = peers  # None: every peer; else only those it admits
        self._server: asyncio.Server | None = None
        self._connections: set[_Connection] = set()
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        """Start listening; returns the bound port (useful with port 0)."""
        self._server = await asyncio.start_server(
            self._accept,
            self.host,
            self.port,
            ssl=self.tls,
            ssl_handshake_timeout=self.limits.tls_handshake_timeout if self.tls else None,
            limit=64 * 1024,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for connection in list(self._connections):
            connection.writer.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        connection = _Connection(writer, last_active=time.monotonic())
        try:
            agent = self._authenticate(writer)
            if agent is None:
                return  # refused: closed before any message is read
            self._admit(connection)
            await self._serve(reader, connection, agent or None)
        except (ConnectionError, OSError, ssl.SSLError):
            pass  # the peer went away; whatever it sent completely was answered
        except asyncio.CancelledError:
            # the server is stopping (or never started: asyncio.run cancels what is left);
            # asyncio's own callback of a cancelled connection task logs an ERROR
            pass
        except Exception:
            log_failure(log, "MLLP connection failed unexpectedly")
        finally:
            self._connections.discard(connection)
            self._tasks.discard(task)
            writer.close()

    def _authenticate(self, writer: asyncio.StreamWriter) -> str | None:
        """The allowed-peers entry admitting this connection ("" when every peer is
        admitted), or None: refused."""
        if self.peers is None:
            return ""
        address = writer.get_extra_info("peername")
        host = str(address[0]) if address else ""
        ssl_object = writer.get_extra_info("ssl_object")
        certificate = ssl_object.getpeercert() if ssl_object is not None else None
        admitted = self.peers.admit(host, common_name(certificate))
        if admitted is None:
            log.warning("MLLP connection refused: peer %s is not an allowed peer", host)
        return admitted

    def _admit(self, connection: _Connection) -> None:
        if len(self._connections) >= self.limits.max_connections:
            idle = [c for c in self._connections if not c.busy]
            if idle:
                victim = min(idle, key=lambda c: c.last_active)
                self._connections.discard(victim)
                victim.writer.close()
                log.warning("MLLP connection cap reached: closed the longest idle connection")
        self._connections.add(connection)

    async def _serve(
        self, reader: asyncio.StreamReader, connection: _Connection, agent: str | None
    ) -> None:
        limits = self.limits
        frames = FrameReader(
            reader,
            limits.max_message_bytes,
            limits.idle_timeout,
            limits.read_timeout,
            limits.frame_deadline,
        )
        peer_info = connection.writer.get_extra_info("peername")
        peer = f"{peer_info[0]}:{peer_info[1]}" if peer_info else "unknown"
        writer = connection.writer
        while not writer.is_closing():
            try:
                payload = await frames.next()
            except FrameTooLarge as error:
                await self._too_large(error, writer, peer)
                continue
            except FrameMalformed as error:
                log.warning("MLLP frame from %s malformed (%s): AR", peer, error.reason)
                result = await self.processor.malformed(error.payload, error.reason, peer)
                if result.ack is not None:
                    writer.write(frame(result.ack))
                    await writer.drain()
                continue
            except FrameAborted as error:
                log.info("MLLP connection from %s dropped: %s", peer, error)
                return
            if payload is None:
                return
            connection.busy = True
            try:
                result = await self.processor.handle(payload, peer, agent)
            finally:
                connection.busy = False
                connection.last_active = time.monotonic()
            if result.ack is not None:
                writer.write(frame(result.ack))
                await writer.drain()

    async def _too_large(
        self, error: FrameTooLarge, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        limit = self.limits.max_message_bytes
        log.warning("MLLP frame of %d bytes over the %d byte cap: AR", error.size, limit)
        result = await self.processor.oversize(error.head, error.size, limit, peer)
        if result.ack is not None:
            writer.write(frame(result.ack))
            await writer.drain()
