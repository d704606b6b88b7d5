"""`medbridge serve`: the store, the HTTP listener (later MLLP and DIMSE), clean stop."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import ssl
import sys
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import replace
from functools import partial
from typing import Any

import uvicorn
import uvloop
from pymongo import AsyncMongoClient

from access.tls import server_context, tls_files
from audit.commands import admin_verify
from audit.hook import AuditTrail
from audit.security import SecurityAudit
from audit.sink import SyslogSink
from audit.sink_transport import SinkConfig, sink_config
from fhir_server import body_pool
from fhir_server.repository import Repository
from fhir_server.router import FhirRouter
from hl7_bridge.listener import Limits
from hl7_bridge.peers import AllowedPeers
from hl7_bridge.processor import Processor
from hl7_bridge.replay import admin_replay
from hl7_bridge.service import BridgeOptions, start_listener
from imaging import upkeep
from imaging.dimse.config import DimseConfig, load_peers
from imaging.dimse.service import start_dimse
from imaging.services import Imaging, object_store
from mappings.dicom.imagingstudy import use_site_authorities
from medbridge import __version__
from medbridge.admin import AdminApi
from medbridge.app import (
    AUTH_BASE,
    DICOMWEB_BASE,
    FHIR_BASE,
    VIEWER_BASE,
    FhirFirst,
    assemble,
)  # fmt: skip
from medbridge.auth import AuthRefused, check_binding, token_validator
from medbridge.compose import ImagingPlan, compose
from medbridge.embedded_mongo import EmbeddedMongo
from medbridge.exposure import ExposureRefused, check_exposure, dicom_open, mllp_open
from medbridge.health import Readiness
from medbridge.http_guard import HttpGuard
from medbridge.http_protocol import bounded_protocol
from medbridge.running import announce, withdraw
from medbridge.settings import Settings
from portal.app import CLIENT_ID, SCOPE, PortalOptions
from portal.pages import Portal
from smart.admin import SmartAdmin
from smart.authority import Authority, build_authority
from viewer.build import DEFAULT_DIST, Build, BuildChanged
from viewer.client import register_client
from viewer.config import ViewerConfig
from viewer.site import ViewerSite

log = logging.getLogger(__name__)


def serve(settings: Settings) -> int:
    """Run until Ctrl-C / SIGTERM; the embedded store child is stopped on the way out."""
    try:
        warning = check_binding(settings)
        check_exposure(settings)
        _check_tls_files(settings)
        _syslog_config(settings)
    except (AuthRefused, ExposureRefused, ValueError) as refused:
        print(refused, file=sys.stderr, flush=True)
        return 2
    if warning is not None:
        print(warning, file=sys.stderr, flush=True)
        log.warning("authentication is off")
    embedded: EmbeddedMongo | None = None
    uri = settings.mongodb_uri
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    settings.objects_dir.mkdir(parents=True, exist_ok=True)
    if uri is None:
        embedded = EmbeddedMongo(settings.mongo_dir, "127.0.0.1")
        uri = embedded.start()
    try:
        # uvloop: uvicorn picks it only when it makes the loop itself, and here we do
        uvloop.run(_serve(settings, uri))
    except KeyboardInterrupt:
        # uvicorn re-raises the Ctrl-C it handled once it has shut down cleanly
        pass
    finally:
        if embedded is not None:
            embedded.stop()
    print("MedBridge stopped", flush=True)
    return 0


async def _serve(settings: Settings, uri: str) -> None:
    async with AsyncExitStack() as stack:
        client: AsyncMongoClient[dict[str, object]] = AsyncMongoClient(uri, tz_aware=True)
        stack.push_async_callback(client.close)
        repository = Repository(client, settings.database, settings.serialize_writes)
        await repository.ensure_indexes()
        public_base = [_public_base(settings, settings.http_port)]
        use_site_authorities(settings.hl7_authorities)  # one issuer -> system table
        objects = object_store(
            settings.objects_dir, settings.s3_bucket, settings.s3_endpoint_url,
            settings.s3_prefix, settings.s3_region,
        )  # fmt: skip
        options = bridge_options(settings)
        authority = await build_authority(
            repository, lambda: public_base[0], settings.authority_options()
        )
        validator = None
        if settings.auth:
            own = (authority.issuer, authority.tokens)
            validator = token_validator(settings, lambda: public_base[0] + FHIR_BASE, own)
        dimse_config = _dimse_config(settings)
        composition = await compose(
            settings, repository,
            imaging=ImagingPlan(objects, lambda: public_base[0] + DICOMWEB_BASE),
            bridge=options, dimse=dimse_config,
            validator=validator,
        )  # fmt: skip
        if composition.audit is not None:
            # sign-ins and token issues go into the same chain as the accesses
            trail = composition.audit
            authority = replace(authority, audit=SecurityAudit(trail.chain, trail.source))
        router, imaging, processor = composition.router, composition.imaging, composition.processor
        syslog = _syslog_config(settings)
        if syslog is not None and composition.audit is not None:
            sink = SyslogSink(composition.audit.chain.repository, syslog)
            sink.start()
            stack.push_async_callback(sink.stop)
        assert imaging is not None
        assert processor is not None
        readiness = Readiness()
        readiness.expect("http")
        readiness.expect("mllp")
        mllp = await start_listener(processor, options)
        stack.push_async_callback(mllp.stop)
        readiness.ready("mllp")
        await imaging.start()
        stack.push_async_callback(imaging.stop)
        admin = admin_api(router, mllp.processor, imaging, authority, composition.audit)
        portal = build_portal(settings, lambda: public_base[0]) if settings.portal else None
        viewer = viewer_site(settings, lambda: public_base[0])
        app = assemble(
            router, readiness, settings.max_body_bytes, lambda: public_base[0],
            imaging.dicomweb.handle, admin, authority, portal, viewer,
        )  # fmt: skip
        if portal is not None:
            stack.push_async_callback(portal.close)
        readiness.expect("dicom")
        dicom_tls = tls_files(
            settings.dicom_tls_cert, settings.dicom_tls_key, settings.dicom_tls_client_ca
        )
        dimse = await start_dimse(
            dimse_config, imaging, router, settings.host, settings.dicom_port,
            server_context(dicom_tls) if dicom_tls is not None else None,
        )  # fmt: skip
        stack.push_async_callback(asyncio.to_thread, dimse.stop)
        readiness.ready("dicom")
        # everything built so far lives as long as the server: out of the collector's
        # way, a full collection no longer walks it (~44 ms every few hundred requests)
        gc.freeze()
        # large FHIR bodies are parsed and validated there, not on the event loop
        body_workers = body_pool.configure(
            settings.fhir_body_workers, settings.fhir_body_worker_nice
        )
        body_workers.start()
        stack.callback(body_workers.stop)
        budget = settings.budget()
        config = uvicorn.Config(
            HttpGuard(FhirFirst(app), settings.cors_origin_list()),
            http=bounded_protocol(budget),
            timeout_keep_alive=max(1, round(budget.http_keepalive_timeout)),
            host=settings.host,
            port=settings.http_port,
            log_level=settings.log_level,
            access_log=False,  # paths carry identifiers: patient data stays out of logs
            server_header=False,
            lifespan="off",
        )
        https = tls_files(settings.tls_cert, settings.tls_key, None)
        if https is not None:
            # uvicorn builds its own context without a protocol floor: ours (TLS 1.2+)
            config.load()
            config.ssl = server_context(https)
        server = uvicorn.Server(config)
        task = asyncio.create_task(server.serve())
        # uvicorn offers a flag, not an event, for "listening"
        while not server.started and not task.done():  # noqa: ASYNC110
            await asyncio.sleep(0.02)
        if server.started:
            port = server.servers[0].sockets[0].getsockname()[1]
            base = _public_base(settings, port)
            public_base[0] = base
            if portal is not None:  # its redirect URI is known once the port is
                await register_portal(portal, authority)
            if viewer is not None:  # so is the viewer's
                await _start_viewer(viewer, authority)
            readiness.ready("http")
            scheme = "https" if https is not None else "http"
            running = announce(
                settings.data_dir, f"{scheme}://{_loopback(settings.host)}:{port}",
                https.certificate if https is not None else None,
            )  # fmt: skip
            admin.token = running.admin_token
            stack.callback(withdraw, settings.data_dir, running)
            print(f"MedBridge {__version__} ready: FHIR base {base}{FHIR_BASE}", flush=True)
            sys.stdout.flush()
        await task


def build_portal(settings: Settings, public_base: Callable[[], str]) -> Portal:
    policy = settings.consent_policy()
    options = PortalOptions(
        session_lifetime=settings.portal_session_minutes * 60,
        page_size=settings.portal_page_size,
        adult_age=settings.consent_adult_age,
        unhideable=tuple(sorted(policy.unhideable_categories)),
    )
    return Portal(options, public_base)


async def register_portal(portal: Portal, authority: Authority) -> None:
    """The portal is a public client of this server's authorization server, registered
    (again) at every start: its redirect URI follows the public base URL."""
    try:
        await authority.clients.register_public(CLIENT_ID, [portal.redirect_uri], SCOPE)
    except ValueError as refused:  # e.g. plain http on a non-loopback address
        portal.unavailable = str(refused)
        log.warning("the patient portal is off: %s", refused)


def viewer_site(settings: Settings, public_base: Callable[[], str]) -> ViewerSite | None:
    """The image viewer at /viewer/ (docs/viewer.md), or None when turned off."""
    if not settings.viewer:
        return None
    build = Build(settings.viewer_dist or DEFAULT_DIST, VIEWER_BASE)

    def config() -> ViewerConfig:
        return ViewerConfig(
            public_base(), VIEWER_BASE, DICOMWEB_BASE, FHIR_BASE, AUTH_BASE,
            settings.viewer_client_id,
        )  # fmt: skip

    return ViewerSite(build, config)


async def _start_viewer(viewer: ViewerSite, authority: Authority) -> None:
    """Register the viewer's client for the base URL now known, and check the build."""
    try:
        await register_client(authority.clients, viewer.config())
    except ValueError as refused:  # e.g. plain http on a non-loopback address
        viewer.unavailable = str(refused)
        log.warning("the image viewer is off: %s", refused)
        return
    if not viewer.build.installed():
        print(f"the image viewer is not installed ({viewer.build.dist}): /viewer/ "
              "says how to install it", flush=True)  # fmt: skip
        return
    try:
        await asyncio.to_thread(viewer.build.check)
    except BuildChanged as changed:
        log.error("the installed viewer build is not the one MedBridge knows: %s", changed)


