"""WADO-RS and WADO-URI: instances streamed from the object store, metadata as stored.

Instances are sent as stored (original transfer syntax) when no transfer syntax is
asked, or `*`, or a stored one; Explicit VR Little Endian is made on request from
implicit VR and compressed instances (pixels decoded by pydicom); anything else is 406.
"""

from __future__ import annotations

import asyncio
import io
import warnings
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from access.errors import AccessError
from access.restriction import UNRESTRICTED, Restriction
from imaging.dicomweb import render
from imaging.dicomweb.multipart import MultipartWriter, media_parameters
from imaging.index import DicomIndex
from imaging.index_query import Condition, IndexQuery, compile_query, find_rows
from imaging.objectstore import ObjectStore
from imaging.parse import metadata_of

Document = dict[str, Any]
BIG_ENDIAN = "1.2.840.10008.1.2.2"
BULK_MARK = b'"BulkDataURI":"'
FRAMES_LIMIT = "MEDBRIDGE_LIMIT_FRAMES_PER_REQUEST"


@dataclass(slots=True)
class Answer:
    """What a WADO handler produces: bytes, or a stream of chunks."""

    status: int
    media_type: str
    body: bytes | None = None
    stream: AsyncIterator[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)


async def instance_rows(
    index: DicomIndex,
    study: str,
    series: str | None,
    sop: str | None,
    with_meta: bool = False,
    restriction: Restriction = UNRESTRICTED,
) -> list[Document]:
    """The instance rows a WADO path names; MB-3010 (404) when none, or none the access
    may see (another patient's study is not found, not forbidden)."""
    own = [Condition("st", study)]
    if series is not None:
        own.append(Condition("se", series))
    if sop is not None:
        own.append(Condition("_id", sop))
    projection = None if with_meta else {"meta": 0}
    compiled = compile_query(IndexQuery("instance", instance=tuple(own)), restriction)
    rows = await find_rows(index, compiled, projection)
    if not rows:
        raise AccessError("MB-3010")
    return rows


def _requested_syntaxes(accept: str) -> list[str | None]:
    """Transfer syntaxes asked for by multipart/related; type=application/dicom ranges."""
    asked: list[str | None] = []
    for media_range in accept.split(","):
        media, params = media_parameters(media_range)
        part = params.get("type", "").lower()
        if (
            media in ("*/*", "multipart/*")
            or (media == "multipart/related" and part in ("", "application/dicom", "application/*"))
            or media == "application/dicom"
        ):
            asked.append(params.get("transfer-syntax"))
    return asked


def target_syntax(accept: str, rows: list[Document]) -> str | None:
    """The transfer syntax to send: None for each instance's stored one (no parameter,
    or `*`, or every stored syntax acceptable); Explicit VR Little Endian by transcoding
    when asked for and possible; else 406."""
    if not accept.strip():
        return None
    asked = _requested_syntaxes(accept)
    if not asked:
        raise AccessError(
            "MB-3012", "WADO-RS instances come as multipart/related; type=application/dicom"
        )
    if any(ts in (None, "*") for ts in asked):
        return None
    stored = {row["ts"] for row in rows}
    if stored <= {ts for ts in asked if ts}:
        return None
    if ExplicitVRLittleEndian in asked and BIG_ENDIAN not in stored:
        return str(ExplicitVRLittleEndian)
    raise AccessError("MB-3012", "instances cannot be sent in the transfer syntax asked for")


def instances(store: ObjectStore, rows: list[Document], target: str | None = None) -> Answer:
    """Stream the instances; those not in `target` (when given) are transcoded to it."""
    writer = MultipartWriter("application/dicom")

    async def chunks() -> AsyncIterator[bytes]:
        for number, row in enumerate(rows):
            if target is None or row["ts"] == target:
                if number + 1 < len(rows):  # the disk reads the next while this one is sent
                    await store.prefetch(rows[number + 1]["key"])
                header = f"Content-Length: {row['size']}\r\nMB-Transfer-Syntax: {row['ts']}\r\n"
                yield writer.opening(header) if number == 0 else writer.between(header)
                async for chunk in store.stream(row["key"]):
                    yield chunk
                continue
            data = await asyncio.to_thread(_explicit_little_endian, await store.get(row["key"]))
            header = f"Content-Length: {len(data)}\r\nMB-Transfer-Syntax: {target}\r\n"
            yield writer.opening(header) if number == 0 else writer.between(header)
            yield data
        yield writer.closing()

    return Answer(200, writer.content_type, stream=chunks())


