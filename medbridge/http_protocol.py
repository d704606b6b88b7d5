"""uvicorn's httptools protocol with the request head bounded in size and in time.

httptools (llhttp) buffers a header line of any length, and uvicorn has no timeout for
a request head: a 50 MB header line was accepted, and 300 slowloris connections (a byte
every few seconds) or 1,000 connections that send nothing stayed open for ever. Here a
head over `Budget.max_header_bytes` is answered 431 and a head not complete within
`Budget.http_header_timeout` is answered 408, both closing the connection; idle
keep-alive connections are closed by uvicorn's own `timeout_keep_alive`, which the
composition root sets from `Budget.http_keepalive_timeout`.
"""

from __future__ import annotations

import asyncio
import logging

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from access.budget import Budget
from access.errors import AccessError
from fhir_server.errors import outcome

log = logging.getLogger(__name__)


class _HeadTooLarge(Exception):
    pass


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """One HTTP/1.1 connection; `budget` is set on the subclass `bounded_protocol` makes."""

    budget = Budget()

    _head_open = True  # between requests or inside a request head
    _head_bytes = 0  # bytes received since the head began (all of them head while open)
    _head_size = 0  # the parsed head: URL and header lines
    _head_timer: asyncio.TimerHandle | None = None
    _refusing: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._start_head()
        self._arm_head_timer()  # a connection that sends nothing is closed too

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refusing is not None:
            return  # answered and closing: the rest of a refused head is not parsed
        if self._head_open:
            self._head_bytes += len(data)
            self._arm_head_timer()
        try:
            super().data_received(data)
        except _HeadTooLarge:  # httptools normally wraps it in its callback error
            self._refuse("MB-1063")
            return
        if self._head_open and self._head_bytes > self.budget.max_header_bytes:
            # every byte counted is head: the head alone is over the cap, and what
            # httptools buffered of it is at most the cap and one read
            self._refuse("MB-1063")

    def send_400_response(self, msg: str) -> None:
        if self._refusing is not None:
            return  # _refuse already answered and closed; this is the parser stopping
        super().send_400_response(msg)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_size = 0

    def on_url(self, url: bytes) -> None:
        self._add_head(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._add_head(len(name) + len(value) + 4)
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._head_open = False
        self._cancel_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._start_head()  # the next request's head; its timer starts with its first byte

    def _add_head(self, size: int) -> None:
        self._head_size += size
        if self._head_size > self.budget.max_header_bytes:
            self._refuse("MB-1063")
            raise _HeadTooLarge  # stops the parser: httptools raises its callback error

    def _start_head(self) -> None:
        self._head_open = True
        self._head_bytes = 0

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(
                self.budget.http_header_timeout, self._head_timed_out
            )

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self._head_open and not self.transport.is_closing():
            if self._head_bytes:
                self._refuse("MB-1064")
            else:  # nothing sent at all (or idle between requests): just close
                self.transport.close()

    def _refuse(self, code: str) -> None:
        """Answer a head we will not read as an OperationOutcome, and close."""
        if self._refusing is not None or self.transport.is_closing():
            return
        self._refusing = code
        error = AccessError(code, _DIAGNOSTICS[code])
        body = orjson.dumps(outcome(error))
        log.info("HTTP request head refused: %s", code)
        head = (
            f"HTTP/1.1 {error.status} {_REASONS[error.status]}\r\n"
            "content-type: application/fhir+json; charset=utf-8\r\n"
            f"content-length: {len(body)}\r\n"
            "cache-control: no-store\r\n"
            "x-content-type-options: nosniff\r\n"
            "connection: close\r\n\r\n"
        )
        self.transport.write(head.encode("ascii") + body)
        self.transport.close()
        self._cancel_head_timer()


_REASONS = {431: "Request Header Fields Too Large", 408: "Request Timeout"}
_DIAGNOSTICS = {
    "MB-1063": "request head over the configured limit (max_header_bytes)",
    "MB-1064": "request head not complete within the configured time (http_header_timeout)",
}


def bounded_protocol(budget: Budget) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for `uvicorn.Config(http=...)`, bounded by `budget`."""
    return type("BudgetedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"budget": budget})
