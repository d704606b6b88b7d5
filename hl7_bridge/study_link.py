"""Reports that arrive before their images: link them when the ImagingStudy is written.

An ORU^R01 names its study by accession number (OBR-18). When no ImagingStudy has it
yet, the DiagnosticReport keeps a logical reference (`type` + `identifier`) and carries
the accession as an ACSN identifier. This notification hook on the FHIR pipeline's
post-commit stage sees every ImagingStudy write, whatever door it came by, and turns the
logical references of waiting reports into `ImagingStudy/id`, in a background task:
the study may still sit in a transaction of its own.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from typing import Any

import orjson

from access.context import SYSTEM, Door, RequestContext
from access.failures import log_failure
from fhir_server.exchange import FhirExchange, FhirRequest, Route
from fhir_server.router import FhirRouter

log = logging.getLogger(__name__)

ACSN = "ACSN"
RETRIES = 5
SCOPES = frozenset({"system/*.cruds", "system/*.*"})


class ReportLinker:
    def __init__(self, router: FhirRouter) -> None:
        self.router = router
        self._tasks: set[asyncio.Task[None]] = set()

    async def on_fhir_write(self, exchange: FhirExchange) -> None:
        """Pipeline hook (post-commit): an ImagingStudy was written; link waiting reports."""
        # the hooks are shared by every door: a DICOMweb or DIMSE exchange has a route of
        # its own kind, never an ImagingStudy write of the FHIR door
        route, response = exchange.route, exchange.response
        if not isinstance(route, Route) or route.resource_type != "ImagingStudy":
            return
        if response is None:
            return
        if response.status not in (200, 201):
            return
        if exchange.request.method.upper() not in ("POST", "PUT", "PATCH"):
            return
        raw = response.body or exchange.request.body
        study = orjson.loads(raw) if raw else {}
        location = response.headers.get("Location", "")
        study_id = study.get("id") or location.split("/_history/")[0].rsplit("/", 1)[-1]
        accessions = [
            str(identifier["value"])
            for identifier in study.get("identifier", [])
            if _type_code(identifier) == ACSN and identifier.get("value")
        ]
        # a report that named the study by its UID (an OBX 113014) waits on that value
        uids = [
            str(identifier["value"])
            for identifier in study.get("identifier", [])
            if identifier.get("system") == "urn:dicom:uid" and identifier.get("value")
        ]
        if study_id and accessions:
            # post-commit runs after the study's unit of work committed: link at once
            await self.link(f"ImagingStudy/{study_id}", accessions, uids)

    async def link(self, study: str, accessions: list[str], uids: Sequence[str] = ()) -> None:
        """Point every report waiting on one of `accessions` (or the study's UIDs) at `study`."""
        context = RequestContext(Door.INTERNAL, actor=SYSTEM, scopes=SCOPES)
        try:
            for accession in accessions:
                reports = await self._reports(accession, context)
                for report in reports:
                    await self._link_one(report, study, [accession, *uids], context)
        except Exception:
            log_failure(log, "linking reports to %s failed", study)

    async def drain(self) -> None:
        """Wait for the links in flight (tests, clean shutdown)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    async def _reports(self, accession: str, context: RequestContext) -> list[dict[str, Any]]:
        request = FhirRequest("GET", "DiagnosticReport", query=[("identifier", accession)])
        response = await self.router.handle(request, context)
        if response.status != 200:
            return []
        bundle = orjson.loads(response.body or b"{}")
        return [entry["resource"] for entry in bundle.get("entry", [])]

    async def _link_one(
        self, report: dict[str, Any], study: str, values: list[str], context: RequestContext
    ) -> None:
        for _ in range(RETRIES):
            linked = _with_study(report, study, values)
            if linked is None:
                return
            headers = {
                "content-type": "application/fhir+json",
                "if-match": f'W/"{report["meta"]["versionId"]}"',
                "prefer": "return=minimal",
            }
            path = f"DiagnosticReport/{report['id']}"
            body = orjson.dumps({k: v for k, v in linked.items() if k != "meta"})
            response = await self.router.handle(
                FhirRequest("PUT", path, headers=headers, body=body), context
            )
            if response.status in (200, 201):
                return
            if response.status not in (409, 412):
                log.warning("linking a report to %s answered %d", study, response.status)
                return
            current = await self.router.handle(FhirRequest("GET", path), context)
            if current.status != 200:
                return
            report = orjson.loads(current.body or b"{}")


def _with_study(report: dict[str, Any], study: str, values: list[str]) -> dict[str, Any] | None:
    """The report with its logical references to `values` resolved; None if nothing to do."""
    changed = False
    entries = []
    for entry in report.get("imagingStudy", []):
        identifier = entry.get("identifier", {})
        if "reference" not in entry and identifier.get("value") in values:
            entry = {**entry, "reference": study}
            changed = True
        entries.append(entry)
    return {**report, "imagingStudy": entries} if changed else None


def _type_code(identifier: dict[str, Any]) -> str:
    codings = identifier.get("type", {}).get("coding", [{}])
    return str(codings[0].get("code", "")) if codings else ""