def _explicit_little_endian(data: bytes) -> bytes:
    """Implicit VR or compressed -> Explicit VR Little Endian (pixels decoded by pydicom)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
            if ds.file_meta.TransferSyntaxUID.is_compressed:
                ds.decompress()
            else:
                ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            out = io.BytesIO()
            ds.save_as(out, enforce_file_format=True)
    except Exception as error:
        raise AccessError("MB-3014", "instance could not be transcoded") from error
    return out.getvalue()


async def metadata(
    index: DicomIndex, store: ObjectStore, rows: list[Document], base_url: str
) -> Answer:
    """The DICOM JSON from the index (made and cached on first request), URIs absolute."""
    absolute = BULK_MARK + base_url.encode() + b"/"
    parts = []
    for row in rows:
        meta: bytes | None = row.get("meta")
        if not meta:
            meta = await asyncio.to_thread(metadata_of, await store.get(row["key"]))
            await index.set_metadata(row["_id"], meta)
        parts.append(bytes(meta).replace(BULK_MARK, absolute))
    return Answer(200, "application/dicom+json", body=b"[" + b",".join(parts) + b"]")


async def bulkdata(store: ObjectStore, row: Document, tag: str) -> Answer:
    data = await store.get(row["key"])
    if tag.upper() == "7FE00010":
        # every frame the pixel data really holds, never the header's count alone
        ds = await asyncio.to_thread(render.checked_frames, data, ())
        return await _frame_parts(ds, data, range(1, render.frame_count(ds) + 1), one_part=True)
    value = render.element_bytes(data, tag)
    writer = MultipartWriter("application/octet-stream")
    return Answer(200, writer.content_type, body=writer.opening() + value + writer.closing())


async def frames(store: ObjectStore, row: Document, numbers: list[int]) -> Answer:
    data = await store.get(row["key"])
    ds = await asyncio.to_thread(render.checked_frames, data, numbers)
    return await _frame_parts(ds, data, numbers, one_part=False)


async def _frame_parts(
    ds: pydicom.Dataset, data: bytes, numbers: Sequence[int], one_part: bool
) -> Answer:
    """Frames streamed one at a time (a part each, or all in one part for bulk data):
    the response is never built in memory. Compressed frames are decoded off the loop;
    the first before the answer starts, so an undecodable instance is still a 422."""
    writer = MultipartWriter("application/octet-stream")
    compressed = ds.file_meta.TransferSyntaxUID.is_compressed

    async def one(number: int) -> bytes:
        if compressed:
            return await asyncio.to_thread(render.frame, ds, data, number)
        return render.frame(ds, data, number)

    first = await one(numbers[0]) if numbers else b""

    async def chunks() -> AsyncIterator[bytes]:
        yield writer.opening()
        yield first
        for number in numbers[1:]:
            if not one_part:
                yield writer.between()
            yield await one(number)
        yield writer.closing()

    return Answer(200, writer.content_type, stream=chunks())


def image_media(accept: str, content_type: str | None = None) -> str:
    wanted = (content_type or accept or "image/jpeg").lower()
    for candidate in ("image/png", "image/jpeg"):
        if candidate in wanted:
            return candidate
    if "*/*" in wanted or "image/*" in wanted:
        return "image/jpeg"
    raise AccessError("MB-3012", "rendered images come as image/jpeg or image/png")


async def rendered(
    store: ObjectStore, row: Document, media: str, frame: int = 1, thumbnail: bool = False
) -> Answer:
    data = await store.get(row["key"])
    image = await asyncio.to_thread(render.rendered, data, media, frame, thumbnail)
    return Answer(200, media, body=image)


def parse_frames(text: str, max_frames: int) -> list[int]:
    """A WADO-RS frame list; more than `max_frames` numbers is refused before parsing."""
    asked = text.count(",") + 1
    if asked > max_frames:
        raise AccessError(
            "MB-3040",
            f"at most {max_frames} frames per request ({FRAMES_LIMIT}); {asked} were named",
        )
    try:
        numbers = [int(n) for n in text.split(",") if n.strip()]
    except ValueError as error:
        raise AccessError("MB-3011", "frame list must be comma-separated integers") from error
    if not numbers:
        raise AccessError("MB-3011", "empty frame list")
    return numbers


def json_answer(payload: Any) -> Answer:
    return Answer(200, "application/dicom+json", body=orjson.dumps(payload))
