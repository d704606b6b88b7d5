"""The one composition: the FHIR router, its pipeline, and every hook with its order.

`serve`, `dicom import`, the offline `hl7 replay` and the tests build through here, so an
access never passes a pipeline with fewer hooks (or hooks in another order) than the
server's. The order of every hook is decided in `HOOK_ORDER`, in one place.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pymongo import AsyncMongoClient

from access.pipeline import Hook, Stage, never
from audit.chain import AuditChain
from audit.hook import AuditTrail
from audit.patient_view import lay_reader, note_shown_patients, show_to_patient
from audit.read_only import refuse_audit_writes
from consent.hooks import ConsentHooks
from fhir_server.bodies import Bodies
from fhir_server.repository import Repository
from fhir_server.router import FhirRouter
from fhir_server.services import FhirServices
from hl7_bridge.processor import Processor
from hl7_bridge.service import BridgeOptions, build_processor
from hl7_bridge.study_link import ReportLinker
from imaging.dimse.ae_titles import AeTitleRules
from imaging.dimse.config import DimseConfig
from imaging.objectstore import ObjectStore
from imaging.services import Imaging, build_imaging, object_store
from medbridge import __version__
from medbridge.app import AUTH_BASE, DICOMWEB_BASE, FHIR_BASE
from medbridge.settings import Settings
from smart.capability import rest_security
from smart.claims import TokenValidator
from smart.compartment import current_compartment
from smart.hooks import SmartHooks

# the authorization server's endpoints under AUTH_BASE (issue 14: /auth/authorize ...)
OAUTH_ENDPOINTS = ("authorize", "token", "introspect", "revoke")
AUDIT_STORE_TIMEOUT_MS = 5000

# hooks of one stage run by ascending order; gaps leave room for hooks added later
HOOK_ORDER: dict[str, int] = {
    "smart.authenticate": 10,  # authenticate: the bearer token (docs/smart.md)
    "smart.authorize": 10,  # authorize: scopes, the patient compartment
    "dimse.ae-titles": 10,  # authorize: the services the peers table gives a calling AE
    "audit.read-only": 20,  # authorize: AuditEvents are never written by clients
    "audit.record": 100,  # audit: one chained AuditEvent per access (docs/audit.md)
    "consent.decide": 10,  # consent-decide: who may write a patient's Consents (consent/)
    "audit.patient-view": 5,  # consent-show: a patient's access log, masked (docs/audit.md)
    "consent.show": 10,  # consent-show: hide what the patient's Consents deny (consent/)
    "consent.rule-4": 20,  # consent-show: warn of a Consent hiding what may not be hidden
    "audit.shown-patients": 90,  # consent-show: whose records were shown, for the event
    "consent.written": 90,  # post-commit: a write of what consent reads drops its cache
    "imaging.link-orders": 100,  # post-commit: orders that arrive after their study
    "hl7.link-reports": 110,  # post-commit: reports that arrived before their study
}


@dataclass(frozen=True, slots=True)
class HookSpec:
    """A hook to register beside the built-in ones (consent, audit, tests)."""

    stage: Stage
    hook: Hook
    name: str
    order: int = 0
    intervene: bool = True


@dataclass(frozen=True, slots=True)
class ImagingPlan:
    objects: Path | ObjectStore
    dicomweb_url: Callable[[], str]
    parse_workers: int | None = None


@dataclass(slots=True)
class Composition:
    repository: Repository
    router: FhirRouter
    imaging: Imaging | None = None
    processor: Processor | None = None
    audit: AuditTrail | None = None


async def compose(
    settings: Settings,
    repository: Repository,
    *,
    imaging: ImagingPlan | None = None,
    bridge: BridgeOptions | None = None,
    dimse: DimseConfig | None = None,
    hooks: Sequence[HookSpec] = (),
    validator: TokenValidator | None = None,
) -> Composition:
    """The router with every hook; imaging (DICOMweb, linker) and the HL7 processor when
    asked for; with `dimse`, its peers table's AE-title rules; with a `validator` the HTTP
    doors require its tokens (the SMART hooks). Nothing is started here: listeners and
    background tasks are the caller's."""
    if repository.bodies is None:
        repository.bodies = Bodies(_objects(settings, imaging), settings.body_object_bytes)
    services = FhirServices(
        repository, settings.max_body_bytes, software_version=__version__, budget=settings.budget()
    )
    router = FhirRouter(services)
    composition = Composition(repository, router)
    pipeline = router.pipeline
    name = "audit.read-only"
    pipeline.intervene(Stage.AUTHORIZE, refuse_audit_writes, name, order=HOOK_ORDER[name])
    if validator is not None:
        smart = SmartHooks(validator, current_compartment(repository))
        name = "smart.authenticate"
        pipeline.intervene(Stage.AUTHENTICATE, smart.authenticate, name, order=HOOK_ORDER[name])
        name = "smart.authorize"
        pipeline.intervene(Stage.AUTHORIZE, smart.authorize, name, order=HOOK_ORDER[name])
        services.security = oauth_security
        # lay users (patients, representatives) come only with tokens
        name = "audit.patient-view"
        pipeline.intervene(
            Stage.CONSENT_SHOW, show_to_patient, name, order=HOOK_ORDER[name],
            wants_items=lay_reader,
        )  # fmt: skip
        if settings.audit:
            # every access's event names the patients it showed, whoever asked (the
            # patient's access log): the items are described for every signed-in access
            name = "audit.shown-patients"
            pipeline.notify(
                Stage.CONSENT_SHOW, note_shown_patients, name, order=HOOK_ORDER[name],
                hides=False,
            )  # fmt: skip
        if settings.consent:
            # consent decides for signed-in users, whom only tokens identify
            consent = ConsentHooks(repository, settings.consent_policy())
            name = "consent.decide"
            pipeline.intervene(Stage.CONSENT_DECIDE, consent.decide, name, order=HOOK_ORDER[name])
            name = "consent.show"
            pipeline.intervene(
                Stage.CONSENT_SHOW, consent.show, name, order=HOOK_ORDER[name],
                wants_items=consent.wants_items,
            )  # fmt: skip
            name = "consent.rule-4"  # reads the request and response, never items
            pipeline.notify(
                Stage.CONSENT_SHOW, consent.check_written, name, order=HOOK_ORDER[name],
                wants_items=never,
            )  # fmt: skip
            name = "consent.written"
            pipeline.notify(Stage.POST_COMMIT, consent.written, name, order=HOOK_ORDER[name])
    if imaging is not None:
        built = build_imaging(
            repository, router, imaging.objects, DICOMWEB_BASE, imaging.dicomweb_url,
            settings.dicom_replace_different, settings.dicom_max_instance_bytes,
            parse_workers=imaging.parse_workers, budget=settings.budget(),
            default_issuer=settings.dicom_default_issuer, upkeep_retry=settings.upkeep_retry(),
            quarantine_prefix_bytes=settings.dicom_quarantine_prefix_bytes,
        )  # fmt: skip
        name = "imaging.link-orders"
        pipeline.notify(Stage.POST_COMMIT, built.linker.on_fhir_write, name, order=HOOK_ORDER[name])
        composition.imaging = built
    if bridge is not None:
        composition.processor = await build_processor(repository, router, bridge)
        linker = ReportLinker(router)
        name = "hl7.link-reports"
        pipeline.notify(Stage.POST_COMMIT, linker.on_fhir_write, name, order=HOOK_ORDER[name])
    if dimse is not None:
        name = "dimse.ae-titles"
        pipeline.intervene(Stage.AUTHORIZE, AeTitleRules(dimse), name, order=HOOK_ORDER[name])
    if settings.audit:
        trail = AuditTrail(AuditChain(await audit_repository(settings, repository)),
                           settings.audit_source)  # fmt: skip
        composition.audit = trail
        name = "audit.record"
        pipeline.intervene(Stage.AUDIT, trail.record, name, order=HOOK_ORDER[name])
    for spec in [*hooks, *extra_hooks(settings.extra_hooks)]:
        register = pipeline.intervene if spec.intervene else pipeline.notify
        register(spec.stage, spec.hook, spec.name, order=spec.order)
    return composition