def _public_base(settings: Settings, port: int) -> str:
    """The configured public base URL, else this listener's address (never a Host header)."""
    if settings.public_base_url:
        return settings.public_base_url.rstrip("/")
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    scheme = "https" if settings.tls_cert is not None else "http"
    return f"{scheme}://{host}:{port}"


def admin_api(
    router: FhirRouter,
    processor: Processor,
    imaging: Imaging,
    authority: Authority,
    audit: AuditTrail | None = None,
) -> AdminApi:
    """The admin operations, each call one access through the router's hooks."""
    admin = AdminApi(share_hooks_with=router.pipeline)
    admin.add("status", _status)
    admin.add("hl7/replay", admin_replay(processor))
    admin.add("dicom/pending", partial(upkeep.pending, imaging.linker))
    admin.add("dicom/retry", partial(upkeep.retry, imaging.linker))
    if audit is not None:
        admin.add("audit/verify", admin_verify(audit.chain.repository))
    for name, handler in SmartAdmin(authority).handlers().items():
        admin.add(name, handler)
    return admin


async def _status(payload: dict[str, Any]) -> dict[str, Any]:
    return {"version": __version__, "pid": os.getpid()}


def _loopback(host: str) -> str:
    """The address an admin command on this machine uses to reach a listener on host."""
    if host in ("0.0.0.0", ""):
        return "127.0.0.1"
    if host == "::":
        return "[::1]"
    return f"[{host}]" if ":" in host else host


