"""The DICOMweb door: every request runs through its own `FhirPipeline` (Door.DICOMWEB).

Starlette request -> FhirRequest + RequestContext -> pipeline (authenticate, authorize,
consent, act, consent-show, audit hooks) -> STOW / QIDO / WADO handler. Errors are
answered as HTTP statuses with a JSON OperationOutcome body, never a stack trace.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from access.access import Access, Action
from access.budget import Budget
from access.context import Door, RequestContext
from access.errors import AccessError
from access.restriction import Restriction
from access.shown import Shown
from fhir_server import store_errors
from fhir_server.errors import challenge, outcome
from fhir_server.exchange import FhirExchange, FhirPipeline, FhirRequest, FhirResponse
from fhir_server.http import credentials_of, request_of, socket_base
from imaging.dicomweb import qido, wado
from imaging.dicomweb.stow import stow
from imaging.fhir_link import StudyLinker
from imaging.index import DicomIndex
from imaging.index_query import Document
from imaging.ingest import Ingestor
from imaging.objectstore import ObjectStore
from imaging.parse import metadata_of
from imaging.shown_rows import row_items
from imaging.uids import is_uid

DICOMWEB_METHODS = ["GET", "POST"]
HTTP_NOTE, ANSWER_NOTE = "dicomweb.http", "dicomweb.answer"
# builds the answer from the rows still shown
Finish = Callable[[list[Document]], Awaitable[wado.Answer]]
PURPOSE_HEADER = "x-purpose-of-use"
# the DICOM side of an access concerns imaging studies, whatever the level
IMAGING_TYPES = frozenset({"ImagingStudy"})
LEVEL_SEGMENTS = ("studies", "series", "instances")


@dataclass(slots=True)
class DicomwebRoute:
    # stow | search | retrieve | metadata | rendered | thumbnail | frames | bulkdata | wado-uri
    action: str
    level: str = "study"
    study: str | None = None
    series: str | None = None
    sop: str | None = None
    extra: list[str] = field(default_factory=list)


def parse_route(method: str, path: str) -> DicomwebRoute:
    """Path below /dicomweb -> what is asked, with every UID checked."""
    parts = [p for p in path.strip("/").split("/") if p]
    if parts == ["wado"] and method == "GET":
        return DicomwebRoute("wado-uri")
    if len(parts) == 1 and parts[0] in ("studies", "series", "instances") and method == "GET":
        return DicomwebRoute(
            "search", {"studies": "study", "series": "series"}.get(parts[0], "instance")
        )
    if parts[:1] != ["studies"]:
        raise AccessError("MB-3010", "no DICOMweb resource at this path")
    if method == "POST":
        if len(parts) > 2:
            raise AccessError("MB-1013", "STOW-RS is POST /studies or /studies/{study}")
        return DicomwebRoute("stow", study=_uid(parts[1]) if len(parts) == 2 else None)
    if method != "GET":
        raise AccessError("MB-1013")
    route = DicomwebRoute("retrieve")
    rest = parts[1:]
    route.study = _uid(rest[0]) if rest else None
    rest = rest[1:]
    if rest[:1] == ["series"] and len(rest) == 1:
        return DicomwebRoute("search", "series", route.study)
    if rest[:1] == ["instances"] and len(rest) == 1:
        return DicomwebRoute("search", "instance", route.study)
    if rest[:1] == ["series"]:
        route.level, route.series, rest = "series", _uid(rest[1]), rest[2:]
        if rest == ["instances"]:
            return DicomwebRoute("search", "instance", route.study, route.series)
        if rest[:1] == ["instances"] and len(rest) >= 2:
            route.level, route.sop, rest = "instance", _uid(rest[1]), rest[2:]
    if not rest:
        return route
    if rest[0] in ("metadata", "rendered", "thumbnail") and len(rest) == 1:
        route.action = rest[0]
        return route
    if route.sop and rest[0] in ("frames", "bulkdata") and len(rest) in (2, 3):
        route.action, route.extra = rest[0], rest[1:]
        return route
    raise AccessError("MB-3010", "no DICOMweb resource at this path")


def _uid(text: str) -> str:
    if not is_uid(text):
        raise AccessError("MB-3010", "not a valid DICOM UID in the path")
    return text


class DicomwebService:
    """STOW/QIDO/WADO behind one pipeline; other packages hook `pipeline` stages."""

    def __init__(
        self,
        ingestor: Ingestor,
        index: DicomIndex,
        store: ObjectStore,
        linker: StudyLinker | None,
        base_path: str,
        share_hooks_with: FhirPipeline | None = None,
        budget: Budget | None = None,
        public_url: Callable[[], str] | None = None,
    ) -> None:
        self.budget = budget or Budget()
        self.ingestor = ingestor
        self.index = index
        self.store = store
        self.linker = linker
        self.base_path = base_path
        self.public_url = public_url  # the configured DICOMweb base, never the Host header
        self.pipeline = FhirPipeline(
            self._prepare, self._act, render_error, share_hooks_with,
            explain=store_errors.as_access_error,
        )  # fmt: skip

    async def handle(self, request: Request) -> Response:
        base_url = self.public_url() if self.public_url else socket_base(request) + self.base_path
        fhir_request = request_of(request, base_url)
        context = RequestContext(
            Door.DICOMWEB,
            peer=request.client.host if request.client else None,
            credentials=credentials_of(request),
        )
        context.notes[HTTP_NOTE] = request
        response = await self.pipeline.handle(FhirExchange(fhir_request, context))
        answer = context.notes.get(ANSWER_NOTE)
        if response.status < 300 and isinstance(answer, wado.Answer) and answer.stream is not None:
            return StreamingResponse(
                answer.stream, answer.status, answer.headers, media_type=answer.media_type
            )
        headers = dict(response.headers)
        return Response(response.body, response.status, headers, media_type=response.content_type)

    def _prepare(self, exchange: FhirExchange) -> None:
        route = parse_route(exchange.request.method.upper(), exchange.request.path)
        exchange.route = route
        exchange.access = dicomweb_access(route, exchange.request, exchange.context)

    async def _act(self, exchange: FhirExchange) -> FhirResponse:
        route: DicomwebRoute = exchange.route
        request = exchange.request
        if route.study:
            exchange.touched.append(f"ImagingStudy/{route.study}")
        if route.action == "stow":
            http: Request = exchange.context.notes[HTTP_NOTE]
            source = f"stow:{exchange.context.peer or '-'}"
            return await stow(
                self.ingestor, self.linker, dict(request.headers), http.stream(),
                request.base_url, route.study, source, self.budget,
            )  # fmt: skip
        rows, finish = await self._select(route, request, exchange.restriction)
        if exchange.showing:
            # consent-show decides on the rows before any byte of the answer is built
            exchange.items = Shown(await row_items(self.index, rows), self._builder(
                exchange, rows, finish, hidden_all=route.action != "search"
            ))  # fmt: skip
            return FhirResponse(204)
        return self._answered(exchange, await finish(rows))

    def _answered(self, exchange: FhirExchange, answer: wado.Answer) -> FhirResponse:
        exchange.context.notes[ANSWER_NOTE] = answer
        return FhirResponse(
            answer.status, answer.body, answer.headers, content_type=answer.media_type
        )

    def _builder(
        self, exchange: FhirExchange, rows: list[Document], finish: Finish, hidden_all: bool
    ) -> Callable[[Shown[FhirResponse]], Awaitable[FhirResponse]]:
        async def build(shown: Shown[FhirResponse]) -> FhirResponse:
            visible = [row for n, row in enumerate(rows) if shown.visible_at(n)]
            if hidden_all and not visible:
                raise AccessError("MB-3010")  # a WADO of hidden instances: not found
            return self._answered(exchange, await finish(visible))

        return build

    async def _select(
        self, route: DicomwebRoute, request: FhirRequest, restriction: Restriction
    ) -> tuple[list[Document], Finish]:
        """The index rows the request names (the one index query, restricted) and how to
        build the answer from those of them still shown."""
        accept = request.header("accept") or ""
        if route.action == "search":
            fixed = {
                k: v
                for k, v in (("StudyInstanceUID", route.study), ("SeriesInstanceUID", route.series))
                if v
            }
            query = qido.parse_query(
                route.level, request.query, fixed, self.budget.max_wildcard_chars
            )
            found, truncated = await qido.find(self.index, query, restriction)

            async def search(rows: list[Document]) -> wado.Answer:
                body = await qido.render(self.index, query, rows, request.base_url, self._metadata)
                headers = qido.SearchResult(body, truncated).headers(request.base_url)
                return wado.Answer(200, "application/dicom+json", body, headers=headers)

            return found, search
        if route.action == "wado-uri":
            return await self._wado_uri(request, restriction)
        assert route.study is not None
        with_meta = route.action == "metadata"
        rows = await wado.instance_rows(
            self.index, route.study, route.series, route.sop, with_meta, restriction
        )
        return rows, partial(self._wado, route, accept, request.base_url)

    async def _wado(
        self, route: DicomwebRoute, accept: str, base_url: str, rows: list[Document]
    ) -> wado.Answer:
        if route.action == "retrieve":
            return wado.instances(self.store, rows, wado.target_syntax(accept, rows))
        if route.action == "metadata":
            return await wado.metadata(self.index, self.store, rows, base_url)
        if route.action in ("rendered", "thumbnail"):
            media = wado.image_media(accept)
            middle = rows[len(rows) // 2]
            return await wado.rendered(
                self.store, middle, media, thumbnail=route.action == "thumbnail"
            )
        if route.action == "frames":
            numbers = wado.parse_frames(route.extra[0], self.budget.max_frames_per_request)
            if len(route.extra) == 2:
                media = wado.image_media(accept)
                thumbnail = route.extra[1] == "thumbnail"
                return await wado.rendered(self.store, rows[0], media, numbers[0], thumbnail)
            return await wado.frames(self.store, rows[0], numbers)
        if route.action == "bulkdata":
            return await wado.bulkdata(self.store, rows[0], route.extra[0])
        raise AccessError("MB-3010")

    async def _metadata(self, row: dict[str, Any]) -> bytes:
        """An instance's DICOM JSON, made from the object and cached on first use."""
        meta = await asyncio.to_thread(metadata_of, await self.store.get(row["key"]))
        await self.index.set_metadata(row["_id"], meta)
        return meta

    async def _wado_uri(
        self, request: FhirRequest, restriction: Restriction
    ) -> tuple[list[Document], Finish]:
        if (request.param("requestType") or "").upper() != "WADO":
            raise AccessError("MB-3011", "WADO-URI needs requestType=WADO")
        study, series, sop = (
            request.param(n) or "" for n in ("studyUID", "seriesUID", "objectUID")
        )
        if not (is_uid(study) and is_uid(series) and is_uid(sop)):
            raise AccessError("MB-3011", "studyUID, seriesUID and objectUID must be valid UIDs")
        rows = await wado.instance_rows(self.index, study, series, sop, restriction=restriction)
        return rows, partial(self._wado_uri_answer, request)

    async def _wado_uri_answer(self, request: FhirRequest, rows: list[Document]) -> wado.Answer:
        content_type = (request.param("contentType") or "image/jpeg").lower()
        if content_type == "application/dicom":

            async def single() -> AsyncIterator[bytes]:
                async for chunk in self.store.stream(rows[0]["key"]):
                    yield chunk

            return wado.Answer(200, "application/dicom", stream=single())
        frame = (
            int(request.param("frameNumber") or "1")
            if (request.param("frameNumber") or "1").isdigit()
            else 1
        )
        return await wado.rendered(self.store, rows[0], wado.image_media("", content_type), frame)


