"""A syslog collector for the tests: an asyncio TCP or TLS server in a thread of its own
that reads RFC 5425 / RFC 6587 octet-counted frames, checks each message against the
RFC 5424 ABNF, and can be stopped and started again on the same port.

The check is written from RFC 5424 section 6 (not from the sender's code): a frame is
MSG-LEN SP SYSLOG-MSG with MSG-LEN exactly the octets that follow.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import ssl
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import orjson

from medbridge.embedded_mongo import free_port

# RFC 5424 6: HEADER SP STRUCTURED-DATA [SP MSG]
_HEADER = re.compile(
    rb"^<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) "
    rb"(?P<timestamp>-|\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})) "
    rb"(?P<hostname>[\x21-\x7e]{1,255}) (?P<app>[\x21-\x7e]{1,48}) "
    rb"(?P<procid>[\x21-\x7e]{1,128}) (?P<msgid>[\x21-\x7e]{1,32}) "
)
# SD-NAME: 1*32 PRINTUSASCII except '=', SP, ']' and '"'; PARAM-VALUE escapes '"', '\', ']'
_SD_NAME = rb"[\x21\x23-\x3c\x3e-\x5c\x5e-\x7e]{1,32}"
_PARAM_VALUE = rb'(?:[^"\\\]]|\\["\\\]])*'
_SD_ELEMENT = re.compile(
    rb"\[(" + _SD_NAME + rb")((?: " + _SD_NAME + rb'="' + _PARAM_VALUE + rb'")*)\]'
)
_SD_PARAM = re.compile(rb" (" + _SD_NAME + rb')="(' + _PARAM_VALUE + rb')"')
BOM = b"\xef\xbb\xbf"


@dataclass
class Message:
    """One RFC 5424 message as received."""

    facility: int
    severity: int
    version: int
    timestamp: str
    hostname: str
    app_name: str
    procid: str
    msgid: str
    structured: dict[str, dict[str, str]]
    msg: bytes

    def event(self) -> dict[str, Any]:
        """The MSG as an AuditEvent: a BOM and UTF-8 JSON."""
        assert self.msg.startswith(BOM), self.msg[:20]
        loaded: dict[str, Any] = orjson.loads(self.msg[len(BOM) :])
        return loaded


def parse(syslog_msg: bytes) -> Message:
    """SYSLOG-MSG checked against RFC 5424's ABNF; AssertionError saying where it fails."""
    header = _HEADER.match(syslog_msg)
    assert header is not None, f"not an RFC 5424 HEADER: {syslog_msg[:120]!r}"
    priority = int(header["pri"])
    assert 0 <= priority <= 191, priority
    assert header["pri"] == str(priority).encode(), "PRIVAL without leading zeros"
    rest = syslog_msg[header.end() :]
    structured: dict[str, dict[str, str]] = {}
    if rest.startswith(b"-"):
        rest = rest[1:]
    else:
        position = 0
        while position < len(rest) and rest[position : position + 1] == b"[":
            element = _SD_ELEMENT.match(rest, position)
            assert element is not None, f"bad SD-ELEMENT at {rest[position : position + 80]!r}"
            params = {m[1].decode(): m[2].decode() for m in _SD_PARAM.finditer(element[2])}
            structured[element[1].decode()] = params
            position = element.end()
        assert structured, f"STRUCTURED-DATA missing: {rest[:80]!r}"
        rest = rest[position:]
    if rest:
        assert rest.startswith(b" "), f"no SP before MSG: {rest[:20]!r}"
        rest = rest[1:]
    return Message(
        facility=priority // 8,
        severity=priority % 8,
        version=int(header["version"]),
        timestamp=header["timestamp"].decode(),
        hostname=header["hostname"].decode(),
        app_name=header["app"].decode(),
        procid=header["procid"].decode(),
        msgid=header["msgid"].decode(),
        structured=structured,
        msg=rest,
    )


@dataclass
class SyslogCollector:
    """Collects frames on 127.0.0.1:`port` (TLS when `context` is given)."""

    context: ssl.SSLContext | None = None
    port: int = field(default_factory=free_port)
    frames: list[bytes] = field(default_factory=list)
    framing_errors: list[str] = field(default_factory=list)
    connections: int = 0  # accepted (after the handshake, for TLS)

    def __post_init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._lock = threading.Lock()

    def _call(self, coroutine: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout=30)

    def start(self) -> SyslogCollector:
        self._call(self._start())
        return self

    def stop(self) -> None:
        """Stop listening and close every connection, as a collector shutting down."""
        self._call(self._stop())

    def close(self) -> None:
        self.stop()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def messages(self) -> list[Message]:
        with self._lock:
            frames = list(self.frames)
        return [parse(frame) for frame in frames]

    def wait_for(self, count: int, timeout: float = 90.0) -> list[Message]:
        """The messages once at least `count` arrived (or what arrived by `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                if len(self.frames) >= count:
                    break
            time.sleep(0.05)
        return self.messages()

    async def _start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, "127.0.0.1", self.port, ssl=self.context
        )

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            writers = list(self._writers)
            for writer in writers:
                writer.close()
            for writer in writers:
                with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                    await asyncio.wait_for(writer.wait_closed(), 5)
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        self.connections += 1
        try:
            while True:
                length = await reader.readuntil(b" ")
                digits = length[:-1]
                if not digits.isdigit() or digits.startswith(b"0"):
                    self.framing_errors.append(f"bad MSG-LEN {length[:20]!r}")
                    return
                frame = await reader.readexactly(int(digits))
                with self._lock:
                    self.frames.append(frame)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as error:
            partial = getattr(error, "partial", b"")
            if partial:
                self.framing_errors.append(f"cut frame: {partial[:40]!r}")
        except (OSError, ssl.SSLError):
            pass
        finally:
            self._writers.discard(writer)
            writer.close()
            with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
                await asyncio.wait_for(writer.wait_closed(), 5)
