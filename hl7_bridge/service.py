"""Assemble the MLLP listener from settings-like values: archive, processor, limits, TLS."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from zoneinfo import ZoneInfo

from access.budget import Budget
from access.tls import TlsFiles, server_context
from fhir_server.repository import Repository
from fhir_server.router import FhirRouter
from hl7_bridge.archive import Archive
from hl7_bridge.listener import Limits, MllpListener
from hl7_bridge.peers import AllowedPeers
from hl7_bridge.processor import Processor
from mappings.hl7v2.tables import load_tables


@dataclass(frozen=True, slots=True)
class BridgeOptions:
    host: str
    port: int
    limits: Limits
    tls: TlsFiles | None = None
    timezone: str = "UTC"
    authorities: Path | None = None
    honor_no_ack: bool = False
    budget: Budget = field(default_factory=Budget)
    adt_demographics: bool = True  # only ADT messages change a stored Patient's values
    order_domains: str = ""  # MEDBRIDGE_HL7_ORDER_DOMAINS
    peers: AllowedPeers | None = None  # None: every peer (MEDBRIDGE_MLLP_ALLOWED_PEERS)


async def build_processor(
    repository: Repository, router: FhirRouter, options: BridgeOptions
) -> Processor:
    """The processor and the hooks it adds to the router's pipeline, as `serve` runs it:
    `hl7 replay` without a server builds the very same, so a replay is no bare write."""
    archive = Archive(repository)
    await archive.ensure_indexes()
    tables = load_tables(options.authorities, options.order_domains)
    # the report linker (reports that arrived before their study) is registered by the
    # composition (medbridge/compose.py), with every other hook and its order
    return Processor(
        router, archive, tables, ZoneInfo(options.timezone), options.honor_no_ack,
        options.adt_demographics,
    )  # fmt: skip


async def start_listener(processor: Processor, options: BridgeOptions) -> MllpListener:
    """A started listener (`.port` holds the bound port, `.processor` the processor)."""
    tls = server_context(options.tls) if options.tls is not None else None
    listener = MllpListener(
        processor, options.host, options.port, options.limits, tls, options.peers
    )
    await listener.start()
    return listener
