"""The `medbridge` command."""

from __future__ import annotations

import argparse
import logging
from collections.abc import Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from audit.commands import add_commands as add_audit_commands
from hl7_bridge.commands import add_commands as add_hl7_commands
from imaging.commands import add_commands as add_dicom_commands
from medbridge.settings import Settings
from smart.commands import add_commands as add_smart_commands

if TYPE_CHECKING:
    from fhir_server.repository import Repository
    from hl7_bridge.processor import Processor
    from imaging.services import Imaging


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="medbridge", description="MedBridge server")
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="start the server (embedded store by default)")
    serve.add_argument("--data-dir", type=Path, help="data directory (MEDBRIDGE_DATA_DIR)")
    serve.add_argument("--host", help="bind address (MEDBRIDGE_HOST, default 127.0.0.1)")
    serve.add_argument("--http-port", type=int, help="HTTP port (MEDBRIDGE_HTTP_PORT, 8080)")
    serve.add_argument("--mllp-port", type=int, help="MLLP port (MEDBRIDGE_MLLP_PORT, 2575)")
    serve.add_argument("--dicom-port", type=int, help="DICOM port (MEDBRIDGE_DICOM_PORT, 11112)")
    serve.add_argument("--mongodb-uri", help="external MongoDB (MEDBRIDGE_MONGODB_URI)")
    serve.add_argument("--database", help="MongoDB database name (MEDBRIDGE_DATABASE)")
    serve.add_argument("--log-level", help="debug | info | warning (MEDBRIDGE_LOG_LEVEL)")
    serve.add_argument(
        "--no-auth",
        dest="auth",
        action="store_false",
        default=None,
        help="answer FHIR and DICOMweb without tokens (MEDBRIDGE_AUTH=false); loopback only",
    )
    _add_transport_options(serve)
    add_hl7_commands(commands)
    add_dicom_commands(commands)
    add_smart_commands(commands)
    add_audit_commands(commands)
    return parser


def _add_transport_options(serve: argparse.ArgumentParser) -> None:
    """Transport security (docs/smart.md "Transport security")."""
    serve.add_argument("--tls-cert", type=Path, help="PEM certificate: HTTPS (MEDBRIDGE_TLS_CERT)")
    serve.add_argument("--tls-key", type=Path, help="PEM private key (MEDBRIDGE_TLS_KEY)")
    for door, what in (("dicom", "calling AE title"), ("mllp", "MLLP peer")):
        serve.add_argument(
            f"--{door}-open",
            dest=f"{door}_open",
            action="store_const",
            const=True,
            help=f"accept any {what}, also off loopback (MEDBRIDGE_{door.upper()}_OPEN=true)",
        )


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    overrides: dict[str, Any] = {
        key: value for key, value in vars(args).items() if key != "command" and value is not None
    }
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    # httpx logs every request URL at INFO; a URL can name a record, so only at DEBUG
    if logging.root.level > logging.DEBUG:
        logging.getLogger("httpx").setLevel(logging.WARNING)
    if args.command == "serve":
        from medbridge.server import serve

        return serve(settings)
    if args.command == "hl7":
        return _hl7(args, settings)
    if args.command in ("users", "clients", "token", "launch"):
        return _smart(args, settings)
    if args.command == "audit":
        return _audit(args, settings)
    if args.command == "dicom":
        from imaging.commands import Target
        from imaging.commands import run as run_dicom
        from medbridge.embedded_mongo import EmbeddedMongo

        scheme = "https" if settings.tls_cert is not None else "http"
        public_base = settings.public_base_url or f"{scheme}://{settings.host}:{settings.http_port}"

        async def imaging(repository: Repository, parse_workers: int | None) -> Imaging:
            from medbridge.compose import ImagingPlan, compose

            dicomweb = public_base + "/dicomweb"
            plan = ImagingPlan(settings.objects_dir, lambda: dicomweb, parse_workers)
            built = (await compose(settings, repository, imaging=plan)).imaging
            assert built is not None
            return built

        target = Target(
            settings.objects_dir, settings.dicom_max_instance_bytes, settings.database,
            settings.mongodb_uri, public_base, imaging,
        )  # fmt: skip
        from medbridge.running import call_admin, find_running

        running = find_running(settings.data_dir)
        admin = None if running is None else partial(call_admin, running)
        return run_dicom(
            args, target, lambda: EmbeddedMongo(settings.mongo_dir, "127.0.0.1"), admin
        )
    return 2


def _hl7(args: argparse.Namespace, settings: Settings) -> int:
    """`hl7 replay` goes through the server running on this data directory, if any."""
    from hl7_bridge.commands import ReplayTarget, run

    if args.hl7_command == "send":
        return run(args)
    from medbridge.compose import compose
    from medbridge.embedded_mongo import EmbeddedMongo
    from medbridge.running import call_admin, find_running
    from medbridge.server import bridge_options

    async def processor(repository: Repository) -> Processor:
        composition = await compose(settings, repository, bridge=bridge_options(settings))
        assert composition.processor is not None
        return composition.processor

    running = find_running(settings.data_dir)
    target = ReplayTarget(
        remote=None if running is None else lambda p: call_admin(running, "hl7/replay", p),
        uri=settings.mongodb_uri,
        database=settings.database,
        embedded=lambda: EmbeddedMongo(settings.mongo_dir, "127.0.0.1"),
        processor=processor,
    )
    return run(args, target)


def _audit(args: argparse.Namespace, settings: Settings) -> int:
    """`audit verify`: through the running server, else on the (audit) store."""
    from audit.commands import VerifyTarget, run
    from medbridge.embedded_mongo import EmbeddedMongo
    from medbridge.running import call_admin, find_running

    running = find_running(settings.data_dir)
    uri = args.mongodb_uri or settings.audit_mongodb_uri or settings.mongodb_uri
    target = VerifyTarget(
        remote=None if running is None else partial(call_admin, running, "audit/verify"),
        uri=uri,
        database=settings.audit_database or settings.database,
        embedded=lambda: EmbeddedMongo(settings.mongo_dir, "127.0.0.1"),
    )
    return run(args, target)


def _smart(args: argparse.Namespace, settings: Settings) -> int:
    """`users add`, `clients add`, `token`, `launch`: only through the running server."""
    from medbridge.running import call_admin, find_running
    from smart.commands import run

    running = find_running(settings.data_dir)
    return run(args, None if running is None else partial(call_admin, running, timeout=60.0))
