"""Where the syslog sink sends, and the connection it sends on (RFC 5425: TLS over TCP;
RFC 6587 plain TCP for a collector on this host).

The collector is named `tls://host:port` (the collector's certificate must chain to the
configured CA, else the system's, and name the host; this server shows its own client
certificate when one is configured, as IHE ATNA's node authentication asks) or
`tcp://host:port` (plain, refused unless the host is a loopback address: audit events
name patients and must not cross a network in the clear). A wrong setting stops the
start with its reason (`sink_config`).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import re
import ssl
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from access.tls import MINIMUM_VERSION

SCHEMES = ("tls", "tcp")
APP_NAME = re.compile(r"^[\x21-\x7e]{1,48}$")
LOOPBACK_NAMES = ("localhost",)
# TLS 1.3: the longest wait after the handshake for the collector's session ticket (it
# accepted our certificate) or its refusal (it did not); usually milliseconds
SETTLE_SECONDS = 5.0
SETTLE_STEP = 0.01
CONNECT_SECONDS = 10.0
SEND_SECONDS = 30.0


@dataclass(frozen=True, slots=True)
class Target:
    scheme: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


@dataclass(frozen=True, slots=True)
class SinkConfig:
    target: Target
    context: ssl.SSLContext | None  # None: plain TCP
    app_name: str
    poll_seconds: float
    retry_max_seconds: float


def parse_target(url: str) -> Target:
    """`tls://host:port` or `tcp://host:port`; ValueError saying what is wrong."""
    parts = urlsplit(url.strip())
    if parts.scheme not in SCHEMES:
        raise ValueError(f"must be tls://host:port or tcp://host:port, not {url!r}")
    try:
        port = parts.port
    except ValueError as error:
        raise ValueError(f"{url!r}: {error}") from error
    if not parts.hostname or port is None or port == 0:
        raise ValueError(f"{url!r} needs a host and a port (e.g. tls://siem.example:6514)")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.username:
        raise ValueError(f"{url!r}: only scheme://host:port is understood")
    return Target(parts.scheme, parts.hostname, port)


def is_loopback(host: str) -> bool:
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def client_context(ca: Path | None, cert: Path | None, key: Path | None) -> ssl.SSLContext:
    """The sink's TLS client context: TLS 1.2+ (access/tls.py's floor), the collector's
    certificate checked against `ca` (else the system's CAs) and its host name."""
    context = ssl.create_default_context(cafile=str(ca) if ca is not None else None)
    context.minimum_version = MINIMUM_VERSION
    if (cert is None) != (key is None):
        raise ValueError("a client certificate needs its private key and the key its certificate")
    if cert is not None and key is not None:
        context.load_cert_chain(str(cert), str(key))
    return context


def sink_config(
    url: str,
    ca: Path | None,
    cert: Path | None,
    key: Path | None,
    app_name: str,
    poll_seconds: float,
    retry_max_seconds: float,
) -> SinkConfig:
    """The sink's settings checked: ValueError with the reason the server must not start."""
    target = parse_target(url)
    if not APP_NAME.match(app_name):
        raise ValueError(f"APP-NAME {app_name!r}: 1-48 printable US-ASCII characters (RFC 5424)")
    if target.scheme == "tcp":
        if not is_loopback(target.host):
            raise ValueError(
                f"{url!r}: plain tcp:// only to a loopback collector (audit events name "
                "patients); use tls://"
            )
        if ca is not None or cert is not None or key is not None:
            raise ValueError(f"{url!r} is plain TCP: its CA and certificate settings are unused")
        return SinkConfig(target, None, app_name, poll_seconds, retry_max_seconds)
    try:
        context = client_context(ca, cert, key)
    except (OSError, ssl.SSLError) as error:
        raise ValueError(f"TLS files unusable: {error}") from error
    return SinkConfig(target, context, app_name, poll_seconds, retry_max_seconds)


class Refused(Exception):
    """The collector cannot be reached, refused the handshake or closed the connection."""


class Connection:
    """One connection to the collector; `send` returns once the frames are written."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer

    @classmethod
    async def open(cls, config: SinkConfig) -> Connection:
        target = config.target
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(
                    target.host, target.port, ssl=config.context,
                    server_hostname=target.host if config.context is not None else None,
                ),
                CONNECT_SECONDS,
            )  # fmt: skip
        except (OSError, ssl.SSLError, TimeoutError) as error:
            raise Refused(f"{target}: {_reason(error)}") from error
        connection = cls(reader, writer)
        await connection._settle(target)
        return connection

    async def _settle(self, target: Target) -> None:
        """TLS 1.3 tells a client that its certificate was refused only after the
        handshake; what was written by then is lost. The server sends its session
        tickets once it accepted the certificate: wait for a ticket or the refusal."""
        tls = self._writer.get_extra_info("ssl_object")
        if not isinstance(tls, ssl.SSLObject) or tls.version() != "TLSv1.3":
            return  # plain TCP, or TLS 1.2: a refusal ends the handshake itself
        deadline = asyncio.get_running_loop().time() + SETTLE_SECONDS
        while asyncio.get_running_loop().time() < deadline:
            if self.closed:
                error = self._reader.exception()
                await self.close()
                reason = f": {_reason(error)}" if error is not None else ""
                raise Refused(f"{target} closed the connection after the handshake{reason}")
            session = tls.session
            if session is not None and session.has_ticket:
                return
            await asyncio.sleep(SETTLE_STEP)
        # a collector that issues no tickets: silent this long, it accepted us

    @property
    def closed(self) -> bool:
        """Whether the collector has closed its end (seen as end of stream or an error)."""
        return (
            self._writer.is_closing()
            or self._reader.at_eof()
            or self._reader.exception() is not None
        )

    async def send(self, frames: list[bytes]) -> None:
        if self.closed:
            raise Refused("the collector closed the connection")
        try:
            self._writer.write(b"".join(frames))
            await asyncio.wait_for(self._writer.drain(), SEND_SECONDS)
        except (OSError, ssl.SSLError, TimeoutError) as error:
            raise Refused(f"sending failed: {_reason(error)}") from error
        await asyncio.sleep(0)  # let a close that arrived meanwhile be seen
        if self._reader.exception() is not None:
            raise Refused("the collector closed the connection while sending")

    async def close(self) -> None:
        self._writer.close()
        with contextlib.suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(self._writer.wait_closed(), 2.0)


def _reason(error: BaseException) -> str:
    if isinstance(error, ssl.SSLCertVerificationError):
        return f"certificate not trusted ({error.verify_message})"
    if isinstance(error, TimeoutError):
        return "timed out"
    return str(error) or type(error).__name__