def _objects(settings: Settings, imaging: ImagingPlan | None) -> ObjectStore:
    """The object store large FHIR bodies and HL7 messages go to: DICOM's own."""
    if imaging is not None and not isinstance(imaging.objects, Path):
        return imaging.objects
    root = imaging.objects if imaging is not None else settings.objects_dir
    assert isinstance(root, Path)
    return object_store(
        root, settings.s3_bucket, settings.s3_endpoint_url, settings.s3_prefix, settings.s3_region
    )


async def audit_repository(settings: Settings, repository: Repository) -> Repository:
    """Where the AuditEvents go: the main store, or `MEDBRIDGE_AUDIT_MONGODB_URI`'s (a
    separate security store; its client lives as long as the process)."""
    if settings.audit_mongodb_uri is None:
        return repository
    # an unreachable audit store fails the access within seconds (fail closed), not 30 s
    client: AsyncMongoClient[dict[str, Any]] = AsyncMongoClient(
        settings.audit_mongodb_uri, tz_aware=True, serverSelectionTimeoutMS=AUDIT_STORE_TIMEOUT_MS
    )
    database = settings.audit_database or settings.database
    separate = Repository(client, database, settings.serialize_writes, repository.bodies)
    await separate.ensure_indexes()
    return separate


def oauth_security(fhir_base: str) -> dict[str, Any]:
    """rest.security with this server's authorization endpoints (beside its FHIR base)."""
    auth = fhir_base.removesuffix(FHIR_BASE) + AUTH_BASE
    return rest_security({name: f"{auth}/{name}" for name in OAUTH_ENDPOINTS})


def extra_hooks(entry: str | None) -> list[HookSpec]:
    """The hooks `MEDBRIDGE_EXTRA_HOOKS` (`module:function`) names: a server started as a
    child process (the integration tests, a site's own consent) gets hooks without code
    changes here. A name that does not load stops the start, never runs without them."""
    if not entry:
        return []
    module, _, function = entry.partition(":")
    made = getattr(importlib.import_module(module), function)()
    specs = list(made)
    if not all(isinstance(spec, HookSpec) for spec in specs):
        raise TypeError(f"{entry} must return HookSpecs")
    return specs
