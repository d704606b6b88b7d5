"""Keep one ImagingStudy per stored study in step, written through the FHIR router.

A study whose accession number matches an order belongs to the order's patient (what
the header says otherwise is a meta.tag, see mappings.dicom.reconcile); any other study's
patient is matched by PatientID + issuer (the header's IssuerOfPatientID, else the
calling AE title's or the default issuer, see imaging.issuers), created from the header
when unknown. Orders are matched by accession number whichever arrives first: a study
arriving for an existing ServiceRequest gets `basedOn` and completes the order, and a
ServiceRequest written later re-links its waiting studies through `on_fhir_write`, a
notification hook on the FHIR pipeline's post-commit stage.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import time
from collections.abc import Callable
from typing import Any

import orjson

from access.context import SYSTEM, Door, RequestContext
from access.failures import log_failure
from fhir_server.exchange import FhirExchange, FhirRequest, Route
from fhir_server.router import FhirRouter
from imaging.index import DicomIndex
from imaging.issuers import IssuerNotes
from imaging.upkeep import RetryPolicy
from mappings.dicom.document import DOCUMENT_KINDS, document_reference
from mappings.dicom.dose import dose_observation
from mappings.dicom.imagingstudy import (
    RECONCILIATION,
    StudyLinks,
    anonymous_identifier,
    imaging_study,
    patient_from_header,
    patient_identifier,
)
from mappings.dicom.reconcile import header_made, mismatches
from mappings.dicom.worklist_identifiers import WORKLIST_SYSTEMS

log = logging.getLogger(__name__)

ENDPOINT_ID = "medbridge-dicomweb"
SCOPES = frozenset({"system/*.cruds", "system/*.*"})
OWN_DOORS = (Door.DICOMWEB, Door.DIMSE)
QUIET, MAX_DELAY = 0.3, 5.0  # seconds: settle time after the last news, and its bound


# untyped order identifiers that are never an accession number: the study UID and the
# worklist's RequestedProcedureID / ScheduledProcedureStepID (mappings/hl7v2 segments.yaml)
NOT_ACCESSIONS = frozenset({"urn:dicom:uid", *WORKLIST_SYSTEMS})


class LinkError(Exception):
    """The FHIR side refused a write the link needed."""


class StudyLinker:
    def __init__(
        self,
        router: FhirRouter,
        index: DicomIndex,
        dicomweb_base: Callable[[], str],
        issuers: IssuerNotes | None = None,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.router = router
        self.retry = retry or RetryPolicy()
        self.index = index
        self.issuers = issuers or IssuerNotes(index.repository)
        self.dicomweb_base = dicomweb_base
        self._locks: dict[str, asyncio.Lock] = {}
        self._endpoint: str | None = None
        self._wake = asyncio.Event()
        self._pending: set[str] = set()  # studies whose order arrived: re-link them

    # the FHIR router, as a client ---------------------------------------------------

    async def _fhir(
        self,
        method: str,
        path: str,
        query: list[tuple[str, str]] | None = None,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any]:
        request = FhirRequest(
            method,
            path,
            query or [],
            {"content-type": "application/fhir+json", **(headers or {})},
            orjson.dumps(body) if body is not None else None,
        )
        context = RequestContext(Door.DICOMWEB, actor=SYSTEM, scopes=SCOPES)
        response = await self.router.handle(request, context)
        payload = orjson.loads(response.body) if response.body else None
        return response.status, payload

    async def _search(self, resource_type: str, query: list[tuple[str, str]]) -> list[Any]:
        status, bundle = await self._fhir("GET", resource_type, query)
        if status != 200 or not isinstance(bundle, dict):
            raise LinkError(f"search {resource_type} answered {status}")
        return [e["resource"] for e in bundle.get("entry", []) if "resource" in e]

    # linking ------------------------------------------------------------------------

    async def sync(self, study: str) -> str | None:
        """Write the study's ImagingStudy (and complete its orders); its FHIR id."""
        lock = self._locks.setdefault(study, asyncio.Lock())
        async with lock:
            try:
                for attempt in range(3):
                    try:
                        return await self._sync(study)
                    except LinkError:
                        if attempt == 2:
                            raise
                return None
            except LinkError as error:
                await self._failed(study, str(error))
                return None
            except Exception as error:
                log_failure(log, "ImagingStudy upkeep failed")
                await self._failed(study, f"internal error: {type(error).__name__}")
                return None
            finally:
                if len(self._locks) > 10_000:  # bounded: a stale lock only costs a retry
                    self._locks.pop(study, None)

    async def _failed(self, study: str, reason: str) -> None:
        """Count the failure: retried later with a growing delay, then parked (one warning)."""
        try:
            attempts, parked = await self.index.mark_failed(study, reason, self.retry.delay)
        except Exception:
            # the study is still dirty (never marked linked): the next round retries it,
            # so a store hiccup here costs a retry, not a lost study
            log_failure(log, "recording an ImagingStudy upkeep failure failed")
            return
        if parked:
            log.warning(
                "ImagingStudy upkeep parked after %d attempts (%s); "
                "see `medbridge dicom pending`", attempts, reason,
            )  # fmt: skip
        else:
            log.info("ImagingStudy upkeep refused (%s); attempt %d, tried again later",
                     reason, attempts)  # fmt: skip

    async def _sync(self, study: str) -> str | None:
        study_doc, series = await self.index.study_tree(study)
        if study_doc is None:
            return None
        orders = await self._orders(str(study_doc.get("AccessionNumber", "")))
        patient, tags = await self._subject(study_doc, orders)
        links = StudyLinks(
            patient=patient,
            endpoint=await self._endpoint_reference(),
            based_on=[f"ServiceRequest/{order['id']}" for order in orders],
            tags=tags,
        )
        resource = imaging_study(study_doc, series, links)
        resource["id"] = study  # a UID is a valid FHIR id: one ImagingStudy per study, race-free
        status, current = await self._fhir("GET", f"ImagingStudy/{study}")
        before = current.get("subject", {}).get("reference") if status == 200 else None
        if status == 200 and _same(current, resource):
            await self.index.mark_linked(
                study, study_doc["lu"], study, "tries" in study_doc, patient_id(patient)
            )
        else:
            headers = {"if-match": f'W/"{current["meta"]["versionId"]}"'} if status == 200 else {}
            status, answer = await self._fhir(
                "PUT", f"ImagingStudy/{study}", body=resource, headers=headers
            )
            if status not in (200, 201):
                raise LinkError(f"ImagingStudy write answered {status}: {_diagnostics(answer)}")
            await self.index.mark_linked(
                study, study_doc["lu"], study, "tries" in study_doc, patient_id(patient)
            )
        for order in orders:
            await self._complete(order)
        for row in series:
            for instance in row.get("instances", []):
                if instance.get("dose"):
                    await self._dose(instance, f"ImagingStudy/{study}", patient)
                if instance.get("SOPClassUID") in DOCUMENT_KINDS:
                    await self._document(instance, study, row["_id"], patient)
        if orders and before and before != patient:  # moved to the order's patient
            await self._retire(str(before))
        return study

    async def _document(
        self, instance: dict[str, Any], study: str, series: str, subject: str
    ) -> None:
        """The DocumentReference of an Encapsulated PDF, kept in step like the ImagingStudy."""
        wanted = document_reference(instance, study, series, subject, self.dicomweb_base())
        path = f"DocumentReference/{wanted['id']}"
        status, current = await self._fhir("GET", path)
        if status == 200 and _same(current, wanted):
            return
        headers = {"if-match": f'W/"{current["meta"]["versionId"]}"'} if status == 200 else {}
        status, answer = await self._fhir("PUT", path, body=wanted, headers=headers)
        if status not in (200, 201):
            raise LinkError(f"DocumentReference write answered {status}: {_diagnostics(answer)}")

    async def _dose(self, instance: dict[str, Any], study_reference: str, subject: str) -> None:
        """The Observation of a Radiation Dose SR's total DLP / CTDIvol, linked to the study."""
        sop = instance["_id"]
        observation = dose_observation(instance["dose"], study_reference, subject, sop)
        observation["id"] = "dose-" + hashlib.sha256(sop.encode()).hexdigest()[:40]
        path = f"Observation/{observation['id']}"
        status, current = await self._fhir("GET", path)
        if status == 200 and _same(current, observation):
            return
        status, answer = await self._fhir("PUT", path, body=observation)
        if status not in (200, 201):
            raise LinkError(f"dose Observation write answered {status}: {_diagnostics(answer)}")

    async def _subject(
        self, study: dict[str, Any], orders: list[dict[str, Any]]
    ) -> tuple[str, list[str]]:
        """The study's Patient reference and its RECONCILIATION tags: the order's patient
        when an order names one, else the header's (found or created)."""
        issuer = await self.issuers.issuer(study)
        for order in orders:
            reference = str(order.get("subject", {}).get("reference", ""))
            if not reference.startswith("Patient/"):
                continue
            status, patient = await self._fhir("GET", reference)
            if status == 200 and isinstance(patient, dict):
                return reference, mismatches(study, issuer, patient)
        return await self._patient(study, issuer), []

    async def _patient(self, study: dict[str, Any], issuer: str | None) -> str:
        patient_id = str(study.get("PatientID") or "").strip()
        if patient_id:
            identifier = patient_identifier(patient_id, issuer)
        else:  # the header names nobody: a Patient of this study (docs/dicom.md)
            identifier = anonymous_identifier(str(study["_id"]))
        criteria = f"{identifier['system']}|{identifier['value']}"
        found = await self._search("Patient", [("identifier", criteria)])
        if found:
            return f"Patient/{found[0]['id']}"
        body = patient_from_header(study, identifier)
        headers = {"if-none-exist": f"identifier={criteria}"}
        status, created = await self._fhir("POST", "Patient", body=body, headers=headers)
        if status not in (200, 201) or not isinstance(created, dict) or "id" not in created:
            raise LinkError(f"Patient create answered {status}: {_diagnostics(created)}")
        return f"Patient/{created['id']}"

    async def _retire(self, reference: str) -> None:
        """The header-made Patient a study left for its order's patient: deleted when
        nothing else refers to it (docs/dicom.md "Patient identity"), kept otherwise."""
        status, patient = await self._fhir("GET", reference)
        if status != 200 or not isinstance(patient, dict) or not header_made(patient):
            return
        status, everything = await self._fhir("GET", f"{reference}/$everything")
        if status != 200 or not isinstance(everything, dict):
            return
        if len(everything.get("entry", [])) != 1:  # another study or resource names it
            return
        status, _answer = await self._fhir("DELETE", reference)
        if status not in (200, 204):
            log.warning("header Patient delete answered %s; it stays", status)

    async def _orders(self, accession: str) -> list[dict[str, Any]]:
        if not accession:
            return []
        found = await self._search("ServiceRequest", [("identifier", accession)])
        return [order for order in found if _has_accession(order, accession)]

    async def _complete(self, order: dict[str, Any]) -> None:
        if order.get("status") in ("completed", "revoked", "entered-in-error"):
            return
        body = {k: v for k, v in order.items() if k != "meta"}
        body["status"] = "completed"
        headers = {"if-match": f'W/"{order["meta"]["versionId"]}"'}
        status, _answer = await self._fhir(
            "PUT", f"ServiceRequest/{order['id']}", body=body, headers=headers
        )
        if status not in (200, 201):
            log.warning("ServiceRequest completion answered %s", status)

    async def _endpoint_reference(self) -> str:
        if self._endpoint is None:
            endpoint = {
                "resourceType": "Endpoint",
                "id": ENDPOINT_ID,
                "status": "active",
                "connectionType": {
                    "system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                    "code": "dicom-wado-rs",
                },
                "name": "MedBridge DICOMweb",
                "payloadType": [
                    {
                        "coding": [
                            {"system": "http://hl7.org/fhir/endpoint-payload-type", "code": "DICOM"}
                        ]
                    }
                ],
                "payloadMimeType": ["application/dicom"],
                "address": self.dicomweb_base(),
            }
            status, answer = await self._fhir("PUT", f"Endpoint/{ENDPOINT_ID}", body=endpoint)
            if status not in (200, 201):
                raise LinkError(f"Endpoint write answered {status}: {_diagnostics(answer)}")
            self._endpoint = f"Endpoint/{ENDPOINT_ID}"
        return self._endpoint

    # reverse link and background upkeep -------------------------------------------------

    async def on_fhir_write(self, exchange: FhirExchange) -> None:
        """FHIR pipeline hook: a ServiceRequest written later links its waiting studies."""
        route, response = exchange.route, exchange.response
        if exchange.context.door in OWN_DOORS or not isinstance(route, Route) or response is None:
            return
        if route.resource_type != "ServiceRequest" or response.status not in (200, 201):
            return
        if exchange.request.method.upper() not in ("POST", "PUT", "PATCH"):
            return
        raw = response.body or exchange.request.body
        resource = orjson.loads(raw) if raw else {}
        # only what can be an accession number: a placer or filler number, or the
        # study UID, never names a study by accession (one index read per identifier)
        studies: set[str] = set()
        for value in _accessions(resource) if isinstance(resource, dict) else []:
            studies.update(await self.index.studies_by_accession(value))
        # post-commit waits for the order's unit of work (an HL7 message's transaction) to
        # commit, so the order is there to link to now
        for study in sorted(studies):
            await self.sync(study)

    def schedule(self) -> None:
        """Wake the background upkeep (DIMSE calls this after each association)."""
        self._wake.set()

    async def run(self, interval: float = 2.0) -> None:
        """Background upkeep: marked studies (new instances, crash, refused write) synced."""
        while True:
            await self._settle()
            try:
                pending, self._pending = self._pending, set()
                for study in sorted(pending | set(await self.index.dirty_studies())):
                    await self.sync(study)
            except Exception:
                log_failure(log, "ImagingStudy background upkeep failed")
            if not self._wake.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), interval)

    async def _settle(self) -> None:
        """Wait for QUIET seconds without news (at most MAX_DELAY): rewriting a study's
        ImagingStudy per arriving batch would cost more than the ingest itself."""
        deadline = time.monotonic() + MAX_DELAY
        while time.monotonic() < deadline:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), QUIET)
            except TimeoutError:
                return


