"""STOW-RS: POST /studies[/{study}] with multipart/related; type="application/dicom".

Each part goes through the one ingest path as soon as it is complete; the answer is
the PS3.18 store response (ReferencedSOPSequence / FailedSOPSequence with reasons):
200 all stored, 202 some failed, 409 none stored.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import AsyncIterable
from typing import Any

import httpx
import orjson

from access.budget import Budget
from access.errors import AccessError
from access.loop_turns import Turns
from fhir_server.exchange import FhirResponse
from imaging.dicomweb.multipart import inflate, media_parameters, read_parts
from imaging.fhir_link import StudyLinker
from imaging.ingest import Ingestor, IngestOutcome

DICOM_JSON = "application/dicom+json"
ACCEPTED_PART_TYPES = ("application/dicom", "application/octet-stream", "")
# parts are ingested in batches while the rest of the body streams in
BATCH_INSTANCES, BATCH_BYTES, IN_FLIGHT = 32, 2 * 1024 * 1024, 4
# the smallest data set: one element's tag, VR/length and a value (8 bytes of header)
MIN_INSTANCE_BYTES = 8
PARTS_LIMIT = "MEDBRIDGE_LIMIT_MULTIPART_PARTS"
# parts refused before parsing share one (frozen) outcome: 10,000 empty parts made
# 10,000 of them, ~40 ms of the loop (issue 17, L8)
NOT_DICOM = IngestOutcome(0xC000, code="MB-3013", reason="part is not DICOM")
TOO_SHORT = IngestOutcome(0xC000, code="MB-3001", reason="part too short for DICOM")


async def stow(
    ingestor: Ingestor,
    linker: StudyLinker | None,
    headers: dict[str, str],
    body: AsyncIterable[bytes],
    base_url: str,
    study: str | None,
    source: str,
    budget: Budget | None = None,
) -> FhirResponse:
    budget = budget or Budget()
    media, params = media_parameters(headers.get("content-type", ""))
    part_type = params.get("type", "").lower()
    if media != "multipart/related" or part_type != "application/dicom":
        raise AccessError("MB-3013")
    boundary = params.get("boundary")
    if not boundary:
        raise AccessError("MB-1004", "multipart/related without a boundary")
    if len(boundary) > budget.max_multipart_boundary:
        raise AccessError(
            "MB-3042",
            f"the multipart boundary has {len(boundary)} characters; RFC 2046 allows "
            f"1-{budget.max_multipart_boundary}",
        )
    limits = ingestor.policy.limits
    chunks = inflate(
        body,
        headers.get("content-encoding", "").strip().lower(),
        limits.max_inflated_bytes,
        limits.max_inflate_ratio,
    )
    # batches are ingested while the rest of the body is read (at most IN_FLIGHT at
    # once): parsing, hashing and writing overlap with receiving
    slots: list[IngestOutcome | asyncio.Task[list[IngestOutcome]]] = []
    running: list[asyncio.Task[list[IngestOutcome]]] = []
    batch: list[bytes] = []
    batch_bytes = 0

    async def start(items: list[bytes]) -> None:
        while len(running) >= IN_FLIGHT:
            await asyncio.wait(running, return_when=asyncio.FIRST_COMPLETED)
            running[:] = [task for task in running if not task.done()]
        task = asyncio.create_task(ingestor.ingest_many(items, source, study))
        running.append(task)
        slots.append(task)

    parts = 0
    async for part in read_parts(chunks, boundary, limits.max_instance_bytes):
        parts += 1
        if parts > budget.max_multipart_parts:
            # the rest of the body is not read; batches already handed over finish
            # first, so the answer is not sent while they still write
            await asyncio.gather(*running, return_exceptions=True)
            raise AccessError(
                "MB-3040",
                f"at most {budget.max_multipart_parts} parts per STOW-RS request "
                f"({PARTS_LIMIT}); batches already being stored were kept",
            )
        if part.content_type not in ACCEPTED_PART_TYPES:
            slots.append(NOT_DICOM)
            continue
        if len(part.body) < MIN_INSTANCE_BYTES:
            # refused here, without a trip through the parser pool (issue 17, L8)
            slots.append(TOO_SHORT)
            continue
        batch.append(part.body)
        batch_bytes += len(part.body)
        if len(batch) >= BATCH_INSTANCES or batch_bytes >= BATCH_BYTES:
            await start(batch)
            batch, batch_bytes = [], 0
    if batch:
        await start(batch)
    outcomes: list[IngestOutcome] = []
    turns = Turns()
    for slot in slots:
        await turns.take()
        outcomes += [slot] if isinstance(slot, IngestOutcome) else await slot
    if not outcomes:
        raise AccessError("MB-1019", "STOW-RS request without any part")
    studies = {o.study for o in outcomes if o.ok and o.study}
    if linker is not None and studies:
        # ImagingStudy upkeep follows at once in the background, one write per study
        # however many requests brought its instances
        linker.schedule()
    return await _response(outcomes, base_url, study or (sorted(studies)[0] if studies else None))


async def _response(
    outcomes: list[IngestOutcome], base_url: str, study: str | None
) -> FhirResponse:
    """The store response, built with turns for the loop (10,000 items for 10,000 parts)."""
    stored: list[dict[str, Any]] = []
    failed: list[dict[str, Any]] = []
    reasons: set[str] = set()
    turns = Turns()
    for outcome in outcomes:
        await turns.take()
        if outcome.ok:
            stored.append(_stored_item(outcome, base_url))
        else:
            failed.append(_failed_item(outcome))
            reasons.add(f"{outcome.code} {outcome.reason}")
    body: dict[str, Any] = {}
    if study is not None:
        body["00081190"] = {"vr": "UR", "Value": [f"{base_url}/studies/{study}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": failed}
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": stored}
    status = 200 if not failed else 202 if stored else 409
    headers = {}
    if failed:
        # PS3.18 8.4.1: the reasons in words go in Warning header fields (one line here)
        reasons_line = "; ".join(sorted(reasons))[:900]
        headers["Warning"] = '299 medbridge "' + reasons_line.replace('"', "'") + '"'
    return FhirResponse(status, orjson.dumps(body), headers, content_type=DICOM_JSON)


def _reference(outcome: IngestOutcome) -> dict[str, Any]:
    item: dict[str, Any] = {}
    if outcome.sop_class:
        item["00081150"] = {"vr": "UI", "Value": [outcome.sop_class]}
    if outcome.sop_instance:
        item["00081155"] = {"vr": "UI", "Value": [outcome.sop_instance]}
    return item


def _failed_item(outcome: IngestOutcome) -> dict[str, Any]:
    if not outcome.sop_class and not outcome.sop_instance:
        # a part refused before parsing names nothing: one shared item per status, not
        # 10,000 built for 10,000 empty parts (issue 17, L8)
        return _anonymous_failure(outcome.status)
    item = _reference(outcome)
    item["00081197"] = {"vr": "US", "Value": [outcome.status]}
    return item


@functools.lru_cache(maxsize=16)
def _anonymous_failure(status: int) -> dict[str, Any]:
    return {"00081197": {"vr": "US", "Value": [status]}}


def _stored_item(outcome: IngestOutcome, base_url: str) -> dict[str, Any]:
    item = _reference(outcome)
    url = (
        f"{base_url}/studies/{outcome.study}/series/{outcome.series}"
        f"/instances/{outcome.sop_instance}"
    )
    item["00081190"] = {"vr": "UR", "Value": [url]}
    return item


async def stow_one_over_http(
    client: httpx.AsyncClient, base_url: str, data: bytes
) -> IngestOutcome:
    """STOW-RS one instance to a server (the import command's `--url`), as an outcome."""
    boundary = "medbridge-import"
    body = (
        f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    try:
        response = await client.post(
            base_url.rstrip("/") + "/studies", content=body, headers={"Content-Type": content_type}
        )
    except httpx.HTTPError as error:
        return IngestOutcome(0xA700, code="MB-3008", reason=f"server unreachable: {error}")
    answer = orjson.loads(response.content) if response.content.startswith(b"{") else {}
    stored = answer.get("00081199", {}).get("Value", [])
    failed = answer.get("00081198", {}).get("Value", [])
    if stored:
        item = stored[0]
        return IngestOutcome(
            0, item.get("00081150", {}).get("Value", [None])[0],
            item.get("00081155", {}).get("Value", [None])[0],
        )  # fmt: skip
    status = failed[0]["00081197"]["Value"][0] if failed else 0xC000
    reason = response.headers.get("warning", f"HTTP {response.status_code}")
    return IngestOutcome(status, code=f"HTTP-{response.status_code}", reason=reason[:200])
