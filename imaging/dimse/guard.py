"""Association slots that rogue peers cannot keep: silent sockets, idle associations and
a share of the slots reserved for the peers table (issue 17, M1).

pynetdicom counts every accepted TCP connection as an association, from the moment it
is opened, and never ends one that keeps answering C-ECHO: 20 sockets that send
nothing, or 16 associations kept alive by an echo every 20 s, locked every modality
out. Here:

- a connection has `request_timeout` seconds to send its A-ASSOCIATE-RQ (pynetdicom's
  wait for it is the ACSE timeout: shortened for that wait only, restored after);
  at most `pending_limit` such connections wait at once, the oldest closed first;
- only associations that sent an A-ASSOCIATE-RQ take a slot: a calling AE title from
  the peers table may use all `max_associations`, any other all but `reserved`
  (A-ASSOCIATE-RJ transient, local-limit-exceeded, PS3.8 9.3.4);
- an association with no request other than C-ECHO for `idle_timeout` seconds, and
  none in progress, is aborted (A-ABORT) by a watchdog thread.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
import time
from typing import Any

from pynetdicom import evt
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.events import Event

from imaging.dimse.config import DimseConfig

log = logging.getLogger(__name__)
# A-ASSOCIATE-RJ: rejected-transient, DUL service-provider (presentation), local limit
LIMIT_REJECT = (0x02, 0x03, 0x02)
WATCH_EVERY = 1.0  # seconds between the watchdog's looks
OPENED, WORKED = "_medbridge_opened", "_medbridge_worked"
ADMITTED, CLOSED = "_medbridge_admitted", "_medbridge_closed"


def pending_limit(config: DimseConfig) -> int:
    """Connections that may wait for their A-ASSOCIATE-RQ at once."""
    return max(8, 2 * config.max_associations)


def _is_echo(event: Event) -> bool:
    return type(event.message).__name__.startswith("C_ECHO")


class AssociationGuard:
    """Event handlers and a watchdog around one AE's acceptor associations."""

    def __init__(self, config: DimseConfig, ae: ApplicationEntity) -> None:
        self.config = config
        self.ae = ae
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self.watchdog: threading.Thread | None = None

    def handlers(self) -> list[tuple[Any, Any]]:
        return [
            (evt.EVT_CONN_OPEN, self.on_open),
            (evt.EVT_REQUESTED, self.on_requested),
            (evt.EVT_DIMSE_RECV, self.on_message),
            (evt.EVT_DIMSE_SENT, self.on_message),
        ]

    # events (association threads) -------------------------------------------------------

    def on_open(self, event: Event) -> None:
        """A new connection: a short wait for its A-ASSOCIATE-RQ."""
        assoc = event.assoc
        if not assoc.is_acceptor:  # our own requests (C-MOVE sub-associations) keep theirs
            return
        setattr(assoc, OPENED, time.monotonic())
        assoc.acse_timeout = self.config.request_timeout

    def on_requested(self, event: Event) -> None:
        """A-ASSOCIATE-RQ received: take a slot, or reject with local-limit-exceeded."""
        assoc = event.assoc
        assoc.acse_timeout = self.config.acse_timeout
        if assoc.is_rejected:  # an earlier handler (the TLS certificate check) refused it
            return
        primitive = assoc.requestor.primitive
        calling = str(primitive.calling_ae_title).strip() if primitive is not None else ""
        known = calling in self.config.peers
        # with no peers table nobody could use reserved slots: then none are kept
        reserved = self.config.reserved_associations if self.config.peers else 0
        limit = self.config.max_associations - (0 if known else reserved)
        with self.lock:
            taken = sum(1 for other in self._acceptors() if getattr(other, ADMITTED, False))
            admitted = taken < limit
            if admitted:
                setattr(assoc, ADMITTED, True)
                setattr(assoc, WORKED, time.monotonic())
        if admitted:
            return
        log.info(
            "DIMSE association refused: %d of %d slots taken (%s)",
            taken, self.config.max_associations,
            "peers table" if known else f"{reserved} kept for peers",
        )  # fmt: skip
        assoc.acse.send_reject(*LIMIT_REJECT)
        evt.trigger(assoc, evt.EVT_REJECTED, {})
        assoc.kill()

    def on_message(self, event: Event) -> None:
        """Any DIMSE message but C-ECHO, either way, counts as work."""
        if not _is_echo(event):
            setattr(event.assoc, WORKED, time.monotonic())

    # the watchdog -----------------------------------------------------------------------

    def start(self) -> None:
        self.watchdog = threading.Thread(target=self._watch, name="dimse-guard", daemon=True)
        self.watchdog.start()

    def stop(self) -> None:
        self.stopping.set()
        if self.watchdog is not None:
            self.watchdog.join(timeout=5)

    def _acceptors(self) -> list[Association]:
        return [assoc for assoc in self.ae.active_associations if assoc.is_acceptor]

    def _watch(self) -> None:
        while not self.stopping.wait(WATCH_EVERY):
            try:
                self.look()
            except Exception:  # the watchdog must outlive any one association's state
                log.exception("DIMSE association watchdog")

    def look(self) -> None:
        """Abort idle associations; close the oldest silent connections over the cap."""
        now = time.monotonic()
        for assoc in self._acceptors():
            if assoc.is_established and self._idle(assoc, now):
                log.info("DIMSE association aborted: idle for %.0f s", self.config.idle_timeout)
                assoc.abort()
        self.make_room(0)

    def make_room(self, arriving: int = 1) -> None:
        """Close the oldest connections still without an A-ASSOCIATE-RQ, so that with
        `arriving` new ones at most `pending_limit` wait: a modality's request comes
        within milliseconds, so the silent ones go first."""
        waiting = [a for a in self._acceptors() if a.requestor.primitive is None]
        waiting = [a for a in waiting if not getattr(a, CLOSED, False)]
        waiting.sort(key=lambda assoc: float(getattr(assoc, OPENED, 0.0)))
        for assoc in waiting[: max(0, len(waiting) + arriving - pending_limit(self.config))]:
            setattr(assoc, CLOSED, True)
            close_connection(assoc)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        """socketserver's accept hook: room is made before every new connection."""
        with contextlib.suppress(Exception):
            self.make_room()
        return True

    def _idle(self, assoc: Association, now: float) -> bool:
        if assoc.dimse.message is not None:  # a message is arriving: not idle
            return False
        worked = float(getattr(assoc, WORKED, now))
        return now - worked > self.config.idle_timeout


def close_connection(assoc: Association) -> None:
    """Close a connection that never asked for an association."""
    transport = assoc.dul.socket
    raw = getattr(transport, "socket", None)
    if isinstance(raw, socket.socket):
        with contextlib.suppress(OSError):
            raw.shutdown(socket.SHUT_RDWR)