def dicomweb_access(route: DicomwebRoute, request: FhirRequest, context: RequestContext) -> Access:
    """STOW / QIDO / WADO with the UIDs the path (or WADO-URI query) names; a search
    that names no study is described by its matching keys."""
    study, series, sop = route.study, route.series, route.sop
    if route.action == "wado-uri":
        study, series, sop = (
            value if is_uid(value := request.param(n) or "") else None
            for n in ("studyUID", "seriesUID", "objectUID")
        )
    action = {"stow": Action.STOW, "search": Action.QIDO}.get(route.action, Action.WADO)
    query: tuple[tuple[str, str], ...] = ()
    if action is Action.QIDO:
        query = tuple(request.query)
    return Access(
        door=context.door,
        action=action,
        actor=context.actor,
        resource_types=IMAGING_TYPES,
        patient_query=query,
        search=query,
        studies=frozenset({study} if study else ()),
        series=frozenset({series} if series else ()),
        instances=frozenset({sop} if sop else ()),
        purpose_of_use=context.purpose_of_use or request.header(PURPOSE_HEADER),
        client_address=context.peer,
        request_id=context.request_id,
    )


def render_error(exchange: FhirExchange, error: AccessError) -> FhirResponse:
    return FhirResponse(
        error.status,
        FhirResponse.of(error.status, outcome(error)).body,
        challenge(error),
        content_type="application/json",
    )