def _same(current: Any, wanted: dict[str, Any]) -> bool:
    if not isinstance(current, dict):
        return False
    if _tags(current) != _tags(wanted):
        return False
    return {k: v for k, v in current.items() if k != "meta"} == {
        k: v for k, v in wanted.items() if k != "meta"
    }


def _tags(resource: dict[str, Any]) -> list[Any]:
    """The RECONCILIATION tags: a study whose header came to agree with its order (or
    stopped agreeing) is rewritten for them alone."""
    tags = resource.get("meta", {}).get("tag", [])
    return [t for t in tags if isinstance(t, dict) and t.get("system") == RECONCILIATION]


def _has_accession(order: dict[str, Any], accession: str) -> bool:
    return accession in _accessions(order)


def _accessions(order: dict[str, Any]) -> list[str]:
    """Identifier values typed ACSN, or untyped (other than a DICOM UID)."""
    found = []
    for identifier in order.get("identifier", []):
        if not isinstance(identifier, dict) or identifier.get("system") in NOT_ACCESSIONS:
            continue
        codes = [c.get("code") for c in identifier.get("type", {}).get("coding", [])]
        value = identifier.get("value")
        if isinstance(value, str) and value and ("ACSN" in codes or not codes):
            found.append(value)
    return found


def _diagnostics(answer: Any) -> str:
    """The refusal's catalog code for the log; its wording (which may quote patient data)
    only at DEBUG."""
    if isinstance(answer, dict) and answer.get("issue"):
        issue = answer["issue"][0]
        log.debug("FHIR refusal: %s", issue.get("diagnostics", ""))
        codes = issue.get("details", {}).get("coding", [{}])
        return str(codes[0].get("code", issue.get("code", "")))
    return ""


def patient_id(reference: str) -> str | None:
    """`Patient/123` -> `123`, the id a patient restriction names; None for anything else."""
    kind, _, logical = reference.partition("/")
    return logical if kind == "Patient" and logical and "/" not in logical else None