def _check_tls_files(settings: Settings) -> None:
    """TLS files that cannot make a context (a certificate without its key, an unreadable
    or mismatched file) and a malformed peers list stop the start with their reason."""
    for door, files in (
        ("HTTPS", tls_files(settings.tls_cert, settings.tls_key, None)),
        ("DICOM TLS", tls_files(
            settings.dicom_tls_cert, settings.dicom_tls_key, settings.dicom_tls_client_ca
        )),
        ("MLLP TLS", tls_files(
            settings.mllp_tls_cert, settings.mllp_tls_key, settings.mllp_tls_client_ca
        )),
    ):  # fmt: skip
        if files is None:
            continue
        try:
            server_context(files)
        except (OSError, ssl.SSLError) as error:
            raise ValueError(f"refusing to start: {door} files unusable: {error}") from error
    AllowedPeers.parse(settings.mllp_allowed_peers)


def _syslog_config(settings: Settings) -> SinkConfig | None:
    """The audit sink's settings, or None without a collector; a wrong one stops the start."""
    if settings.audit_syslog is None:
        return None
    if not settings.audit:
        raise ValueError(
            "refusing to start: MEDBRIDGE_AUDIT_SYSLOG sends the audit trail, which "
            "MEDBRIDGE_AUDIT=false turns off"
        )
    try:
        return sink_config(
            settings.audit_syslog, settings.audit_syslog_ca, settings.audit_syslog_cert,
            settings.audit_syslog_key, settings.audit_syslog_app_name,
            settings.audit_syslog_poll_seconds, settings.audit_syslog_retry_max_seconds,
        )  # fmt: skip
    except ValueError as error:
        raise ValueError(f"refusing to start: MEDBRIDGE_AUDIT_SYSLOG: {error}") from error


