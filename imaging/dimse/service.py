"""The DICOM listener: one pynetdicom AE with our contexts and handlers, started non-blocking.

Storage is offered for every storage SOP class with every transfer syntax pydicom knows
(stored as received, never transcoded); Query/Retrieve Patient and Study Root
FIND/MOVE/GET, Modality Worklist FIND and Verification. Calling AE titles outside the
peers table are refused at association time unless the server is configured open.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
import socket
import ssl
import uuid
from typing import Any

from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, _config, evt
from pynetdicom.events import Event
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import ThreadedAssociationServer

from fhir_server.router import FhirRouter
from imaging.dimse import quiet
from imaging.dimse.bridge import LoopBridge
from imaging.dimse.config import DimseConfig
from imaging.dimse.door import DimseDoor
from imaging.dimse.guard import AssociationGuard, pending_limit
from imaging.dimse.handlers import Archive, Handlers
from imaging.dimse.part10 import Spool, receive_as_part10
from imaging.dimse.sop_classes import QUERY_RETRIEVE, Verification
from imaging.dimse.tls import TlsPeers, wrap_without_handshake
from imaging.dimse.worklist import Worklist
from imaging.services import Imaging

log = logging.getLogger(__name__)
# pynetdicom logs query identifiers (names, IDs) at INFO: patient data stays out of logs
_config.LOG_REQUEST_IDENTIFIERS = False
_config.LOG_RESPONSE_IDENTIFIERS = False
logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def build_ae(config: DimseConfig) -> AE:
    """Our application entity with its contexts, limits and timeouts."""
    ae = AE(ae_title=config.ae_title)
    # pynetdicom counts connections still without an A-ASSOCIATE-RQ too: the slots
    # themselves are counted by `AssociationGuard`, which sees only real requests
    ae.maximum_associations = config.max_associations + pending_limit(config)
    ae.acse_timeout = config.acse_timeout
    ae.dimse_timeout = config.dimse_timeout
    ae.network_timeout = config.network_timeout
    ae.maximum_pdu_size = config.max_pdu
    if not config.open:
        # an empty list means "anyone" to pynetdicom: a closed table with no peers admits
        # only a random title nobody sends
        ae.require_calling_aet = list(config.peers) or [uuid.uuid4().hex[:16].upper()]
    ae.add_supported_context(Verification, ALL_TRANSFER_SYNTAXES)
    for context in AllStoragePresentationContexts:
        # SCP role for C-STORE, and SCU role offered for C-GET sub-operations
        assert context.abstract_syntax is not None
        ae.add_supported_context(
            context.abstract_syntax, ALL_TRANSFER_SYNTAXES, scu_role=True, scp_role=True
        )
    for sop_class in QUERY_RETRIEVE:
        ae.add_supported_context(sop_class, ALL_TRANSFER_SYNTAXES)
    # C-MOVE sub-associations: we are the storage SCU towards the destination
    ae.requested_contexts = []
    return ae


def _low_latency(event: Event) -> None:
    """Acknowledge every read at once: a peer using Nagle (dcmtk does) holds a data set
    PDU back until its command PDU is acknowledged, and Linux's delayed ACK then costs
    40 ms per instance."""
    association_socket = event.assoc.dul.socket
    if association_socket is None or association_socket.socket is None:
        return
    raw = association_socket.socket
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    quick_ack = getattr(socket, "TCP_QUICKACK", None)
    if quick_ack is None:
        return
    receive = association_socket.recv

    def recv(nr_bytes: int) -> bytearray:
        data = receive(nr_bytes)
        with contextlib.suppress(OSError):
            raw.setsockopt(socket.IPPROTO_TCP, quick_ack, 1)
        return data

    association_socket.recv = recv  # type: ignore[method-assign]


class QuickCopyContexts(list[PresentationContext]):
    """The acceptor's contexts, copied per association without `copy.deepcopy`.

    pynetdicom deep-copies the server's contexts for every association it accepts: with
    every storage SOP class times every transfer syntax that took ~50 ms per association
    (a modality often opens one per series). A context's only mutable part is its
    transfer syntax list, so copying each context and that list is the same copy.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[PresentationContext]:
        copies = []
        for context in self:
            duplicate = copy.copy(context)
            duplicate._transfer_syntax = list(context._transfer_syntax)
            copies.append(duplicate)
        return copies


class DimseService:
    """Start and stop the DICOM listener around the server's asyncio loop."""

    def __init__(
        self,
        config: DimseConfig,
        bridge: LoopBridge,
        archive: Archive,
        tls: ssl.SSLContext | None = None,
    ) -> None:
        self.config = config
        self.tls = tls
        self.handlers = Handlers(config, bridge, archive)
        policy = archive.ingestor.policy
        # a large instance is collected in a temporary file; over the cap, its prefix only
        self.spool = Spool(policy.limits.max_instance_bytes, policy.quarantine_prefix_bytes)
        self.ae = build_ae(config)
        self.guard = AssociationGuard(config, self.ae)
        self.server: ThreadedAssociationServer | None = None

    def start(self, host: str, port: int) -> int:
        """Listen on (host, port) in pynetdicom's threads; the port actually bound."""
        handlers: list[Any] = []
        if self.tls is not None:
            # first: the handshake before anything reads, the certificate before a slot
            certificates = self.tls.verify_mode == ssl.CERT_REQUIRED
            handlers += TlsPeers(self.config, certificates).handlers()
        handlers += [
            (evt.EVT_CONN_OPEN, _low_latency),
            (evt.EVT_CONN_OPEN, quiet.quiet),
            (evt.EVT_CONN_OPEN, receive_as_part10, [self.spool]),
            (evt.EVT_CONN_CLOSE, quiet.closed),
            (evt.EVT_C_ECHO, self.handlers.on_echo),
            (evt.EVT_C_STORE, self.handlers.on_store),
            (evt.EVT_C_FIND, self.handlers.on_find),
            (evt.EVT_C_MOVE, self.handlers.on_move),
            (evt.EVT_C_GET, self.handlers.on_get),
            (evt.EVT_RELEASED, self.handlers.on_released),
            *self.guard.handlers(),
        ]
        server = self.ae.start_server((host, port), block=False, evt_handlers=handlers)
        assert server is not None  # block=False returns the running server
        server.contexts = QuickCopyContexts(server.contexts)
        server.verify_request = self.guard.verify_request  # type: ignore[method-assign]
        if self.tls is not None:
            wrap_without_handshake(server, self.tls)
        self.server = server
        self.guard.start()
        bound = int(server.server_address[1])
        log.info(
            "DICOM listener up as %s on port %d%s",
            self.config.ae_title, bound, " (TLS)" if self.tls is not None else "",
        )  # fmt: skip
        return bound

    def stop(self) -> None:
        self.guard.stop()
        if self.server is not None:
            self.server.shutdown()
            self.server = None
        self.ae.shutdown()


async def start_dimse(
    config: DimseConfig,
    imaging: Imaging,
    router: FhirRouter,
    host: str,
    port: int,
    tls: ssl.SSLContext | None = None,
) -> DimseService:
    """Build the listener on the running loop's imaging parts and start it (DICOM TLS
    with `tls`, `imaging/dimse/tls.py`)."""
    bridge = LoopBridge(asyncio.get_running_loop(), config.handler_timeout)
    archive = Archive(
        imaging.ingestor, imaging.index, imaging.store, Worklist(router), imaging.linker,
        DimseDoor(share_hooks_with=router.pipeline), imaging.budget,
    )  # fmt: skip
    service = DimseService(config, bridge, archive, tls)
    await asyncio.to_thread(service.start, host, port)
    return service
