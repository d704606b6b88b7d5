"""DICOM TLS on the DIMSE port (PS3.15 B.1, the BCP 195 profile: TLS 1.2+): the
handshake in each association's own thread, and client certificates bound to the calling
AE titles the peers table gives their subject CN (`certificate_cn:`).

pynetdicom's `ssl_context` wraps each accepted socket in the server's one accept
thread, handshake included: a client that connects and sends nothing would stop every
other connection from being accepted. Here the accept thread only wraps the socket;
the handshake runs in the connection's thread under the A-ASSOCIATE-RQ wait.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import ssl
from typing import Any

from pynetdicom import evt
from pynetdicom.events import Event
from pynetdicom.transport import AssociationServer

from access.tls import common_name
from imaging.dimse.config import DimseConfig
from imaging.dimse.guard import close_connection

log = logging.getLogger(__name__)
# A-ASSOCIATE-RJ: rejected-permanent, DUL service-user, calling-AE-title-not-recognized
CALLING_AE_REJECT = (0x01, 0x01, 0x03)
# the association attribute naming the certificate that authenticated its AE title
AGENT = "_medbridge_certificate"


def wrap_without_handshake(server: AssociationServer, context: ssl.SSLContext) -> None:
    """Make the server's accept hand out TLS sockets whose handshake is still to come."""

    def get_request() -> tuple[socket.socket, Any]:
        listening = server.socket
        assert listening is not None
        connection, address = listening.accept()
        wrapped = context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    server.get_request = get_request  # type: ignore[method-assign]


def raw_socket(event: Event) -> socket.socket | None:
    transport = event.assoc.dul.socket
    raw = getattr(transport, "socket", None)
    return raw if isinstance(raw, socket.socket) else None


class TlsPeers:
    """Event handlers: the handshake of each new connection, then the certificate's CN
    against the calling AE title."""

    def __init__(self, config: DimseConfig, client_certificates: bool) -> None:
        self.config = config
        self.client_certificates = client_certificates

    def handlers(self) -> list[tuple[Any, Any]]:
        """To be bound before every other handler of the same events."""
        return [(evt.EVT_CONN_OPEN, self.on_open), (evt.EVT_REQUESTED, self.on_requested)]

    def on_open(self, event: Event) -> None:
        """Complete the handshake within the A-ASSOCIATE-RQ wait, or close the connection."""
        raw = raw_socket(event)
        if not isinstance(raw, ssl.SSLSocket) or not event.assoc.is_acceptor:
            return
        previous = raw.gettimeout()
        try:
            raw.settimeout(self.config.request_timeout)
            raw.do_handshake()
        except (OSError, ValueError) as error:  # ssl.SSLError and timeouts are OSErrors
            log.info("DICOM TLS handshake failed: %s", type(error).__name__)
            close_connection(event.assoc)
            return
        finally:
            with contextlib.suppress(OSError):
                raw.settimeout(previous)

    def on_requested(self, event: Event) -> None:
        """Reject (A-ASSOCIATE-RJ, calling AE title not recognized) a calling AE title
        the peers table does not bind to the client certificate's subject CN."""
        if not self.client_certificates:
            return
        assoc = event.assoc
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip() if primitive is not None else ""
        raw = raw_socket(event)
        certificate = raw.getpeercert() if isinstance(raw, ssl.SSLSocket) else None
        name = common_name(certificate)
        if name is not None and name in self.config.certificate_names(calling):
            setattr(assoc, AGENT, f"cn:{name}")  # the actor's display on each access
            return
        log.warning(
            "DICOM association rejected: calling AE title %s is not bound to the client "
            "certificate's subject CN %s", calling, name,
        )  # fmt: skip
        assoc.acse.send_reject(*CALLING_AE_REJECT)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()