def bridge_options(settings: Settings) -> BridgeOptions:
    tls = tls_files(settings.mllp_tls_cert, settings.mllp_tls_key, settings.mllp_tls_client_ca)
    peers = None if mllp_open(settings) else AllowedPeers.parse(settings.mllp_allowed_peers)
    limits = Limits(
        max_message_bytes=settings.mllp_max_message_bytes,
        max_connections=settings.mllp_max_connections,
        idle_timeout=settings.mllp_idle_timeout,
        read_timeout=settings.mllp_read_timeout,
        frame_deadline=settings.mllp_frame_deadline,
    )
    return BridgeOptions(
        settings.host, settings.mllp_port, limits, tls, settings.hl7_timezone,
        settings.hl7_authorities, settings.hl7_honor_no_ack, settings.budget(),
        settings.hl7_adt_demographics,
        settings.hl7_order_domains, peers,
    )  # fmt: skip


def _dimse_config(settings: Settings) -> DimseConfig:
    return DimseConfig(
        ae_title=settings.dicom_ae_title,
        peers=load_peers(settings.dicom_peers_file),
        open=dicom_open(settings),
        max_associations=settings.dicom_max_associations,
        reserved_associations=min(
            settings.dicom_reserved_associations, settings.dicom_max_associations - 1
        ),
        idle_timeout=settings.dicom_idle_timeout,
        request_timeout=settings.dicom_request_timeout,
        acse_timeout=settings.dicom_acse_timeout,
        dimse_timeout=settings.dicom_dimse_timeout,
        network_timeout=settings.dicom_network_timeout,
        default_issuer=settings.dicom_default_issuer,
    )
