"""multipart/related in and out, streamed: parts are read and written one at a time.

Reading uses python-multipart's streaming parser; a gzip/deflate request body is
inflated on the fly under an absolute cap and a ratio cap, so a compression bomb is
refused after at most `max_bytes` of output.
"""

from __future__ import annotations

import asyncio
import time
import uuid
import zlib
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser

from access.errors import AccessError
from access.loop_turns import YIELD_AFTER_SECONDS, joined

#: bytes handed to the parser at once: small while parts are tiny (a callback per header
#: byte), growing to the largest while they are bulk pixel data (found with `find`)
SMALLEST_SLICE, LARGEST_SLICE = 512, 256 * 1024


@dataclass(slots=True)
class Part:
    """One part: its headers, and its body once the part is complete (`read_parts`)."""

    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    # the body as it arrives: the parser's own buffers, kept, not copied piece by piece
    pieces: list[bytes] = field(default_factory=list)
    size: int = 0

    async def assemble(self) -> None:
        """Join the pieces into `body`: one copy, on a thread when large (bytes.join
        lets go of the GIL there, so neither the loop nor the GIL waits for it)."""
        pieces, self.pieces = self.pieces, []
        self.body = await joined(pieces, self.size) if pieces else b""

    @property
    def content_type(self) -> str:
        return self.headers.get("content-type", "").split(";")[0].strip().lower()


def media_parameters(value: str) -> tuple[str, dict[str, str]]:
    """`multipart/related; type="application/dicom"; boundary=x` -> (media, params)."""
    pieces = [p.strip() for p in value.split(";")]
    params: dict[str, str] = {}
    for piece in pieces[1:]:
        if "=" in piece:
            name, _, raw = piece.partition("=")
            params[name.strip().lower()] = raw.strip().strip('"')
    return pieces[0].lower(), params


async def inflate(
    chunks: AsyncIterable[bytes], encoding: str, max_bytes: int, max_ratio: int
) -> AsyncIterator[bytes]:
    """Decode a Content-Encoding (gzip, deflate) with bounded output."""
    if encoding in ("", "identity"):
        async for chunk in chunks:
            yield chunk
        return
    if encoding not in ("gzip", "deflate", "x-gzip"):
        raise AccessError("MB-1014", f"Content-Encoding {encoding[:20]!r} not supported")
    inflater = zlib.decompressobj(zlib.MAX_WBITS | 32)  # gzip or zlib header
    taken = produced = 0
    async for chunk in chunks:
        taken += len(chunk)
        pending = chunk
        while pending:
            try:
                out = inflater.decompress(pending, 1024 * 1024)
            except zlib.error as error:
                raise AccessError("MB-1004", "corrupt compressed request body") from error
            pending = inflater.unconsumed_tail
            produced += len(out)
            if produced > max_bytes or produced > max(taken, 4096) * max_ratio:
                raise AccessError("MB-3003", "compressed request body inflates past the limit")
            if out:
                yield out


async def read_parts(
    chunks: AsyncIterable[bytes], boundary: str, max_part_bytes: int
) -> AsyncIterator[Part]:
    """Yield each part once complete; a part over `max_part_bytes` is refused."""
    done: list[Part] = []
    state: dict[str, Part | bytes] = {}
    header_name = bytearray()
    header_value = bytearray()
    too_large: list[bool] = []

    def on_part_begin() -> None:
        state["part"] = Part()

    def on_header_field(data: bytes, start: int, end: int) -> None:
        header_name.extend(data[start:end])

    def on_header_value(data: bytes, start: int, end: int) -> None:
        header_value.extend(data[start:end])

    def on_header_end() -> None:
        part = state["part"]
        assert isinstance(part, Part)
        part.headers[header_name.decode("latin-1").strip().lower()] = header_value.decode(
            "latin-1"
        ).strip()
        header_name.clear()
        header_value.clear()

    def on_part_data(data: bytes, start: int, end: int) -> None:
        part = state["part"]
        assert isinstance(part, Part)
        if part.size + (end - start) > max_part_bytes:
            too_large.append(True)
            return
        # the whole buffer handed to the parser (a slice of pixel data) is kept as it is;
        # a bytearray extended piece by piece and then copied to bytes was three copies
        # of every byte on the event loop (issue 17, largest-stow)
        whole = start == 0 and end == len(data) and type(data) is bytes  # immutable: kept
        part.pieces.append(data if whole else bytes(data[start:end]))
        part.size += end - start

    def on_part_end() -> None:
        part = state.pop("part")
        assert isinstance(part, Part)
        done.append(part)

    parser = MultipartParser(
        boundary,
        {
            "on_part_begin": on_part_begin,
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
        max_header_count=32,
    )
    pace = _Pace()
    async for chunk in chunks:
        start = 0
        while start < len(chunk):
            if pace.due():
                # the parser is pure Python (a callback per header and part): thousands
                # of tiny parts in one chunk held the event loop for seconds (issue 17, L8)
                await asyncio.sleep(0)
                pace.resumed()
            end = start + pace.slice
            began = time.perf_counter()
            try:
                parser.write(chunk[start:end])
            except Exception as error:
                raise AccessError("MB-1004", "malformed multipart/related body") from error
            pace.took(time.perf_counter() - began)
            start = end
            if too_large:
                raise AccessError("MB-3003", f"a part is larger than {max_part_bytes} bytes")
            while done:
                part = done.pop(0)
                await part.assemble()
                yield part
    parser.finalize()
    while done:
        part = done.pop(0)
        await part.assemble()
        yield part


class _Pace:
    """How much to parse before the event loop gets a turn: slices sized so that one
    takes well under YIELD_AFTER_SECONDS, and a turn once that much time was spent."""

    def __init__(self) -> None:
        self.slice = SMALLEST_SLICE
        self._since = time.perf_counter()

    def due(self) -> bool:
        return time.perf_counter() - self._since >= YIELD_AFTER_SECONDS

    def resumed(self) -> None:
        self._since = time.perf_counter()

    def took(self, spent: float) -> None:
        """One slice took `spent` seconds: the next one is sized from it."""
        if spent < YIELD_AFTER_SECONDS / 8:
            self.slice = min(self.slice * 2, LARGEST_SLICE)
        elif spent > YIELD_AFTER_SECONDS / 2:
            self.slice = max(self.slice // 2, SMALLEST_SLICE)


class MultipartWriter:
    """multipart/related framing around parts that are themselves streamed."""

    def __init__(self, part_type: str) -> None:
        self.boundary = uuid.uuid4().hex
        self.part_type = part_type

    @property
    def content_type(self) -> str:
        return f'multipart/related; type="{self.part_type}"; boundary={self.boundary}'

    def opening(self, extra_headers: str = "") -> bytes:
        return (
            f"--{self.boundary}\r\nContent-Type: {self.part_type}\r\n{extra_headers}\r\n"
        ).encode("latin-1")

    def closing(self) -> bytes:
        return f"\r\n--{self.boundary}--\r\n".encode("latin-1")

    def between(self, extra_headers: str = "") -> bytes:
        return b"\r\n" + self.opening(extra_headers)
